"""The live "who is on the GPU now" frames of `/ws/monitoring/`.

One feed per event loop (a web process has one): while at least one of this process's
monitoring sockets asked for them (`{"type": "now.subscribe"}`), it reads the view
(monitoring.selectors.now.full(): the gate's snapshot of every host and, when anything runs or
waits, three queries) every `INTERVAL` seconds, and at once when a generation of this process
starts or ends (chat.cancels.on_change), and hands it to each socket, which sends its user's cut
of it only when that changed (a running reply's token count changes with each flush, so while
something runs a frame goes out about every `INTERVAL`).

Every process serves its own sockets: with Redis the gate is shared, so each process reads the
same queue; on the embedded defaults the only web process is also the only gate. Nothing goes
through the channel layer, and a process whose sockets asked for nothing reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, Protocol

from chat import cancels
from monitoring.selectors import now

logger = logging.getLogger(__name__)

INTERVAL = 1.0


class Subscriber(Protocol):
    async def now_view(self, view: dict[str, Any]) -> None: ...


class Feed:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.reads = 0  # views read (tests and the cost measurement count them)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        self.poke()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="now feed")

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            if self.task is not None:
                self.task.cancel()
                self.task = None
            loop = self._loop_ref()
            if loop is not None and _feeds.get(loop) is self:
                del _feeds[loop]  # the next subscriber starts a new one

    def poke(self) -> None:
        """Read the view again now (from any thread)."""
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.wake.set)

    async def _run(self) -> None:
        unsubscribe = cancels.on_change(self.poke)
        try:
            while self.subscribers:
                self.wake.clear()
                try:
                    view = await now.full()
                except Exception:  # the gate or the database is away: next time
                    logger.warning("could not read who is on the GPU", exc_info=True)
                else:
                    self.reads += 1
                    for subscriber in list(self.subscribers):
                        try:
                            await subscriber.now_view(view)
                        except Exception:  # one closed socket must not starve the others
                            logger.info("could not send a now frame", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), INTERVAL)
        finally:
            unsubscribe()


_feeds: dict[asyncio.AbstractEventLoop, Feed] = {}  # the loops with subscribers


def feed() -> Feed:
    """This event loop's feed."""
    loop = asyncio.get_running_loop()
    current = _feeds.get(loop)
    if current is None:
        current = _feeds[loop] = Feed(loop)
    return current
