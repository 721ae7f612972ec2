"""What both gate implementations share: errors, stats, the reservation's waiting logic."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

#: Retry-After hint (seconds) when a gate has not yet seen a generation finish.
DEFAULT_RETRY_AFTER = 5


class GateError(Exception):
    """Base class of the gate's errors."""


class GateFull(GateError):
    """The host's queue is full: the request is refused at once."""

    def __init__(self, host: str, retry_after_seconds: int) -> None:
        super().__init__(f"generation queue for {host} is full; retry in {retry_after_seconds} s")
        self.host = host
        self.retry_after_seconds = retry_after_seconds


class GateLost(GateError):
    """A waiter's place in a shared queue expired (its heartbeats stopped reaching Redis)."""

    def __init__(self, host: str) -> None:
        super().__init__(f"lost the place in the generation queue for {host}")
        self.host = host


@dataclass(frozen=True, slots=True)
class GateStats:
    host: str
    in_flight: int
    queued: int
    max_concurrency: int
    max_queue: int


def retry_after_hint(avg_hold_seconds: float | None, max_concurrency: int) -> int:
    """Seconds until a place in a full queue is likely to free up.

    A slot frees on average every ``avg_hold / max_concurrency`` seconds, and each time it does
    the queue shrinks by one.
    """
    if avg_hold_seconds is None:
        return DEFAULT_RETRY_AFTER
    return max(1, math.ceil(avg_hold_seconds / max_concurrency))


@dataclass(frozen=True, slots=True)
class GateEntry:
    """One reservation as a snapshot shows it."""

    token: str
    user: str  # the key the reservation was made for ("" for none)
    label: str  # the caller's name for it (the chat: the conversation id)
    since: float  # Unix time it joined the queue (waiting) or got its slot (holding)
    position: int | None  # 1-based, in the order of service; None while holding


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    host: str
    holding: tuple[GateEntry, ...]
    waiting: tuple[GateEntry, ...]  # in the order they will be served, if nobody else comes
    max_concurrency: int
    max_queue: int


@runtime_checkable
class Gate(Protocol):
    max_concurrency: int
    max_queue: int
    fair: bool

    def reserve(
        self, host: str, *, user: str = "", weight: int = 1, label: str = ""
    ) -> Reservation: ...

    async def stats(self, host: str) -> GateStats: ...

    async def snapshot(self, host: str) -> GateSnapshot: ...


class Reservation:
    """One request's claim on a host's generation slot: an async context manager.

    ``__aenter__`` joins the queue (or takes a free slot at once) and raises :class:`GateFull`
    when the queue is full; ``positions()`` / ``acquired()`` wait for the slot; ``__aexit__``
    releases the slot or leaves the queue, whatever the reason for exiting.

    Subclasses drive the state with ``_set_position``, ``_set_held`` and ``_fail``, always on the
    event loop that entered the reservation.
    """

    def __init__(self, host: str, *, user: str = "", weight: int = 1, label: str = "") -> None:
        self.host = host
        self.user = user
        self.weight = weight
        self.label = label
        #: Seconds from ``__aenter__`` to holding the slot (0 if the slot was free at once).
        self.queue_wait_seconds: float = 0.0
        #: Generations in flight on the host (this one included) when this one got its slot.
        self.in_flight_at_start: int = 0
        #: The current 1-based queue position, ``None`` when not waiting.
        self.position: int | None = None
        self.held: bool = False
        #: True if the slot was taken back before the release (a shared gate's lease ran out
        #: because heartbeats could not reach Redis). The generation is not stopped.
        self.lost: bool = False
        self._entered = False
        self._exited = False
        self._error: BaseException | None = None
        self._changed: asyncio.Event | None = None
        self._t_enter = 0.0
        self._t_held = 0.0

    # -- state changes, called on the reservation's own loop -------------------------------------

    def _start(self) -> None:
        if self._entered:
            raise RuntimeError("a Reservation can be entered only once")
        self._entered = True
        self._changed = asyncio.Event()
        self._t_enter = time.monotonic()

    def _notify(self) -> None:
        event = self._changed
        assert event is not None
        self._changed = asyncio.Event()
        event.set()

    def _set_position(self, position: int) -> None:
        if self.held or self._exited or position == self.position:
            return
        self.position = position
        self._notify()

    def _set_held(self, in_flight: int) -> None:
        if self.held or self._exited:
            return
        self.held = True
        self.position = None
        self._t_held = time.monotonic()
        self.queue_wait_seconds = self._t_held - self._t_enter
        self.in_flight_at_start = in_flight
        self._notify()

    def _fail(self, error: BaseException) -> None:
        if self.held or self._exited:
            return
        self._error = error
        self._notify()

    def _held_seconds(self) -> float:
        return time.monotonic() - self._t_held if self.held else 0.0

    # -- waiting ---------------------------------------------------------------------------------

    def _check_entered(self) -> asyncio.Event:
        if not self._entered or self._changed is None:
            raise RuntimeError("use the Reservation inside `async with`")
        if self._exited:
            raise RuntimeError("the Reservation has been exited")
        return self._changed

    async def positions(self) -> AsyncIterator[int]:
        """Yield the 1-based queue position each time it changes; end once the slot is held.

        Yields nothing if the slot is already held.
        """
        last: int | None = None
        while True:
            changed = self._check_entered()
            if self._error is not None:
                raise self._error
            if self.held:
                return
            if self.position is not None and self.position != last:
                last = self.position
                yield last
                continue
            await changed.wait()

    async def acquired(self) -> Self:
        """Wait until the slot is held."""
        while True:
            changed = self._check_entered()
            if self._error is not None:
                raise self._error
            if self.held:
                return self
            await changed.wait()

    # -- context manager -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError
