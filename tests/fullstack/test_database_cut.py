"""PostgreSQL cut off (through the proxy) for 3 s while SSE and WS chats stream.

Every client gets one end, and nothing after it: a complete reply or an error with a code (an
SSE stream always ends with `data: [DONE]`), which is what the saved reply says too; once the
database is back no reply is left `streaming` and new chats work on both processes.
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
    reply_id,
    through_outage,
)
from tests.fullstack.harness import WAIT, wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

TOKENS = [f"d{i:02d} " for i in range(40)]  # 40 x 150 ms: 6 s, longer than the cut
CUT_SECONDS = 3.0  # how long the database is unreachable: the scenario, not a wait


@pytest.mark.timeout(240)
def test_database_cut_while_chats_stream(stack, double, user, headers):
    double.script(tokens=TOKENS, token_delay=0.15, times=4)
    findings: list[str] = []
    cut: dict = {}
    chats: list[Chat] = []
    streams: list[SseClient] = []

    async def scenario() -> None:
        sockets = [
            WsClient(d.ws_url, headers(user), f"ws@d{i + 1}") for i, d in enumerate(stack.daphnes)
        ]
        for socket in sockets:
            await socket.open()
        chats.extend(Chat(s, f"while the database goes {i}") for i, s in enumerate(sockets))
        streams.extend(
            SseClient(d.url, headers(user), f"sse while the database goes {i}", f"sse@d{i + 1}")
            for i, d in enumerate(stack.daphnes)
        )
        cut["connections"] = 0

        def begin() -> None:
            cut["connections"] = stack.proxy.cut()

        await through_outage(
            chats,
            streams,
            sockets,
            double,
            begin=begin,
            end=stack.proxy.restore,
            seconds=CUT_SECONDS,
        )

    asyncio.run(scenario())

    try:
        wait_until(
            lambda: not Message.objects.filter(status=Message.Status.STREAMING).exists(),
            "end of every 'streaming' reply after the database came back",
        )
    except AssertionError as exc:
        rows = list(
            Message.objects.filter(status=Message.Status.STREAMING).values("id", "updated_at")
        )
        findings.append(f"{exc}: {rows}")

    for chat in chats:
        row = Message.objects.filter(pk=reply_id(chat.frames) or 0).first()
        if problem := end_mismatch(chat.frames, row):
            findings.append(f"{chat.client.name}: {problem}; {chat.describe()}")
    for stream in streams:
        row = Message.objects.filter(pk=reply_id(stream.frames) or 0).first()
        if stream.status != 200 or stream.error is not None or not stream.done_marker:
            findings.append(f"stream did not end with [DONE]: {stream.describe()}")
        elif problem := end_mismatch(stream.frames, row, token_type="content"):
            findings.append(f"{stream.name}: {problem}; {stream.describe()}")

    async def after() -> None:
        for index, daphne in enumerate(stack.daphnes):
            try:
                async with WsClient(daphne.ws_url, headers(user), f"after@d{index + 1}") as s:
                    chat = await Chat(s, f"after the cut {index}").send()
                    if (await chat.terminal(timeout=WAIT))["type"] != "chat.done":
                        findings.append(f"new WS chat after the cut: {chat.describe()}")
                stream = SseClient(daphne.url, headers(user), f"sse after the cut {index}")
                await stream.start().finished(timeout=WAIT)
                terminal = stream.terminal_event()
                if not (terminal and terminal["type"] == "metrics" and stream.done_marker):
                    findings.append(f"new SSE chat after the cut: {stream.describe()}")
            except AssertionError as exc:
                findings.append(f"new chat on daphne{index + 1} after the cut: {exc}")

    asyncio.run(after())
    assert not findings, f"(the cut closed {cut.get('connections')} connections)\n" + "\n".join(
        findings
    )
