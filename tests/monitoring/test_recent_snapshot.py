"""core.probes.recent: generations asking at about the same time share one snapshot, never
older than its max age (a fake clock; a `take` that waits on an event shows the sharing)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.probes.recent import RecentSnapshot, recent_snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Taker:
    """Counts snapshots taken, each a fresh dict; `hold` keeps the next one waiting."""

    def __init__(self) -> None:
        self.taken = 0
        self.threads: set[str] = set()
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def __call__(self) -> dict:
        self.started.set()
        self.threads.add(threading.current_thread().name)
        self.hold.wait()
        self.taken += 1
        return {"n": self.taken}


@pytest.mark.asyncio
async def test_a_snapshot_is_reused_while_younger_than_max_age_then_taken_again():
    clock, take = Clock(), Taker()
    recent = RecentSnapshot(take, max_age=0.25, clock=clock)
    first = await recent.get()
    clock.now += 0.2
    assert await recent.get() is first
    clock.now += 0.05  # 0.25 s old: too old
    second = await recent.get()
    assert (first["n"], second["n"], take.taken) == (1, 2, 2)
    assert threading.current_thread().name not in take.threads  # off the event loop


@pytest.mark.asyncio
async def test_callers_during_a_snapshot_wait_for_it_instead_of_taking_their_own():
    clock, take = Clock(), Taker()
    recent = RecentSnapshot(take, clock=clock)
    take.hold.clear()
    waiters = [asyncio.ensure_future(recent.get()) for _ in range(50)]
    # The waiters' first steps run before this thread's result comes back: all have asked.
    await asyncio.to_thread(take.started.wait)
    take.hold.set()
    results = await asyncio.gather(*waiters)
    assert take.taken == 1
    assert all(r is results[0] for r in results)


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_cancel_the_others_snapshot():
    clock, take = Clock(), Taker()
    recent = RecentSnapshot(take, clock=clock)
    take.hold.clear()
    first = asyncio.ensure_future(recent.get())
    second = asyncio.ensure_future(recent.get())
    await asyncio.to_thread(take.started.wait)
    first.cancel()
    take.hold.set()
    assert (await second)["n"] == 1
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.asyncio
async def test_a_failed_snapshot_is_not_kept():
    clock = Clock()
    calls = []

    def take() -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("probe broke")
        return {"ok": True}

    recent = RecentSnapshot(take, clock=clock)
    with pytest.raises(RuntimeError):
        await recent.get()
    assert await recent.get() == {"ok": True}


def test_each_event_loop_has_its_own_and_the_default_reads_the_machine():
    first = asyncio.run(recent_snapshot())
    second = asyncio.run(recent_snapshot())  # a new loop: nothing of the old one is awaited
    for found in (first, second):
        assert found["ram"]["total_mb"] > 0
        assert "gpu_available" in found
