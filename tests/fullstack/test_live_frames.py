"""Tokens reach the socket while the reply is still being generated, on both processes.

An order of events, not a time: the first `chat.token` frame of a chat is received while the
Ollama double is still streaming that same reply (its generation not yet finished).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fullstack.clients import Chat, WsClient, open_many

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

TOKENS = [f"live{i:02d} " for i in range(12)]  # 12 x 300 ms: a reply that takes 3.6 s
TOKEN_DELAY = 0.3


def generation_of(double, message: str):
    for generation in double.generations:
        messages = (generation.request.body or {}).get("messages") or []
        if messages and messages[-1].get("content") == message:
            return generation
    return None


async def live_chat(double, client: WsClient, message: str) -> None:
    """Send; at the first token frame, the double must still be streaming that reply."""
    chat = await Chat(client, message).send()
    await chat.first_token()
    generation = generation_of(double, message)
    assert generation is not None, f"the double never saw {message!r}"
    assert not generation.finished, (
        f"{client.name}: the first chat.token arrived after the double had finished the reply "
        f"({generation.tokens_sent}/{generation.tokens_planned} tokens sent); "
        f"frames: {chat.describe()}"
    )
    terminal = await chat.terminal()
    assert terminal["type"] == "chat.done", chat.describe()
    text, problems = chat.text()
    assert not problems, problems
    assert text == "".join(TOKENS)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("process", [0, 1], ids=["daphne1", "daphne2"])
def test_token_frame_arrives_while_reply_streams(stack, double, user, headers, process):
    double.script(tokens=TOKENS, token_delay=TOKEN_DELAY, times=None)

    async def scenario() -> None:
        async with WsClient(stack.daphnes[process].ws_url, headers(user), "live") as client:
            await live_chat(double, client, f"live chat on daphne{process + 1}")

    asyncio.run(scenario())


@pytest.mark.timeout(180)
def test_three_concurrent_chats_get_live_frames(stack, double, user, headers):
    double.script(tokens=TOKENS, token_delay=TOKEN_DELAY, times=None)

    async def scenario() -> None:
        clients = [
            WsClient(stack.daphnes[i % 2].ws_url, headers(user), f"live{i}@daphne{i % 2 + 1}")
            for i in range(3)
        ]
        await open_many(clients)
        try:
            results = await asyncio.gather(
                *(live_chat(double, c, f"concurrent live chat {i}") for i, c in enumerate(clients)),
                return_exceptions=True,
            )
            failures = [str(r) for r in results if isinstance(r, BaseException)]
            assert not failures, "\n".join(failures)
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(scenario())
