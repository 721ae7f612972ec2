"""The in-process gate: one process, any number of event loops (and threads)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from .base import GateFull, GateStats, Reservation, retry_after_hint

#: Weight of the newest hold time in the moving average used for Retry-After.
_EWMA_WEIGHT = 0.2


@dataclass(eq=False)
class _Waiter:
    reservation: LocalReservation
    loop: asyncio.AbstractEventLoop
    granted: bool = False


@dataclass
class _HostState:
    in_flight: int = 0
    queue: deque[_Waiter] = field(default_factory=deque)
    avg_hold_seconds: float | None = None


class LocalGate:
    """At most ``max_concurrency`` generations per host, the others in a bounded FIFO queue.

    The state is guarded by a thread lock (never held across an ``await``), and every waiter is
    woken on its own event loop, so one gate can serve several loops over the process lifetime,
    even at the same time from different threads. A freed slot is handed directly to the head of
    the queue: strict FIFO, no barging.
    """

    def __init__(self, max_concurrency: int = 1, max_queue: int = 32) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}

    def reserve(self, host: str) -> LocalReservation:
        return LocalReservation(self, host)

    async def stats(self, host: str) -> GateStats:
        with self._lock:
            state = self._hosts.get(host) or _HostState()
            return GateStats(
                host=host,
                in_flight=state.in_flight,
                queued=len(state.queue),
                max_concurrency=self.max_concurrency,
                max_queue=self.max_queue,
            )

    # -- called with the lock held ---------------------------------------------------------------

    def _state(self, host: str) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _HostState()
        return state

    def _join(self, reservation: LocalReservation, loop: asyncio.AbstractEventLoop) -> _Waiter:
        state = self._state(reservation.host)
        waiter = _Waiter(reservation, loop)
        if not state.queue and state.in_flight < self.max_concurrency:
            state.in_flight += 1
            waiter.granted = True
            reservation._set_held(state.in_flight)
            return waiter
        if len(state.queue) >= self.max_queue:
            raise GateFull(
                reservation.host,
                retry_after_hint(state.avg_hold_seconds, self.max_concurrency),
            )
        state.queue.append(waiter)
        reservation._set_position(len(state.queue))
        return waiter

    def _leave(self, waiter: _Waiter, held_seconds: float) -> None:
        state = self._state(waiter.reservation.host)
        if waiter.granted:
            waiter.granted = False
            state.in_flight -= 1
            if held_seconds > 0:
                avg = state.avg_hold_seconds
                state.avg_hold_seconds = (
                    held_seconds
                    if avg is None
                    else (1 - _EWMA_WEIGHT) * avg + _EWMA_WEIGHT * held_seconds
                )
        else:
            try:
                state.queue.remove(waiter)
            except ValueError:
                pass
        self._dispatch(state)

    def _dispatch(self, state: _HostState) -> None:
        """Hand free slots to the head of the queue, then tell the rest their new positions."""
        while state.queue and state.in_flight < self.max_concurrency:
            waiter = state.queue.popleft()
            state.in_flight += 1
            waiter.granted = True
            if not _post(waiter, waiter.reservation._set_held, state.in_flight):
                # Its event loop is gone: it will never use or release the slot.
                waiter.granted = False
                state.in_flight -= 1
        for index, waiter in enumerate(list(state.queue), start=1):
            if not _post(waiter, waiter.reservation._set_position, index):
                state.queue.remove(waiter)


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
    def __init__(self, gate: LocalGate, host: str) -> None:
        super().__init__(host)
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
