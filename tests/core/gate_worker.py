"""A separate OS process contending for a RedisGate slot (driven by tests/chat/test_gate.py).

    python gate_worker.py '<json config>'

Config: url, prefix (gate key prefix), host, max_concurrency, lease, hold (seconds, or -1 to
hold until killed), id, skew (seconds added to this process's time.time(): the gate must not
care), user and weight (the turn's owner; optional).

Protocol, to keep the arrival order under the test's control: the worker waits for its turn
(``BLPOP <prefix>:turn:<id>``), joins the queue and prints ``{"event": "entered", ...}``; once it
holds the slot it prints ``{"event": "held", ...}``, waits until ``<prefix>:go`` exists, keeps
the slot ``hold`` seconds and prints ``{"event": "done", "start": ..., "end": ...}``. The
``held`` event carries ``rank``, its place among all the workers that got the slot
(``INCR <prefix>:order``): the order of service as Redis saw it, not by anyone's clock. Times are
CLOCK_REALTIME, which ``skew`` does not touch. ``<prefix>:current`` counts the holders as the
workers see them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aioredis

from core.gate import RedisGate


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def wall() -> float:
    return time.clock_gettime(time.CLOCK_REALTIME)


async def main(config: dict) -> None:
    if config.get("skew"):
        real_time = time.time
        skew = float(config["skew"])
        time.time = lambda: real_time() + skew
    prefix = config["prefix"]
    client = aioredis.from_url(config["url"])
    gate = RedisGate(
        config["url"],
        max_concurrency=config["max_concurrency"],
        max_queue=config.get("max_queue", 32),
        lease_seconds=config["lease"],
        key_prefix=prefix,
    )
    emit(event="ready", id=config["id"])
    await client.blpop([f"{prefix}:turn:{config['id']}"], timeout=30)
    reservation = gate.reserve(
        config["host"], user=config.get("user", ""), weight=config.get("weight", 1)
    )
    async with reservation as r:
        emit(event="entered", id=config["id"], position=r.position or 0, at=wall())
        positions = [p async for p in r.positions()]
        start = wall()
        concurrent = await client.incr(f"{prefix}:current")
        rank = await client.incr(f"{prefix}:order")
        emit(
            event="held",
            id=config["id"],
            start=start,
            positions=positions,
            in_flight=r.in_flight_at_start,
            concurrent=concurrent,
            rank=rank,
        )
        while not await client.exists(f"{prefix}:go"):
            await asyncio.sleep(0.01)
        if config["hold"] < 0:
            await asyncio.sleep(3600)
        await asyncio.sleep(config["hold"])
        await client.decr(f"{prefix}:current")
        end = wall()
    emit(event="done", id=config["id"], start=start, end=end)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
