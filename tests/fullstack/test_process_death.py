"""A web process that dies or is stopped in the middle of a reply.

(a) SIGKILL: a socket on the other process following the conversation receives `chat.error`
    `interrupted`, the reply is saved `interrupted` with its text, and the user (one generation
    at a time) can chat again;
(b) SIGTERM, the reply shorter than the grace: it completes and is delivered; a chat sent to
    that process after the signal is refused with `shutting_down` (or its socket closes), and
    so is an SSE chat (HTTP 503, or the process no longer listens);
(c) SIGTERM, the reply longer than the grace: it ends `interrupted` and its gate slot is free
    at once (one slot in all: the next chat, on the other process, is not queued).

Each test has a stack of its own (without Celery: these are about the web processes).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from chat.models import Message
from tests.fullstack.clients import Chat, WsClient, of_type
from tests.fullstack.harness import WAIT, wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

GRACE = 5.0
LONG = [f"k{i:03d} " for i in range(300)]  # 300 x 50 ms: 15 s, far past any grace or beat
SHORT = [f"s{i:02d} " for i in range(20)]  # 20 x 100 ms: 2 s, well within the grace


def final_reply(message_id: int) -> Message:
    return wait_until(
        lambda: (
            Message.objects.filter(pk=message_id).exclude(status=Message.Status.STREAMING).first()
        ),
        f"a final status of reply {message_id}",
    )


@pytest.mark.timeout(180)
def test_sigkill_mid_reply_is_interrupted_and_announced(start_stack, double, user, headers):
    stack = start_stack(celery=False, CHAT_MAX_GENERATIONS_PER_USER="1")
    first, second = stack.daphnes
    double.script(tokens=LONG, token_delay=0.05)
    seen: dict = {}

    async def until_interrupted() -> None:
        async with (
            WsClient(first.ws_url, headers(user), "starter@d1") as a,
            WsClient(second.ws_url, headers(user), "follower@d2") as b,
        ):
            chat = await Chat(a, "a long story, please").send()
            started = await chat.started()
            await chat.first_token()
            seen.update(started)
            start = await b.send(
                type="chat.resume",
                conversation=started["conversation"],
                message=started["message"],
                offset=0,
            )
            await b.wait_for(of_type("chat.token"), "the resumed stream on d2", start=start)
            first.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            error = await b.wait_for(
                of_type("chat.error", message=started["message"]),
                "chat.error for the killed process's reply",
                start=start,
            )
            seen["error"] = error
            seen["announced after"] = time.monotonic() - killed_at

    asyncio.run(until_interrupted())
    assert seen["error"]["code"] == "interrupted", seen["error"]
    reply = final_reply(seen["message"])
    assert reply.status == Message.Status.INTERRUPTED, (reply.status, reply.error_code)
    assert reply.error_code == "interrupted"
    assert reply.content and "".join(LONG).startswith(reply.content), reply.content[:80]

    async def chat_again() -> None:
        async with WsClient(second.ws_url, headers(user), "again@d2") as s:
            chat = await Chat(s, "and now something short").send()
            terminal = await chat.terminal()
            assert terminal["type"] == "chat.done", chat.describe()

    asyncio.run(chat_again())


@pytest.mark.timeout(180)
def test_sigterm_finishes_a_short_reply_and_refuses_new_ones(start_stack, double, user, headers):
    stack = start_stack(celery=False)
    first = stack.daphnes[0]
    double.script(tokens=SHORT, token_delay=0.1)
    seen: dict = {}

    async def scenario() -> None:
        async with (
            WsClient(first.ws_url, headers(user), "running@d1") as a,
            WsClient(first.ws_url, headers(user), "latecomer@d1") as c,
        ):
            chat = await Chat(a, "a short answer, please").send()
            seen["started"] = await chat.started()
            await chat.first_token()
            first.signal(signal.SIGTERM)
            # Once d1 has answered a frame sent after the signal, its loop has run the
            # signal's handler: what comes next is "after SIGTERM" for the process too.
            try:
                await c.ping()
            except AssertionError as exc:
                seen["latecomer"] = f"closed before the new chat ({exc})"
            if "latecomer" not in seen:
                late = await Chat(c, "a new chat after SIGTERM").send()
                try:
                    answer = await late.wait_for(
                        of_type("chat.error", "chat.accepted", "chat.started", "chat.done"),
                        "an answer to a chat.send after SIGTERM",
                    )
                    seen["latecomer"] = answer
                except AssertionError as exc:
                    if not c.ended:
                        raise
                    seen["latecomer"] = f"closed ({exc})"
            # The HTTP transports too: 503 `shutting_down`, or no longer listening.
            try:
                async with httpx.AsyncClient(base_url=first.url, timeout=WAIT) as client:
                    response = await client.post(
                        "/api/chat/stream/",
                        json={"message": "a stream after SIGTERM"},
                        headers=headers(user),
                    )
                seen["http"] = (response.status_code, response.text[:300])
            except httpx.TransportError as exc:
                seen["http"] = f"not served ({type(exc).__name__})"
            seen["terminal"] = await chat.terminal()
            seen["frames"] = chat.describe()

    asyncio.run(scenario())
    late = seen["latecomer"]
    assert isinstance(late, str) or (
        late["type"] == "chat.error" and late["code"] == "shutting_down"
    ), f"a chat sent after SIGTERM was answered with {late}"
    http = seen["http"]
    assert isinstance(http, str) or (
        http[0] == 503 and json.loads(http[1]).get("code") == "shutting_down"
    ), f"POST /api/chat/stream/ after SIGTERM was answered {http}"
    assert seen["terminal"]["type"] == "chat.done", seen["frames"]
    reply = final_reply(seen["started"]["message"])
    assert reply.status == Message.Status.COMPLETE, (reply.status, reply.error_code)
    assert reply.content == "".join(SHORT)
    first.wait_exit(timeout=GRACE + 15)


@pytest.mark.timeout(180)
def test_sigterm_interrupts_a_long_reply_and_frees_its_slot(start_stack, double, user, headers):
    stack = start_stack(celery=False, OLLAMA_MAX_CONCURRENCY="1")
    first, second = stack.daphnes
    double.script(tokens=LONG, token_delay=0.05)
    seen: dict = {}

    async def until_stopped() -> None:
        async with WsClient(first.ws_url, headers(user), "running@d1") as a:
            chat = await Chat(a, "a long story, please").send()
            seen["started"] = await chat.started()
            await chat.first_token()
            first.signal(signal.SIGTERM)
            seen["signalled"] = time.monotonic()
            await asyncio.to_thread(first.wait_exit, GRACE + 20)
            seen["exited after"] = time.monotonic() - seen["signalled"]

    asyncio.run(until_stopped())
    reply = final_reply(seen["started"]["message"])
    assert reply.status == Message.Status.INTERRUPTED, (reply.status, reply.error_code)
    assert reply.error_code == "interrupted"
    assert reply.content and "".join(LONG).startswith(reply.content), reply.content[:80]

    async def next_chat() -> None:
        async with WsClient(second.ws_url, headers(user), "next@d2") as s:
            chat = await Chat(s, "the next one").send()
            sent = time.monotonic()
            started = await chat.wait_for(of_type("chat.started", "chat.error"), "chat.started", 45)
            waited = time.monotonic() - sent
            queued = [f for f in chat.frames if f["type"] == "chat.queued"]
            assert started["type"] == "chat.started", chat.describe()
            assert not queued, (
                f"the stopped process's slot was not released: queued {queued}, "
                f"started after {waited:.1f} s"
            )
            terminal = await chat.terminal()
            assert terminal["type"] == "chat.done", chat.describe()

    asyncio.run(next_chat())
