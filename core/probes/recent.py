"""One GPU/RAM snapshot shared by the generations that ask for it at about the same time.

Every generation takes a snapshot before streaming and one after (chat.services). Each is a
thread hop plus NVML and psutil calls: at one stream of short replies that was ~0.5 ms of CPU
a message, and at 200 streams 400 snapshots a round of what is the same machine state (issue
16). A :class:`RecentSnapshot` hands out the last snapshot while it is younger than `max_age`,
and lets callers that arrive while one is being taken wait for that one rather than take their
own. The figures are then at most `max_age` old, far below what GPU memory and RAM figures of a
generation that lasts seconds can tell apart.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from .snapshot import snapshot

#: How old a shared snapshot may be. A quarter of a second: well under the length of any real
#: generation, yet it covers every request of a burst.
MAX_AGE_SECONDS = 0.25


class _LoopState:
    __slots__ = ("pending", "taken_at", "value")

    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None
        self.taken_at = 0.0
        self.pending: asyncio.Future[dict[str, Any]] | None = None


class RecentSnapshot:
    """Snapshots at most `max_age` seconds old (by `clock`), taken by `take` in a thread, one
    at a time per event loop. Callers share the dict they get: they must not change it."""

    def __init__(
        self,
        take: Callable[[], dict[str, Any]] = snapshot,
        *,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._max_age = max_age
        self._clock = clock
        # Futures belong to one loop; tests and management commands run several in turn.
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        if state.value is not None and self._clock() - state.taken_at < self._max_age:
            return state.value
        if state.pending is None:
            # Its age counts from the request: a snapshot is never older than it claims.
            requested_at = self._clock()
            state.pending = loop.create_task(asyncio.to_thread(self._take))
            state.pending.add_done_callback(lambda done: self._settle(state, done, requested_at))
        # Shielded: a caller cancelled while waiting must not cancel the others' snapshot.
        return await asyncio.shield(state.pending)

    @staticmethod
    def _settle(state: _LoopState, done: asyncio.Future[dict[str, Any]], at: float) -> None:
        state.pending = None
        if not done.cancelled() and done.exception() is None:
            state.value, state.taken_at = done.result(), at


_shared = RecentSnapshot()


async def recent_snapshot() -> dict[str, Any]:
    """A GPU/RAM snapshot (core.probes.snapshot's shape) at most MAX_AGE_SECONDS old."""
    return await _shared.get()
