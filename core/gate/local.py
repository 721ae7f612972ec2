"""The in-process gate: one process, any number of event loops (and threads)."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from .base import GateEntry, GateFull, GateSnapshot, GateStats, Reservation, retry_after_hint
from .turns import Turns, check_weight

#: Weight of the newest hold time in the moving average used for Retry-After.
_EWMA_WEIGHT = 0.2


@dataclass(eq=False)
class _Waiter:
    reservation: LocalReservation
    loop: asyncio.AbstractEventLoop
    user: str
    weight: int
    label: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    tag: int = 0
    arrival: int = 0
    since: float = field(default_factory=time.time)
    granted: bool = False

    def order(self) -> tuple[int, int]:
        return (self.tag, self.arrival)


@dataclass
class _HostState:
    fair: bool
    holders: list[_Waiter] = field(default_factory=list)
    queue: list[_Waiter] = field(default_factory=list)  # in the order of service
    avg_hold_seconds: float | None = None
    arrivals: itertools.count[int] = field(default_factory=itertools.count)
    turns: Turns = field(init=False)

    def __post_init__(self) -> None:
        self.turns = Turns(fair=self.fair)

    @property
    def in_flight(self) -> int:
        return len(self.holders)


class LocalGate:
    """At most ``max_concurrency`` generations per host, the others in a bounded queue served
    in turns between users (core.gate.turns; ``fair=False``: in arrival order).

    The state is guarded by a thread lock (never held across an ``await``), and every waiter is
    woken on its own event loop, so one gate can serve several loops over the process lifetime,
    even at the same time from different threads. A freed slot is handed directly to the head of
    the queue: no barging.
    """

    def __init__(self, max_concurrency: int = 1, max_queue: int = 32, *, fair: bool = True) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.fair = fair
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}

    def reserve(
        self, host: str, *, user: str = "", weight: int = 1, label: str = ""
    ) -> LocalReservation:
        return LocalReservation(self, host, user=user, weight=check_weight(weight), label=label)

    async def stats(self, host: str) -> GateStats:
        with self._lock:
            state = self._hosts.get(host) or _HostState(self.fair)
            return GateStats(
                host=host,
                in_flight=state.in_flight,
                queued=len(state.queue),
                max_concurrency=self.max_concurrency,
                max_queue=self.max_queue,
            )

    async def snapshot(self, host: str) -> GateSnapshot:
        with self._lock:
            state = self._hosts.get(host) or _HostState(self.fair)
            return GateSnapshot(
                host=host,
                holding=tuple(_entry(w, None) for w in state.holders),
                waiting=tuple(_entry(w, i) for i, w in enumerate(state.queue, start=1)),
                max_concurrency=self.max_concurrency,
                max_queue=self.max_queue,
            )

    # -- called with the lock held ---------------------------------------------------------------

    def _state(self, host: str) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _HostState(self.fair)
        return state

    def _join(self, reservation: LocalReservation, loop: asyncio.AbstractEventLoop) -> _Waiter:
        state = self._state(reservation.host)
        waiter = _Waiter(reservation, loop, reservation.user, reservation.weight, reservation.label)
        if not state.queue and state.in_flight < self.max_concurrency:
            waiter.tag = state.turns.arrive(waiter.user, waiter.weight)
            self._grant(state, waiter)
            reservation._set_held(state.in_flight)
            return waiter
        if len(state.queue) >= self.max_queue:
            raise GateFull(
                reservation.host,
                retry_after_hint(state.avg_hold_seconds, self.max_concurrency),
            )
        waiter.tag = state.turns.arrive(waiter.user, waiter.weight)
        waiter.arrival = next(state.arrivals)
        bisect.insort(state.queue, waiter, key=_Waiter.order)
        # Under turns a newcomer may go ahead of others: everyone hears their new place.
        self._tell_positions(state)
        return waiter

    def _grant(self, state: _HostState, waiter: _Waiter) -> None:
        waiter.granted = True
        waiter.since = time.time()
        state.holders.append(waiter)
        state.turns.served(waiter.user, waiter.weight, waiter.tag)

    def _leave(self, waiter: _Waiter, held_seconds: float) -> None:
        state = self._state(waiter.reservation.host)
        if waiter.granted:
            waiter.granted = False
            state.holders.remove(waiter)
            if held_seconds > 0:
                avg = state.avg_hold_seconds
                state.avg_hold_seconds = (
                    held_seconds
                    if avg is None
                    else (1 - _EWMA_WEIGHT) * avg + _EWMA_WEIGHT * held_seconds
                )
        elif waiter in state.queue:
            self._drop_queued(state, waiter)
        self._dispatch(state)

    def _drop_queued(self, state: _HostState, waiter: _Waiter) -> None:
        """A waiter leaves before its turn: the user's later requests keep their places."""
        state.queue.remove(waiter)
        theirs = [w for w in state.queue if w.user == waiter.user]
        if not theirs:
            state.turns.retag(waiter.user, [])
            return
        theirs.sort(key=lambda w: w.arrival)
        tags = state.turns.retag(waiter.user, [(w.arrival, w.weight) for w in theirs])
        for w, tag in zip(theirs, tags, strict=True):
            w.tag = tag
        state.queue.sort(key=_Waiter.order)

    def _dispatch(self, state: _HostState) -> None:
        """Hand free slots to the head of the queue, then tell the rest their new positions."""
        while state.queue and state.in_flight < self.max_concurrency:
            waiter = state.queue.pop(0)
            self._grant(state, waiter)
            if not _post(waiter, waiter.reservation._set_held, state.in_flight):
                # Its event loop is gone: it will never use or release the slot.
                waiter.granted = False
                state.holders.remove(waiter)
        if not state.queue:
            state.turns.forget_idle()
        self._tell_positions(state)

    def _tell_positions(self, state: _HostState) -> None:
        for index, waiter in enumerate(list(state.queue), start=1):
            if not _post(waiter, waiter.reservation._set_position, index):
                state.queue.remove(waiter)


def _entry(waiter: _Waiter, position: int | None) -> GateEntry:
    return GateEntry(waiter.token, waiter.user, waiter.label, waiter.since, position)


def _post(waiter: _Waiter, callback: Callable[[int], None], value: int) -> bool:
    """Run ``callback(value)`` on the waiter's loop; False if that loop is closed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is waiter.loop:
        callback(value)
        return True
    try:
        waiter.loop.call_soon_threadsafe(callback, value)
    except RuntimeError:  # the loop is closed
        return False
    return True


class LocalReservation(Reservation):
    def __init__(self, gate: LocalGate, host: str, *, user: str, weight: int, label: str) -> None:
        super().__init__(host, user=user, weight=weight, label=label)
        self._gate = gate
        self._waiter: _Waiter | None = None

    async def __aenter__(self) -> Self:
        self._start()
        loop = asyncio.get_running_loop()
        with self._gate._lock:
            self._waiter = self._gate._join(self, loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return
        with self._gate._lock:
            # Read the hold time under the lock: a grant may be posted to this loop meanwhile,
            # but `waiter.granted` (set under the lock) is the truth about the slot.
            self._gate._leave(waiter, self._held_seconds())
        self._exited = True
