"""Redis stopped and started while ~20 chats stream over WebSocket and SSE.

Every client gets an end: a socket `chat.done` or `chat.error` with a code (never a silent
socket, never a close without one), a stream an `error` or `metrics` event and `data: [DONE]`.
Once Redis is back, new chats work on both processes and the Celery worker is still alive.
A reply reported complete holds the whole text (tokens lost in the outage are read back).
"""

from __future__ import annotations

import asyncio

import pytest

from chat.models import Message
from tests.fullstack.clients import (
    Chat,
    SseClient,
    WsClient,
    end_mismatch,
    open_many,
    reply_id,
    through_outage,
)
from tests.fullstack.harness import WAIT, wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

TOKENS = [f"r{i:02d} " for i in range(40)]  # 40 x 150 ms: 6 s, well past the outage
REPLY = "".join(TOKENS)
WS_PER_PROCESS = 7
SSE_PER_PROCESS = 3
OUTAGE_SECONDS = 2.0  # how long Redis is down: the scenario, not a wait for a result


def check_ends(chats: list[Chat], streams: list[SseClient]) -> list[str]:
    """Each client's one end agrees with the saved reply; a complete reply is all of it."""
    clients: list[Chat | SseClient] = [*chats, *streams]
    ids = [reply_id(x.frames) or 0 for x in clients]
    findings = []
    try:
        wait_until(
            lambda: not Message.objects.filter(pk__in=ids, status="streaming").exists(),
            "final status of every reply",
        )
    except AssertionError as exc:
        findings.append(str(exc))
    rows = Message.objects.in_bulk(ids)
    for chat in chats:
        row = rows.get(reply_id(chat.frames) or 0)
        if problem := end_mismatch(chat.frames, row):
            findings.append(f"{chat.client.name}: {problem}; {chat.describe()}")
        elif row is not None and row.status == "complete" and row.content != REPLY:
            findings.append(f"{chat.client.name}: complete with {len(row.content)} chars")
    for stream in streams:
        row = rows.get(reply_id(stream.frames) or 0)
        if stream.status != 200 or stream.error is not None or not stream.done_marker:
            findings.append(f"stream did not end with [DONE]: {stream.describe()}")
        elif problem := end_mismatch(stream.frames, row, token_type="content"):
            findings.append(f"{stream.name}: {problem}; {stream.describe()}")
        elif row is not None and row.status == "complete" and row.content != REPLY:
            findings.append(f"{stream.name}: complete with {len(row.content)} chars")
    return findings


@pytest.mark.timeout(240)
def test_redis_restart_while_chats_stream(stack, double, make_users, headers):
    users = make_users(2, prefix="redis")
    double.script(tokens=TOKENS, token_delay=0.15, times=2 * (WS_PER_PROCESS + SSE_PER_PROCESS))
    findings: list[str] = []
    chats: list[Chat] = []
    streams: list[SseClient] = []

    async def scenario() -> None:
        sockets = [
            WsClient(stack.daphnes[i % 2].ws_url, headers(users[i % 2]), f"ws{i}@d{i % 2 + 1}")
            for i in range(2 * WS_PER_PROCESS)
        ]
        await open_many(sockets)
        chats.extend(Chat(s, f"outage chat {i}") for i, s in enumerate(sockets))
        streams.extend(
            SseClient(
                stack.daphnes[i % 2].url,
                headers(users[i % 2]),
                f"outage stream {i}",
                name=f"sse{i}@d{i % 2 + 1}",
            )
            for i in range(2 * SSE_PER_PROCESS)
        )
        # Everyone is streaming before Redis goes away.
        await through_outage(
            chats,
            streams,
            sockets,
            double,
            begin=stack.redis.stop,
            end=stack.redis.start,
            seconds=OUTAGE_SECONDS,
        )

        # Redis is back: new chats on both processes, on both transports.
        for index, daphne in enumerate(stack.daphnes):
            try:
                async with WsClient(daphne.ws_url, headers(users[0]), f"after@d{index + 1}") as s:
                    chat = await Chat(s, f"after the outage {index}").send()
                    terminal = await chat.terminal(timeout=WAIT)
                    if terminal["type"] != "chat.done":
                        findings.append(f"new WS chat after the restart: {chat.describe()}")
                stream = SseClient(daphne.url, headers(users[1]), f"after sse {index}").start()
                await stream.finished(timeout=WAIT)
                event = stream.terminal_event()
                if not (event and event["type"] == "metrics" and stream.done_marker):
                    findings.append(f"new SSE chat after the restart: {stream.describe()}")
            except AssertionError as exc:
                findings.append(f"new chat on daphne{index + 1} after the restart: {exc}")

    asyncio.run(scenario())

    findings.extend(check_ends(chats, streams))
    if not stack.worker.alive:
        findings.append(
            f"the Celery worker died (exit {stack.worker.process.returncode}):\n"
            f"{stack.worker.log(2000)}"
        )
    assert not findings, "\n".join(findings)
