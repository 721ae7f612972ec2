"""The life of a web process: its heartbeat, its generations, its shutdown.

- **Heartbeat.** A web process writes its `WebProcess` row every `CHAT_HEARTBEAT_SECONDS` and
  tags the replies it generates with its id. A process silent for `DEAD_AFTER_BEATS` beats is
  dead (SIGKILL, a crash, its machine gone): the next live process to beat marks its
  `streaming` replies `interrupted`, keeping their text, and tells the sockets following those
  conversations. The user's limits count `streaming` replies, so they free up at the same time.
- **Shutdown.** On SIGTERM (or SIGINT) the process stops taking generations (`shutting_down`,
  503), lets the running ones finish for `CHAT_SHUTDOWN_GRACE_SECONDS`, then interrupts the
  rest (saved as `interrupted`, their gate slots released) and only then stops Daphne. A second
  signal skips the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from chat.errors import ChatRequestError
from chat.models import Message, WebProcess
from config import database, metrics

logger = logging.getLogger(__name__)

DEAD_AFTER_BEATS = 3
INTERRUPTED_DETAIL = "The generation stopped without finishing (the server restarted or crashed)."
SHUTDOWN_RETRY_AFTER = 5

PROCESS_ID = uuid.uuid4()


class _State:
    def __init__(self) -> None:
        self.accepting = True
        self.draining = False  # cancellations are interruptions from now on
        self.active: dict[object, asyncio.Task[Any]] = {}
        self.changed: asyncio.Event | None = None
        self.heart: _Heart | None = None
        self.shutdown_task: asyncio.Task[None] | None = None
        self.start_task: asyncio.Task[None] | None = None
        self.urgent_task: asyncio.Task[None] | None = None


_state = _State()


# --------------------------------------------------------------------------- generations


def check_accepting() -> None:
    """Raise `shutting_down` (503) once this process has begun to stop."""
    if not _state.accepting:
        raise ChatRequestError(
            "shutting_down",
            "This server is shutting down; retry in a moment (another server takes over).",
            503,
            retry_after=SHUTDOWN_RETRY_AFTER,
        )


def accepting() -> bool:
    return _state.accepting


def interrupting() -> bool:
    """True when a cancellation comes from the shutdown rather than from a client."""
    return _state.draining


@contextlib.contextmanager
def tracked() -> Iterator[None]:
    """Count the current task as a running generation until the block ends."""
    check_accepting()
    task = asyncio.current_task()
    key = object()
    if task is not None:
        _state.active[key] = task
    try:
        yield
    finally:
        _state.active.pop(key, None)
        if _state.changed is not None:
            _state.changed.set()


def running_generations() -> int:
    return len(_state.active)


def process_id() -> uuid.UUID | None:
    """The id that replies are tagged with, while this process beats (None otherwise: such a
    reply is found only by the slow sweep of `CHAT_STALE_STREAMING_SECONDS`)."""
    heart = _state.heart
    return PROCESS_ID if heart is not None and heart.is_alive() else None


# --------------------------------------------------------------------------- heartbeat


def beat() -> None:
    """Write this process's heartbeat (creating its row the first time)."""
    now = timezone.now()
    if not WebProcess.objects.filter(pk=PROCESS_ID).update(heartbeat_at=now):
        WebProcess.objects.update_or_create(
            pk=PROCESS_ID,
            defaults={"heartbeat_at": now},
            create_defaults={
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "started_at": now,
                "heartbeat_at": now,
            },
        )


def sweep_dead_processes(limit: int = 500) -> list[tuple[str, int]]:
    """Mark the replies of dead processes `interrupted`; return (conversation, message) of each.

    Every live process sweeps; a reply is reported by the one whose update changed it.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CHAT_HEARTBEAT_SECONDS * DEAD_AFTER_BEATS)
    alive = WebProcess.objects.filter(heartbeat_at__gte=cutoff).values("pk")
    # A reply its process still saves is not a dead process's, whatever its heartbeat says:
    # after a database outage, a loaded process's heart may beat again later than its saves.
    candidates = list(
        Message.objects.filter(
            status=Message.Status.STREAMING, process__isnull=False, updated_at__lt=cutoff
        )
        .exclude(process__in=alive)
        .values_list("pk", "conversation_id")[:limit]
    )
    swept: list[tuple[str, int]] = []
    for pk, conversation_id in candidates:
        changed = Message.objects.filter(
            pk=pk, status=Message.Status.STREAMING, updated_at__lt=cutoff
        ).update(
            status=Message.Status.INTERRUPTED,
            error_code="interrupted",
            error=INTERRUPTED_DETAIL,
            completed_at=now,
            updated_at=now,
        )
        if changed:
            swept.append((str(conversation_id), pk))
    # Rows of processes long dead, once nothing of theirs is left to sweep.
    WebProcess.objects.filter(heartbeat_at__lt=now - timedelta(hours=1)).delete()
    return swept


async def announce_interrupted(swept: list[tuple[str, int]]) -> None:
    """Tell the sockets following these conversations that their replies were interrupted."""
    from chat import protocol, runs  # both import services, which imports this module

    layer = get_channel_layer()
    if layer is None:
        return
    for conversation_id, message_id in swept:
        try:
            await layer.group_send(
                runs.stream_group(conversation_id),
                protocol.interrupted_frame(conversation_id, message_id),
            )
        except Exception:  # the rows are marked; a client that resumes learns it from them
            logger.warning("could not announce an interrupted reply", exc_info=True)


class _Heart(threading.Thread):
    """Beats on a thread of its own: a busy event loop or busy database threads must not make
    a live process look dead to the others.

    It sweeps only after beating on time for longer than a process needs to be declared dead:
    after the database or this process stalled, the others get the same chance to beat again
    before anyone's replies are taken for a dead process's.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="web process heartbeat", daemon=True)
        self.loop = loop
        self.stopping = threading.Event()
        self.interval = settings.CHAT_HEARTBEAT_SECONDS
        self._streak_start: float | None = None
        self._last_ok: float | None = None

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        try:
            beat()
        except Exception:  # the database is away: beat again next time
            logger.warning("heartbeat failed", exc_info=True)
            self._streak_start = None
            return
        finally:
            database.release_connections()
        if (
            self._streak_start is None
            or self._last_ok is None
            or now - self._last_ok > 2 * self.interval
        ):
            self._streak_start = now
        self._last_ok = now
        if now - self._streak_start < (DEAD_AFTER_BEATS + 1) * self.interval:
            return
        try:
            swept = sweep_dead_processes()
        except Exception:
            logger.warning("sweep of dead processes failed", exc_info=True)
            return
        finally:
            database.release_connections()
        if swept and not self.stopping.is_set():
            logger.warning("marked %d replies of dead web processes interrupted", len(swept))
            asyncio.run_coroutine_threadsafe(announce_interrupted(swept), self.loop)


async def start() -> None:
    """Start beating (once per process and loop); the first beat is written before this
    returns, so that no live process ever takes this one's replies for a dead one's."""
    heart = _state.heart
    if heart is not None and heart.is_alive() and heart.loop is asyncio.get_running_loop():
        return
    _state.changed = asyncio.Event()
    await database.run_detached(beat)
    _state.heart = _Heart(asyncio.get_running_loop())
    _state.heart.start()


async def stop_beating() -> None:
    heart, _state.heart = _state.heart, None
    if heart is not None:
        heart.stopping.set()
        await asyncio.to_thread(heart.join)
    with contextlib.suppress(Exception):
        await database.run_detached(lambda: WebProcess.objects.filter(pk=PROCESS_ID).delete())


# --------------------------------------------------------------------------- shutdown


async def drain(grace: float) -> None:
    """Stop taking generations, wait up to `grace` seconds for the running ones, interrupt the
    rest (each saves itself as `interrupted` and releases its gate slot)."""
    _state.accepting = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    if _state.active:
        logger.warning(
            "shutting down: waiting up to %.0f s for %d generations", grace, len(_state.active)
        )
    await _wait_idle(deadline)
    if _state.active:
        logger.warning("shutting down: interrupting %d generations", len(_state.active))
        _state.draining = True
        for task in list(_state.active.values()):
            task.cancel()
        await _wait_idle(loop.time() + 10)
    await stop_beating()


async def _wait_idle(deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while _state.active and loop.time() < deadline:
        if _state.changed is None:
            _state.changed = asyncio.Event()
        _state.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_state.changed.wait(), deadline - loop.time())


def install_daphne_hooks() -> None:
    """Under Daphne: beat from start-up, and drain on SIGTERM/SIGINT before the reactor stops.

    Twisted installs its own handlers while starting (they stop the reactor at once, and
    Daphne then cancels every request); ours replace them once the reactor runs.
    """
    from twisted.internet import reactor as installed

    # Twisted's module-level reactor is typed as the module, not as the reactor it installs.
    reactor: Any = installed

    def on_running() -> None:
        loop = asyncio.get_event_loop()
        _state.start_task = loop.create_task(_start_logged())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)

    def on_signal(signum: int, frame: Any) -> None:
        reactor.callFromThread(begin_shutdown, signum)

    def begin_shutdown(signum: int) -> None:
        loop = asyncio.get_event_loop()
        if _state.shutdown_task is None:
            logger.warning("received signal %d: draining generations", signum)
            _state.shutdown_task = loop.create_task(_shutdown(settings.CHAT_SHUTDOWN_GRACE_SECONDS))
        else:
            logger.warning("received signal %d again: interrupting generations now", signum)
            _state.urgent_task = loop.create_task(_shutdown(0))

    async def _shutdown(grace: float) -> None:
        try:
            await drain(grace)
        finally:
            metrics.process_ended()
            with contextlib.suppress(Exception):  # already stopping
                reactor.stop()

    reactor.callWhenRunning(on_running)


async def _start_logged() -> None:
    while True:
        try:
            await start()
            return
        except Exception:  # the database is not up yet: the process serves, and beats later
            logger.warning("could not start the heartbeat; retrying", exc_info=True)
            await asyncio.sleep(settings.CHAT_HEARTBEAT_SECONDS)
