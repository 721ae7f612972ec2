"""Turns between users in the gate's queue: locally, on a real Redis, and across processes.

The order of service is asserted exactly, from the order in which reservations got the slot
(one slot, released by the test one holder at a time): no clock is read."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import redis.asyncio as aioredis

from core.gate import Gate, LocalGate, RedisGate, Reservation
from core.gate.turns import TURN, Turns, check_weight, step
from tests.core.test_gate import (
    HOST,
    REDIS_URL,
    GateFactory,
    Worker,
    let_in,
    spawn_workers,
    stats_of,
)

# -- the bookkeeping alone ---------------------------------------------------------------------


def test_a_newcomer_starts_at_the_current_virtual_time() -> None:
    turns = Turns()
    tags = [turns.arrive("a", 1) for _ in range(3)]
    assert tags == [0, TURN, 2 * TURN]
    turns.served("a", 1, 0)
    assert turns.arrive("b", 1) == 0  # ahead of a's second request


def test_weights_space_a_users_requests_closer() -> None:
    turns = Turns()
    assert [turns.arrive("a", 2) for _ in range(3)] == [0, TURN // 2, TURN]
    assert {step(w) * w for w in range(1, 11)} == {TURN}  # whole numbers for every weight


def test_an_idle_user_banks_no_credit() -> None:
    turns = Turns()
    turns.served("busy", 1, turns.arrive("busy", 1))
    for _ in range(5):
        turns.served("busy", 1, turns.arrive("busy", 1))
    assert turns.vtime == 5 * TURN
    assert turns.arrive("late", 1) == 5 * TURN  # not 0: no claim on the past


def test_retag_after_leaving_keeps_the_users_place() -> None:
    turns = Turns()
    turns.served("a", 1, turns.arrive("a", 1))  # a holds (tag 0)
    second, third = turns.arrive("a", 1), turns.arrive("a", 1)
    assert (second, third) == (TURN, 2 * TURN)
    # The second leaves: the third takes its tag, and a's next request follows it.
    assert turns.retag("a", [(2, 1)]) == [TURN]
    assert turns.arrive("a", 1) == 2 * TURN


def test_fifo_tags_everything_alike() -> None:
    turns = Turns(fair=False)
    assert {turns.arrive(user, 1) for user in "abcab"} == {0}


def test_forget_idle_keeps_only_users_ahead_of_the_virtual_time() -> None:
    turns = Turns()
    turns.served("a", 1, turns.arrive("a", 1))
    turns.served("b", 1, turns.arrive("b", 1))
    turns.forget_idle()
    assert set(turns.next_tag) == {"a", "b"}  # both just had a turn: not forgotten
    turns.vtime = 10 * TURN
    turns.forget_idle()
    assert turns.next_tag == {} and turns.served_next == {}


@pytest.mark.parametrize("weight", [0, 11, 1.5, "2"])
def test_weights_outside_the_range_are_refused(weight: object) -> None:
    with pytest.raises(ValueError):
        check_weight(weight)  # type: ignore[arg-type]


# -- the gates ---------------------------------------------------------------------------------


async def enter(gate: Gate, name: str, user: str, weight: int = 1) -> Reservation:
    reservation = gate.reserve(HOST, user=user, weight=weight, label=name)
    return await reservation.__aenter__()


async def serve_in_turn(queued: dict[str, Reservation]) -> list[str]:
    """With one slot: wait for whoever gets it, release it, again; the names in that order."""
    order: list[str] = []
    pending = dict(queued)
    while pending:
        waits = {asyncio.ensure_future(r.acquired()): name for name, r in pending.items()}
        _, rest = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in rest:
            task.cancel()
        holders = [name for name, r in pending.items() if r.held]
        assert len(holders) == 1, holders  # one slot: never two at once
        [name] = holders
        order.append(name)
        await pending.pop(name).__aexit__(None, None, None)
    return order


async def three_users_uneven(gate: Gate) -> list[str]:
    arrivals = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("a4", "a"), ("a5", "a")]
    arrivals += [("b1", "b"), ("b2", "b"), ("c1", "c")]
    reservations = {name: await enter(gate, name, user) for name, user in arrivals}
    return await serve_in_turn(reservations)


async def test_users_take_turns(make_gate: GateFactory) -> None:
    # a sent five, then b two, then c one: b and c wait for one of a's, not for all five.
    assert await three_users_uneven(make_gate()) == [
        *("a1", "b1", "c1"),
        *("a2", "b2"),
        *("a3", "a4", "a5"),
    ]


async def test_fifo_gate_serves_in_arrival_order() -> None:
    order = await three_users_uneven(LocalGate(1, 32, fair=False))
    assert order == ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "c1"]


async def test_a_late_user_goes_ahead_of_a_long_queue(make_gate: GateFactory) -> None:
    gate = make_gate(max_concurrency=2)
    noisy = {f"n{i}": await enter(gate, f"n{i}", "noisy") for i in range(8)}
    quiet = await enter(gate, "quiet", "quiet")
    assert [noisy["n0"].held, noisy["n1"].held] == [True, True]
    # Next free slot is the quiet user's: position 1 at once, before six of the noisy user's.
    assert quiet.position == 1
    snapshot = await gate.snapshot(HOST)
    assert [e.label for e in snapshot.waiting] == ["quiet", "n2", "n3", "n4", "n5", "n6", "n7"]
    assert [e.position for e in snapshot.waiting] == [1, 2, 3, 4, 5, 6, 7]
    assert {e.label for e in snapshot.holding} == {"n0", "n1"}
    assert {e.user for e in snapshot.holding} == {"noisy"}
    assert all(e.position is None and e.since > 0 for e in snapshot.holding)
    for reservation in [*noisy.values(), quiet]:
        await reservation.__aexit__(None, None, None)
    assert await stats_of(gate) == (0, 0)


async def test_weights_give_more_turns(make_gate: GateFactory) -> None:
    gate = make_gate()
    holder = await enter(gate, "x", "x")
    queued = {}
    for i in range(1, 5):
        queued[f"a{i}"] = await enter(gate, f"a{i}", "a", weight=2)
    for i in range(1, 5):
        queued[f"b{i}"] = await enter(gate, f"b{i}", "b", weight=1)
    await holder.__aexit__(None, None, None)
    # After one each, a gets two turns for every one of b's.
    assert await serve_in_turn(queued) == [
        *("a1", "b1"),
        *("a2", "a3", "b2"),
        *("a4", "b3", "b4"),
    ]


async def test_cancel_while_queued_leaves_at_once_and_keeps_the_users_place(
    make_gate: GateFactory,
) -> None:
    gate = make_gate()
    holder = await enter(gate, "a1", "a")
    a2, a3 = await enter(gate, "a2", "a"), await enter(gate, "a3", "a")
    b1 = await enter(gate, "b1", "b")
    assert [e.label for e in (await gate.snapshot(HOST)).waiting] == ["b1", "a2", "a3"]

    # a2 is cancelled: a3 moves up into a2's turn, at once (no poll needed to leave).
    await a2.__aexit__(asyncio.CancelledError, asyncio.CancelledError(), None)
    snapshot = await gate.snapshot(HOST)
    assert [e.label for e in snapshot.waiting] == ["b1", "a3"]
    # A newcomer still goes ahead of a's second request, not ahead of b1.
    c1 = await enter(gate, "c1", "c")
    assert [e.label for e in (await gate.snapshot(HOST)).waiting] == ["b1", "c1", "a3"]
    assert c1.position == 2

    await holder.__aexit__(None, None, None)
    assert await serve_in_turn({"b1": b1, "c1": c1, "a3": a3}) == ["b1", "c1", "a3"]
    assert await stats_of(gate) == (0, 0)


async def test_positions_follow_the_turns(make_gate: GateFactory) -> None:
    gate = make_gate()
    holder = await enter(gate, "a1", "a")
    a2 = await enter(gate, "a2", "a")
    assert a2.position == 1
    b1 = await enter(gate, "b1", "b")  # goes ahead: a2 hears it is now second
    assert b1.position == 1
    await asyncio.wait_for(_position_becomes(a2, 2), 5)
    await holder.__aexit__(None, None, None)
    await b1.acquired()
    await asyncio.wait_for(_position_becomes(a2, 1), 5)
    for r in (b1, a2):
        await r.__aexit__(None, None, None)


async def _position_becomes(reservation: Reservation, position: int) -> None:
    async for current in reservation.positions():
        if current == position:
            return


# -- across processes --------------------------------------------------------------------------


@pytest.mark.redis
async def test_processes_of_three_users_take_turns(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    users = ["a", "a", "a", "a", "b", "b", "c"]
    workers = await spawn_workers(
        redis_prefix, len(users), max_concurrency=1, lease=30, hold=0, users=users
    )
    reap.extend(workers)
    for worker in workers:  # arrival order a, a, a, a, b, b, c; the first takes the slot
        await let_in(test_redis, redis_prefix, worker)
    await test_redis.set(f"{redis_prefix}:go", 1)
    for worker in workers:
        await worker.expect("done")
    order = sorted(range(len(workers)), key=lambda i: workers[i].events["held"]["rank"])
    # a0 held; then b, c, a, b, a, a.
    assert order == [0, 4, 6, 1, 5, 2, 3]
    for worker in workers:
        assert await worker.proc.wait() == 0
    assert await stats_of(RedisGate(REDIS_URL, key_prefix=redis_prefix)) == (0, 0)


@pytest.mark.redis
async def test_a_dead_waiter_process_gives_its_users_turn_to_their_next_request(
    redis_prefix: str, test_redis: aioredis.Redis, reap: list[Worker]
) -> None:
    gate = RedisGate(REDIS_URL, lease_seconds=1, key_prefix=redis_prefix)
    holder = await enter(gate, "x", "x")
    [doomed] = await spawn_workers(redis_prefix, 1, max_concurrency=1, lease=1, hold=0, users=["a"])
    reap.append(doomed)
    await let_in(test_redis, redis_prefix, doomed)
    a2 = await enter(gate, "a2", "a")
    b1 = await enter(gate, "b1", "b")
    snapshot = await gate.snapshot(HOST)
    assert [e.user for e in snapshot.waiting] == ["a", "b", "a"]

    os.kill(doomed.proc.pid, signal.SIGKILL)
    # Its lease runs out; a's next request takes a's place, ahead of b.
    await asyncio.wait_for(_position_becomes(a2, 1), 5)
    assert [e.label for e in (await gate.snapshot(HOST)).waiting] == ["a2", "b1"]
    await holder.__aexit__(None, None, None)
    assert await serve_in_turn({"a2": a2, "b1": b1}) == ["a2", "b1"]
    assert await doomed.proc.wait() == -signal.SIGKILL
    assert await stats_of(gate) == (0, 0)
