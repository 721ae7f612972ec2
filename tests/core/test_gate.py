"""The generation gate, in-process and over a real Redis (several real OS processes too)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from core.gate import (
    DEFAULT_RETRY_AFTER,
    Gate,
    GateFull,
    LocalGate,
    RedisGate,
    Reservation,
    build_gate,
)

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
WORKER = Path(__file__).with_name("gate_worker.py")
HOST = "http://ollama-a:11434"

_redis_down: str | None = None


def require_redis() -> None:
    global _redis_down
    if _redis_down is None:
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
            _redis_down = ""
        except redis.RedisError as error:
            _redis_down = f"Redis unreachable at {REDIS_URL} (REDIS_TEST_URL): {error}"
    if _redis_down:
        pytest.skip(_redis_down)


GateFactory = Callable[..., Gate]


async def stats_of(gate: Gate, host: str = HOST) -> tuple[int, int]:
    stats = await gate.stats(host)
    return stats.in_flight, stats.queued


async def eventually(predicate: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Waiter:
    """A task that reserves a slot, records its positions, holds until told to finish."""

    def __init__(self, gate: Gate, name: str, log: list[str], host: str = HOST) -> None:
        self.name = name
        self.entered = asyncio.Event()
        self.holding = asyncio.Event()
        self.finish = asyncio.Event()
        self.positions: list[int] = []
        self._reservation: Reservation | None = None
        self.task = asyncio.create_task(self._run(gate, host, log))

    @property
    def reservation(self) -> Reservation:
        assert self._reservation is not None, f"{self.name} has not reserved yet"
        return self._reservation

    async def _run(self, gate: Gate, host: str, log: list[str]) -> None:
        async with gate.reserve(host) as r:
            self._reservation = r
            self.entered.set()
            async for position in r.positions():
                self.positions.append(position)
            log.append(self.name)
            self.holding.set()
            await self.finish.wait()

    async def joined(self) -> Waiter:
        await asyncio.wait_for(self.entered.wait(), 3)
        return self


# -- both implementations ---------------------------------------------------------------------


async def test_slot_free_at_once(make_gate: GateFactory) -> None:
    gate = make_gate()
    async with gate.reserve(HOST) as r:
        assert r.held
        assert [p async for p in r.positions()] == []
        await r.acquired()
        assert r.in_flight_at_start == 1
        assert r.queue_wait_seconds >= 0
        assert await stats_of(gate) == (1, 0)
        # another host has its own slot
        async with gate.reserve("http://ollama-b:11434") as other:
            assert other.held and other.in_flight_at_start == 1
    assert await stats_of(gate) == (0, 0)
    stats = await gate.stats(HOST)
    assert (stats.max_concurrency, stats.max_queue, stats.host) == (1, 32, HOST)


async def test_fifo_order_and_positions(make_gate: GateFactory) -> None:
    gate = make_gate()
    log: list[str] = []
    first = Waiter(gate, "first", log)
    await asyncio.wait_for(first.holding.wait(), 3)
    waiters = [await Waiter(gate, name, log).joined() for name in ("b", "c", "d", "e")]
    assert [w.reservation.position for w in waiters] == [1, 2, 3, 4]
    assert await stats_of(gate) == (1, 4)

    first.finish.set()
    for waiter in waiters:
        await asyncio.wait_for(waiter.holding.wait(), 3)
        await asyncio.sleep(0.2)  # long enough for every poll to see each position
        waiter.finish.set()
    await asyncio.gather(first.task, *(w.task for w in waiters))

    assert log == ["first", "b", "c", "d", "e"]
    for arrival, waiter in enumerate(waiters, start=1):
        assert waiter.positions == list(range(arrival, 0, -1)), waiter.name
        assert waiter.reservation.queue_wait_seconds >= 0.2 * (arrival - 1)
        assert waiter.reservation.in_flight_at_start == 1
    assert await stats_of(gate) == (0, 0)


@pytest.mark.parametrize("max_concurrency", [1, 3])
async def test_never_more_than_max_concurrency(
    make_gate: GateFactory, max_concurrency: int
) -> None:
    gate = make_gate(max_concurrency=max_concurrency)
    current = 0
    peak = 0
    starts: list[int] = []

    arrived = [asyncio.Event() for _ in range(10)]

    async def generation(i: int) -> None:
        nonlocal current, peak
        if i:
            await arrived[i - 1].wait()  # arrivals one after another, in order
        async with gate.reserve(HOST) as r:
            arrived[i].set()
            await r.acquired()
            assert 1 <= r.in_flight_at_start <= max_concurrency
            current += 1
            peak = max(peak, current)
            starts.append(i)
            await asyncio.sleep(0.05 + 0.02 * (i % 3))
            current -= 1

    await asyncio.wait_for(asyncio.gather(*(generation(i) for i in range(10))), 15)
    assert peak == max_concurrency
    assert sorted(starts) == list(range(10))
    if max_concurrency == 1:
        assert starts == list(range(10))  # arrival order
    assert await stats_of(gate) == (0, 0)


async def test_in_flight_at_start_counts_concurrent_generations(make_gate: GateFactory) -> None:
    gate = make_gate(max_concurrency=2)
    log: list[str] = []
    a = Waiter(gate, "a", log)
    await asyncio.wait_for(a.holding.wait(), 3)
    b = Waiter(gate, "b", log)
    await asyncio.wait_for(b.holding.wait(), 3)
    assert (a.reservation.in_flight_at_start, b.reservation.in_flight_at_start) == (1, 2)
    c = await Waiter(gate, "c", log).joined()
    assert c.reservation.position == 1 and not c.reservation.held
    assert await stats_of(gate) == (2, 1)

    a.finish.set()  # c takes a's slot while b still generates...
    await asyncio.wait_for(c.holding.wait(), 3)
    b.finish.set()  # ...even if b is done before c hears of its slot
    await b.task
    assert c.reservation.in_flight_at_start == 2
    c.finish.set()
    await asyncio.gather(a.task, c.task)
    assert log == ["a", "b", "c"]
    assert await stats_of(gate) == (0, 0)


async def test_queue_full_is_refused_at_once(make_gate: GateFactory) -> None:
    gate = make_gate(max_queue=2)
    log: list[str] = []
    holder = Waiter(gate, "holder", log)
    await asyncio.wait_for(holder.holding.wait(), 3)
    waiters = [await Waiter(gate, name, log).joined() for name in ("w1", "w2")]

    # Refused as it asks (a queued request would wait here until the test's timeout).
    with pytest.raises(GateFull) as refused:
        async with gate.reserve(HOST):
            pytest.fail("entered a full queue")
    assert refused.value.host == HOST
    assert refused.value.retry_after_seconds == DEFAULT_RETRY_AFTER  # no hold time known yet
    assert await stats_of(gate) == (1, 2)  # the refused one left no trace

    await asyncio.sleep(0.3)
    holder.finish.set()  # a hold of ~0.3 s is now known
    await asyncio.wait_for(waiters[0].holding.wait(), 3)
    third = await Waiter(gate, "w3", log).joined()
    with pytest.raises(GateFull) as refused:
        async with gate.reserve(HOST):
            pytest.fail("entered a full queue")
    assert refused.value.retry_after_seconds == 1

    for waiter in [*waiters, third]:
        waiter.finish.set()
    await asyncio.gather(holder.task, *(w.task for w in [*waiters, third]))
    assert log == ["holder", "w1", "w2", "w3"]
    assert await stats_of(gate) == (0, 0)


async def test_zero_queue_refuses_when_busy(make_gate: GateFactory) -> None:
    gate = make_gate(max_queue=0)
    async with gate.reserve(HOST) as r:
        assert r.held
        with pytest.raises(GateFull):
            async with gate.reserve(HOST):
                pass
    async with gate.reserve(HOST) as r:
        assert r.held


async def test_cancelled_waiter_leaves_the_queue(make_gate: GateFactory) -> None:
    gate = make_gate()
    log: list[str] = []
    holder = Waiter(gate, "holder", log)
    await asyncio.wait_for(holder.holding.wait(), 3)
    b = await Waiter(gate, "b", log).joined()
    c = await Waiter(gate, "c", log).joined()
    assert await stats_of(gate) == (1, 2)

    b.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b.task
    assert await stats_of(gate) == (1, 1)
    await eventually(lambda: c.reservation.position == 1)

    holder.finish.set()
    await asyncio.wait_for(c.holding.wait(), 3)
    c.finish.set()
    await asyncio.gather(holder.task, c.task)
    assert log == ["holder", "c"]
    assert c.positions == [2, 1]
    assert await stats_of(gate) == (0, 0)


async def test_timeout_while_waiting_leaves_the_queue(make_gate: GateFactory) -> None:
    gate = make_gate()
    async with gate.reserve(HOST):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), gate.reserve(HOST) as r:
                await r.acquired()
        assert await stats_of(gate) == (1, 0)
    assert await stats_of(gate) == (0, 0)


async def test_cancelled_holder_releases_the_slot(make_gate: GateFactory) -> None:
    gate = make_gate()
    log: list[str] = []
    holder = Waiter(gate, "holder", log)
    await asyncio.wait_for(holder.holding.wait(), 3)
    nxt = await Waiter(gate, "next", log).joined()

    holder.task.cancel()  # e.g. the client stopped the generation
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    await asyncio.wait_for(nxt.holding.wait(), 3)
    assert await stats_of(gate) == (1, 0)
    nxt.finish.set()
    await nxt.task
    assert await stats_of(gate) == (0, 0)


async def test_exception_in_the_body_releases(make_gate: GateFactory) -> None:
    gate = make_gate()
    with pytest.raises(RuntimeError, match="upstream broke"):
        async with gate.reserve(HOST) as r:
            assert r.held
            raise RuntimeError("upstream broke")
    assert await stats_of(gate) == (0, 0)


async def test_exit_without_waiting_leaves_cleanly(make_gate: GateFactory) -> None:
    gate = make_gate()
    async with gate.reserve(HOST) as holder:
        async with gate.reserve(HOST) as waiter:
            assert not waiter.held and waiter.position == 1
            assert await stats_of(gate) == (1, 1)
        assert await stats_of(gate) == (1, 0)
        assert holder.held
    assert await stats_of(gate) == (0, 0)
    with pytest.raises(RuntimeError):
        await holder.acquired()  # used outside its `async with`


async def test_a_reservation_is_single_use(make_gate: GateFactory) -> None:
    gate = make_gate()
    r = gate.reserve(HOST)
    async with r:
        pass
    with pytest.raises(RuntimeError):
        async with r:
            pass
    assert await stats_of(gate) == (0, 0)


async def test_build_gate_picks_the_implementation() -> None:
    assert isinstance(build_gate(None, 2, 5), LocalGate)
    gate = build_gate("redis://127.0.0.1:6379/15", 2, 5)
    assert isinstance(gate, RedisGate)
    assert (gate.max_concurrency, gate.max_queue) == (2, 5)
    with pytest.raises(ValueError):
        LocalGate(max_concurrency=0)
    with pytest.raises(ValueError):
        RedisGate(REDIS_URL, max_queue=-1)


# -- LocalGate across event loops ----------------------------------------------------------------


def test_local_gate_serves_several_event_loops() -> None:
    gate = LocalGate(max_concurrency=2, max_queue=64)
    lock = threading.Lock()
    current = 0
    peak = 0
    done = 0

    async def generation() -> None:
        nonlocal current, peak, done
        async with gate.reserve(HOST) as r:
            await r.acquired()
            with lock:
                current += 1
                peak = max(peak, current)
            await asyncio.sleep(0.01)
            with lock:
                current -= 1
                done += 1

    async def many() -> None:
        await asyncio.gather(*(generation() for _ in range(10)))

    asyncio.run(many())  # one loop after another...
    asyncio.run(many())
    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(4)]
    for thread in threads:  # ...and several loops at once, in different threads
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert done == 60
    assert peak == 2
    assert asyncio.run(gate.stats(HOST)).in_flight == 0


def test_local_gate_skips_a_waiter_whose_loop_is_gone() -> None:
    gate = LocalGate()
    holder_in = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        async with gate.reserve(HOST):
            holder_in.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait)

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    assert holder_in.wait(3)

    # A waiter whose loop is closed without it ever leaving the queue.
    orphan_loop = asyncio.new_event_loop()
    orphan = gate.reserve(HOST)
    orphan_loop.run_until_complete(orphan.__aenter__())
    orphan_loop.close()
    assert asyncio.run(gate.stats(HOST)).queued == 1

    release.set()
    thread.join(3)
    # The freed slot was not handed to the dead waiter.
    stats = asyncio.run(gate.stats(HOST))
    assert (stats.in_flight, stats.queued) == (0, 0)

    async def again() -> bool:
        async with gate.reserve(HOST) as r:
            return r.held

    assert asyncio.run(again())


# -- RedisGate specifics ----------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_holder_whose_heartbeat_stops_loses_the_slot_after_its_lease(
    redis_prefix: str,
) -> None:
    gate = RedisGate(REDIS_URL, lease_seconds=1, key_prefix=redis_prefix)
    stuck = gate.reserve(HOST)
    await stuck.__aenter__()
    assert stuck.held and stuck._task is not None
    stuck._task.cancel()  # the process is frozen: no more heartbeats
    async with gate.reserve(HOST) as nxt:
        assert nxt.position == 1
        start = time.monotonic()
        await asyncio.wait_for(nxt.acquired(), 3)
        assert time.monotonic() - start >= 0.6  # not before the lease ran out
        # The stale holder coming back to life and releasing must not free the new holder's slot.
        await stuck.__aexit__(None, None, None)
        assert await stats_of(gate) == (1, 0)
        await asyncio.sleep(1.2)  # the holder's heartbeat keeps its lease alive
        assert await stats_of(gate) == (1, 0)
        assert not nxt.lost
    assert await stats_of(gate) == (0, 0)


@pytest.mark.redis
async def test_redis_waiter_whose_heartbeat_stops_drops_out(redis_prefix: str) -> None:
    gate = RedisGate(REDIS_URL, lease_seconds=1, key_prefix=redis_prefix)
    async with gate.reserve(HOST):
        ghost = gate.reserve(HOST)
        await ghost.__aenter__()
        assert ghost._task is not None
        ghost._task.cancel()  # a waiter that stopped polling
        async with gate.reserve(HOST) as live:
            assert live.position == 2
            await eventually(lambda: live.position == 1, timeout=2)
            assert await stats_of(gate) == (1, 1)
        await ghost.__aexit__(None, None, None)  # too late: it is already gone
    assert await stats_of(gate) == (0, 0)


@pytest.mark.redis
async def test_redis_keys_expire_when_idle(redis_prefix: str) -> None:
    gate = RedisGate(REDIS_URL, lease_seconds=2, key_prefix=redis_prefix)
    async with gate.reserve(HOST), gate.reserve(HOST):
        pass
    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
    assert keys, "the gate wrote no keys"
    for key in keys:
        assert 0 < await client.pttl(key) <= gate.ttl_ms
    await client.aclose()


@pytest.mark.redis
async def test_redis_gate_is_shared_between_gate_objects(redis_prefix: str) -> None:
    one = RedisGate(REDIS_URL, key_prefix=redis_prefix)
    two = RedisGate(REDIS_URL, key_prefix=redis_prefix)
    async with one.reserve(HOST) as a, two.reserve(HOST) as b:
        assert a.held and not b.held and b.position == 1
        assert await stats_of(one) == await stats_of(two) == (1, 1)


# -- RedisGate across real OS processes -------------------------------------------------------


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, ident: int) -> None:
        self.proc = proc
        self.id = ident
        self.events: dict[str, dict[str, Any]] = {}

    async def expect(self, event: str, timeout: float = 10) -> dict[str, Any]:
        while event not in self.events:
            assert self.proc.stdout is not None
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"worker {self.id} exited: {stderr.decode()}")
            data = json.loads(line)
            self.events[data["event"]] = data
        return self.events[event]


async def spawn_workers(
    prefix: str,
    count: int,
    *,
    max_concurrency: int,
    lease: float,
    hold: float,
    skews: list[int] | None = None,
    users: list[str] | None = None,
    weights: list[int] | None = None,
) -> list[Worker]:
    workers = []
    for ident in range(count):
        config = {
            "url": REDIS_URL,
            "prefix": prefix,
            "host": HOST,
            "max_concurrency": max_concurrency,
            "lease": lease,
            "hold": hold,
            "id": ident,
            "skew": (skews or [0] * count)[ident],
            "user": (users or [""] * count)[ident],
            "weight": (weights or [1] * count)[ident],
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        workers.append(Worker(proc, ident))
    for worker in workers:
        await worker.expect("ready")
    return workers


async def let_in(client: aioredis.Redis, prefix: str, worker: Worker) -> dict[str, Any]:
    await client.rpush(f"{prefix}:turn:{worker.id}", 1)
    return await worker.expect("entered")


@pytest.mark.redis
async def test_processes_take_turns_in_arrival_order(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    # Clocks skewed by up to an hour must not matter: the gate uses only the Redis server's.
    skews = [0, 3600, -3600, 600, -600]
    workers = await spawn_workers(
        redis_prefix, 5, max_concurrency=1, lease=30, hold=0.15, skews=skews
    )
    reap.extend(workers)
    for arrival, worker in enumerate(workers):
        entered = await let_in(test_redis, redis_prefix, worker)
        assert entered["position"] == arrival
    await test_redis.set(f"{redis_prefix}:go", 1)

    done = [await w.expect("done") for w in workers]
    held = [w.events["held"] for w in workers]
    by_start = sorted(done, key=lambda d: d["start"])
    assert [d["id"] for d in by_start] == [0, 1, 2, 3, 4]  # FIFO across processes
    for before, after in itertools.pairwise(by_start):
        assert before["end"] <= after["start"]  # never two at once
    assert all(h["concurrent"] == 1 for h in held)
    assert [h["positions"] for h in held] == [[], [1], [2, 1], [3, 2, 1], [4, 3, 2, 1]]
    for worker in workers:
        assert await worker.proc.wait() == 0
    gate = RedisGate(REDIS_URL, key_prefix=redis_prefix)
    assert await stats_of(gate) == (0, 0)


@pytest.mark.redis
async def test_processes_respect_max_concurrency(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    workers = await spawn_workers(redis_prefix, 6, max_concurrency=2, lease=30, hold=0.15)
    reap.extend(workers)
    for worker in workers:
        await let_in(test_redis, redis_prefix, worker)
    gate = RedisGate(REDIS_URL, max_concurrency=2, key_prefix=redis_prefix)
    assert await stats_of(gate) == (2, 4)
    await test_redis.set(f"{redis_prefix}:go", 1)

    done = [await w.expect("done") for w in workers]
    points = sorted([(d["start"], 1) for d in done] + [(d["end"], -1) for d in done])
    current = peak = 0
    for _, step in points:  # ends sort before starts at equal times
        current += step
        peak = max(peak, current)
    assert peak == 2
    assert max(w.events["held"]["concurrent"] for w in workers) == 2
    assert sorted(w.events["held"]["in_flight"] for w in workers)[-1] == 2
    first_two = sorted(done, key=lambda d: d["start"])[:2]
    assert {d["id"] for d in first_two} == {0, 1}
    assert await stats_of(gate) == (0, 0)


@pytest.mark.redis
async def test_killed_holder_process_frees_the_slot_when_its_lease_expires(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    [holder] = await spawn_workers(redis_prefix, 1, max_concurrency=1, lease=1, hold=-1)
    reap.append(holder)
    await let_in(test_redis, redis_prefix, holder)
    await test_redis.set(f"{redis_prefix}:go", 1)
    await holder.expect("held")

    gate = RedisGate(REDIS_URL, lease_seconds=1, key_prefix=redis_prefix)
    async with gate.reserve(HOST) as r:
        assert r.position == 1
        await asyncio.sleep(1.2)  # a live holder keeps its slot past its lease
        assert not r.held and await stats_of(gate) == (1, 1)

        os.kill(holder.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.wait_for(r.acquired(), 5)
        waited = time.monotonic() - killed
        # Not at once (the lease had 2/3 s or more to run), but once it ran out.
        assert waited >= 0.4, waited
        assert await stats_of(gate) == (1, 0)
    assert await holder.proc.wait() == -signal.SIGKILL
    assert await stats_of(gate) == (0, 0)  # nothing leaked


@pytest.mark.redis
async def test_killed_waiter_process_drops_out_of_the_queue(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    [waiter] = await spawn_workers(redis_prefix, 1, max_concurrency=1, lease=1, hold=0)
    reap.append(waiter)
    gate = RedisGate(REDIS_URL, lease_seconds=1, key_prefix=redis_prefix)
    log: list[str] = []
    holder = Waiter(gate, "holder", log)
    await asyncio.wait_for(holder.holding.wait(), 3)
    assert (await let_in(test_redis, redis_prefix, waiter))["position"] == 1
    behind = await Waiter(gate, "behind", log).joined()
    assert behind.reservation.position == 2
    await asyncio.sleep(1.2)  # a live waiter keeps its place past its lease
    assert behind.reservation.position == 2 and await stats_of(gate) == (1, 2)

    os.kill(waiter.proc.pid, signal.SIGKILL)
    await eventually(lambda: behind.reservation.position == 1, timeout=2)
    assert await stats_of(gate) == (1, 1)
    holder.finish.set()
    await asyncio.wait_for(behind.holding.wait(), 2)
    assert await stats_of(gate) == (1, 0)
    behind.finish.set()
    await asyncio.gather(holder.task, behind.task)
    assert log == ["holder", "behind"]
    assert behind.positions == [2, 1]
    assert await waiter.proc.wait() == -signal.SIGKILL
    assert await stats_of(gate) == (0, 0)
