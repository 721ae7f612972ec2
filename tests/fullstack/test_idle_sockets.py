"""Idle sockets stay open on a stack with Redis: 40 s without a frame, then a ping works.

(Before the fix, every socket was closed with 1011 about 6 s after it opened.)
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fullstack.clients import WsClient, open_many

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

IDLE_SECONDS = 40.0  # the one place in the suite where time is the point (failures came by 26 s)


@pytest.mark.timeout(240)
def test_idle_sockets_stay_open_then_answer_ping(stack, user, headers):
    async def scenario() -> None:
        clients = [
            WsClient(stack.daphnes[i % 2].ws_url, headers(user), name=f"idle{i}@daphne{i % 2 + 1}")
            for i in range(5)
        ]
        await open_many(clients)
        try:
            # Each answers at once: the sockets work before the idle period.
            for client in clients:
                await client.ping()
            started = time.monotonic()
            readers: dict[asyncio.Task, WsClient] = {}
            for c in clients:
                assert c.reader is not None  # opened
                readers[c.reader] = c
            done, _ = await asyncio.wait(readers, timeout=IDLE_SECONDS)
            closed = [readers[task] for task in done]
            assert not closed, "sockets closed while idle: " + "; ".join(
                f"{c.name} closed with {c.close_code} {c.close_reason!r} after "
                f"{(c.closed_at or time.monotonic()) - started:.1f} s idle"
                for c in closed
            )
            for client in clients:
                await client.ping()
            unexpected = [
                (c.name, f.get("type")) for c in clients for f in c.frames if f["type"] != "pong"
            ]
            assert not unexpected, f"frames other than pong on idle sockets: {unexpected}"
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(scenario())
