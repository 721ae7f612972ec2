"""The fair-queue benchmark runs end to end at tiny settings, and shows each policy's order.

Order only, never durations (tests never assert a wall-clock time; the benchmark prints its
figures): the order in which the replies started is read from the database (the reply rows'
`created_at`), and the run pauses the reply holding the slot at the double until the quiet
users are queued (`pause_first`), so that the order is the gate's alone, however slowly this
machine sets the requests up. On the suite's database (SQLite, then PostgreSQL) with one Daphne,
and on PostgreSQL once more with two Daphnes sharing Redis (the full stack's pair: two processes
on one SQLite file are no deployment, and four Daphnes cost the suite time).
"""

from __future__ import annotations

import pytest

from tests.bench import fair_queue
from tests.support.redis_db import flushed, redis_test_url

pytestmark = pytest.mark.integration

NOISY, QUIET = 6, 2
QUIET_USERS = [fair_queue.quiet_name(k) for k in range(1, QUIET + 1)]
REDIS_URL = redis_test_url(10)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest):
    if not request.param:
        yield None
        return
    yield from flushed(REDIS_URL)


@pytest.mark.parametrize(
    # With Redis: four Daphnes, like the full stack's pair; selected with the full-stack tests,
    # on PostgreSQL (scripts/test).
    "redis_url",
    [False, pytest.param(True, marks=[pytest.mark.redis, pytest.mark.fullstack])],
    indirect=True,
)
def test_fair_queue_benchmark_orders_the_replies(transactional_db, redis_url, capsys):
    config = fair_queue.FairConfig(
        noisy=NOISY, quiet=QUIET, hold=0.02, tokens=2, redis_url=redis_url, pause_first=True
    )
    result = fair_queue.run_benchmark(config)

    assert result.failed == 0, [
        (r.user, r.error) for run in result.runs.values() for r in run.failed
    ]
    for run in result.runs.values():
        assert len(run.of(fair_queue.NOISY)) == NOISY
        assert [len(run.of(user)) for user in QUIET_USERS] == [1] * QUIET
        assert sorted(run.order) == sorted(r.user for r in run.requests)  # every reply row
        if redis_url:  # the noisy user's requests went to both Daphnes
            assert {r.server for r in run.of(fair_queue.NOISY)} == {0, 1}

    fifo, turns = result.runs["fifo"].order, result.runs["turns"].order
    last_noisy = {
        policy: max(i for i, user in enumerate(order) if user == fair_queue.NOISY)
        for policy, order in (("fifo", fifo), ("turns", turns))
    }
    # FIFO: every quiet reply started after all the noisy ones.
    assert all(fifo.index(user) > last_noisy["fifo"] for user in QUIET_USERS), fifo
    # Turns: every quiet reply started before the noisy user's last one; indeed right after
    # the noisy reply that held the slot while everyone queued.
    assert all(turns.index(user) < last_noisy["turns"] for user in QUIET_USERS), turns
    assert turns[0] == fair_queue.NOISY and sorted(turns[1 : 1 + QUIET]) == QUIET_USERS, turns
    assert result.noisy_before_quiet == 1

    # The promise is arithmetic: 6 and 7 holds under FIFO, 1 and 2 under turns.
    assert result.promise is not None
    assert (result.promise.fifo_holds, result.promise.turns_holds) == ([6, 7], [1, 2])
    assert result.measured_factor is not None and result.measured_factor > 0
    assert result.meets is not None

    printed = capsys.readouterr().out
    assert result.report in printed
    for row in (
        "queue wait (s)",
        fair_queue.NOISY,
        *QUIET_USERS,
        "quiet users",
        "order of service",
        "Daphne CPU per request",
        "promised quiet waits in holds",
        "quiet users' p50 wait, FIFO / turns: promised >= 4.3x, measured",
    ):
        assert row in printed, row
    assert f"FIFO:  {'N' * NOISY}" in printed
    assert "turns: N" in printed


def test_the_promise_from_first_principles():
    # The case: 20 noisy requests, 3 quiet users, one slot.
    promise = fair_queue.promise(20, 3, 1)
    assert promise.fifo_holds == [20, 21, 22]
    assert promise.turns_holds == [1, 2, 3]
    assert promise.factor == 10.5
    assert fair_queue.late_factor(promise) == 20.0  # joining as the first hold ends
    # Two slots: the slots free in rounds of two.
    promise = fair_queue.promise(20, 3, 2)
    assert promise.fifo_holds == [10, 10, 11]
    assert promise.turns_holds == [1, 1, 2]
    assert promise.factor == 10.0
    assert fair_queue.late_factor(promise) is None  # (10 - e) / (1 - e) has no bound
    # Slots to spare: nobody waits, there is no factor.
    promise = fair_queue.promise(2, 3, 8)
    assert promise.fifo_holds == promise.turns_holds == [0, 0, 0]
    assert promise.factor is None


def test_order_symbols():
    order = ["noisy", "quiet 2", "quiet 1", "noisy", "quiet 12"]
    assert fair_queue.order_symbols(order) == "N21Nq"
