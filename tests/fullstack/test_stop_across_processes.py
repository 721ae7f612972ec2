"""`chat.stop` sent to one process cancels a generation running on the other, six times.

The socket that started the chat receives `chat.cancelled`, the reply is saved `cancelled`,
and the upstream request is closed (Ollama stops generating: the double sees the client hang
up before its last token).
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from chat.models import Message
from tests.fullstack.clients import Chat, WsClient, of_type
from tests.fullstack.harness import WAIT, wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

ROUNDS = 6
SLOW_TOKENS = [f"t{i:03d} " for i in range(200)]  # 200 x 50 ms: 10 s if nothing stops it


@pytest.mark.timeout(240)
def test_stop_from_the_other_process(stack, double, user, headers):
    double.script(tokens=SLOW_TOKENS, token_delay=0.05, times=None)
    outcomes: list[int] = []

    async def one_round(index: int) -> int:
        # Rounds alternate: A on daphne1 and B on daphne2, then the other way round.
        a_process, b_process = (0, 1) if index % 2 == 0 else (1, 0)
        async with (
            WsClient(stack.daphnes[a_process].ws_url, headers(user), f"A{index}") as a,
            WsClient(stack.daphnes[b_process].ws_url, headers(user), f"B{index}") as b,
        ):
            chat = await Chat(a, f"round {index}: count slowly").send()
            started = await chat.started()
            await chat.first_token()
            conversation = started["conversation"]
            start = await b.send(type="chat.stop", conversation=conversation)
            cancelled = await chat.wait_for(
                of_type("chat.cancelled", conversation=conversation), "chat.cancelled"
            )
            errors = [f for f in b.frames[start:] if f["type"] == "chat.error"]
            assert not errors, f"B was answered with {errors}"
            assert cancelled["message"] == started["message"]
            return started["message"]

    async def scenario() -> None:
        for index in range(ROUNDS):
            outcomes.append(await one_round(index))

    asyncio.run(scenario())

    def final(pk: int) -> Message | None:
        return Message.objects.filter(pk=pk).exclude(status=Message.Status.STREAMING).first()

    for message in outcomes:
        reply = wait_until(functools.partial(final, message), f"final status of reply {message}")
        assert reply.status == Message.Status.CANCELLED, (reply.status, reply.error_code)
        assert 0 < len(reply.content) < len("".join(SLOW_TOKENS))
    generations = double.generations
    assert len(generations) == ROUNDS
    assert double.wait_until(lambda: all(g.finished for g in generations), WAIT)
    for generation in generations:
        assert generation.client_disconnected, generation
        assert not generation.completed, generation


@pytest.mark.timeout(240)
def test_stop_from_the_other_process_after_a_redis_restart(stack, double, user, headers):
    # Redis forgets every group when it restarts: the running generation's process must join
    # its cancel group again for a stop from the other process to reach it.
    double.script(tokens=SLOW_TOKENS * 3, token_delay=0.05)  # 30 s if nothing stops it

    async def scenario() -> tuple[dict, dict]:
        async with WsClient(stack.daphnes[0].ws_url, headers(user), "A") as a:
            chat = await Chat(a, "count slowly across a Redis restart").send()
            started = await chat.started()
            await chat.first_token()
            await asyncio.to_thread(stack.redis.restart)
            async with WsClient(stack.daphnes[1].ws_url, headers(user), "B") as b:
                # A stop sent before the group is joined again reaches nobody: send it until
                # it is honoured (each one is harmless), within a bound only a failure reaches.
                for _ in range(int(WAIT / 0.5)):
                    await b.send(type="chat.stop", conversation=started["conversation"])
                    ended = await asyncio.to_thread(
                        double.wait_until, lambda: double.last_generation.finished, 0.5
                    )
                    if ended:
                        break
            end = await chat.terminal(timeout=WAIT)
            return started, end

    started, end = asyncio.run(scenario())
    generation = double.last_generation
    assert generation.client_disconnected and not generation.completed, generation
    assert end["type"] == "chat.cancelled", end
    reply = wait_until(
        lambda: (
            Message.objects.filter(pk=started["message"])
            .exclude(status=Message.Status.STREAMING)
            .first()
        ),
        "the reply's final status",
    )
    assert reply.status == Message.Status.CANCELLED
