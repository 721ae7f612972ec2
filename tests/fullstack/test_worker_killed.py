"""The Celery worker SIGKILLed (with its pool) and replaced: telemetry resumes.

Beat sends a sampling task every TELEMETRY_INTERVAL (1 s here); while the worker is dead no
sample is recorded, and the new worker records them again. A chat streaming meanwhile is not
affected and nothing is left `streaming`.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from django.db.models import Max

from monitoring.models import HostSample
from tests.fullstack.clients import Chat, WsClient
from tests.fullstack.harness import wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

STACK_ENV = {"TELEMETRY_INTERVAL": "1"}
STARTUP = 90.0  # a worker starting on a loaded two-core machine; only a failure waits this long


def newest_sample() -> int:
    return HostSample.objects.aggregate(newest=Max("pk"))["newest"] or 0


@pytest.mark.timeout(300)
def test_worker_killed_and_replaced_telemetry_resumes(stack, double, user, headers):
    double.script(tokens=[f"w{i:02d} " for i in range(30)], token_delay=0.1)
    worker = stack.worker
    before = newest_sample()
    wait_until(
        lambda: HostSample.objects.filter(pk__gt=before).exists(),
        f"telemetry sample from the first worker\n{worker.log()}\n{stack.beat.log()}",
        STARTUP,
        interval=0.2,
    )

    async def chat_while(action) -> dict:
        async with WsClient(stack.daphnes[0].ws_url, headers(user), "during@d1") as socket:
            chat = await Chat(socket, "talk while the worker dies").send()
            await chat.first_token()
            await asyncio.to_thread(action)
            return await chat.terminal()

    terminal = asyncio.run(chat_while(lambda: worker.kill(signal.SIGKILL)))
    assert terminal["type"] == "chat.done", terminal
    assert not worker.alive
    killed_at = newest_sample()

    replacement = stack.replace_worker()
    wait_until(
        lambda: HostSample.objects.filter(pk__gt=killed_at).exists(),
        f"telemetry sample from the new worker\n{replacement.log()}\n{stack.beat.log()}",
        STARTUP,
        interval=0.2,
    )
    assert replacement.alive, replacement.log()
