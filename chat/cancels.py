"""Every generation can be stopped by its conversation id, from any web process.

`chat.services.generate()` registers itself here for as long as it runs (`tracked()`): the
task iterating it and that task's event loop (a REST view runs it on another thread's loop),
whatever the transport (WebSocket runs, REST, SSE, the `/ollama/` proxy; a transport that
goes on iterating it from another task says so with `adopt()`). `cancel()` then cancels it: at
once when this process runs it (on that task's loop, thread-safely), else through the channel
layer, where each process listens on one channel of its own (per event loop) that joins the
control group of each conversation it generates for. `stop_by_staff()` is staff's stop.

Two kinds of cancel:

- a plain cancel (the user's own `chat.stop`, chat.runs): generate() saves the reply
  `cancelled`, reports it, and the cancellation goes on as before;
- a *stop* with a reason (`Stop`: staff stopped it, or its sockets abandoned it): the reply is
  saved `cancelled` with the reason as its `error_code`/`error`, the transport hears a
  cancelled event carrying them, and generate() then ends normally (the task is uncancelled),
  so a REST request answers and an SSE stream ends with `[DONE]`.

A cancel that reaches a generation already saving its end (`closing()`) is dropped: the reply
is finished, there is nothing left to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from channels.layers import get_channel_layer

from chat import lifecycle
from chat.errors import ChatRequestError
from chat.models import Conversation
from config import database
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin

logger = logging.getLogger(__name__)

CANCEL_MESSAGE = "chat.cancel"
STOPPED_BY_STAFF = "stopped_by_staff"
ABANDONED = "abandoned"


def control_group(conversation_id: str) -> str:
    return f"chat.control.{conversation_id}"


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a generation was stopped by someone other than its user."""

    code: str  # STOPPED_BY_STAFF, ABANDONED
    detail: str


@dataclass(eq=False)
class Generation:
    """One running generate(), as this process knows it."""

    conversation_id: str
    user_id: int
    host: str
    model: str
    plan: Any  # its GenerationPlan
    task: asyncio.Task[Any]
    loop: asyncio.AbstractEventLoop
    stop: Stop | None = None  # set when a stop was delivered (read on `loop`)
    closing: bool = False  # the reply is being saved for good: cancels are dropped


_lock = threading.Lock()
# Conversation id -> its generations in this process: one, but for a moment two when a second
# request races the first (it is refused `generation_running` as it saves its message).
_generations: dict[str, list[Generation]] = {}
_watchers: list[Callable[[], None]] = []


def running() -> list[Generation]:
    """The generations of this process (a copy)."""
    with _lock:
        return [g for same in _generations.values() for g in same]


def local(conversation_id: str) -> list[Generation]:
    """This process's generations of a conversation (usually one; none when it runs
    elsewhere or not at all)."""
    with _lock:
        return list(_generations.get(conversation_id, ()))


def on_change(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback()` (on the generation's loop) when a generation starts or ends here;
    returns the function that unsubscribes it."""
    _watchers.append(callback)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            _watchers.remove(callback)

    return unsubscribe


def _changed() -> None:
    for callback in list(_watchers):
        try:
            callback()
        except Exception:  # a watcher's failure must not touch the generation
            logger.warning("a generation watcher failed", exc_info=True)


@contextlib.asynccontextmanager
async def tracked(plan: Any) -> AsyncIterator[Generation]:
    """Wraps the whole of generate(): counted as a running generation (chat.lifecycle), and
    cancellable by its conversation id from any process until it ends."""
    with lifecycle.tracked():
        task = asyncio.current_task()
        assert task is not None  # generate() is always iterated by a task
        loop = asyncio.get_running_loop()
        key = str(plan.conversation_pk)
        generation = Generation(key, plan.user_id, plan.host, plan.model, plan, task, loop)
        with _lock:
            _generations.setdefault(key, []).append(generation)
        _changed()
        listener = _listener()
        joined = await listener.add(key)
        try:
            yield generation
        finally:
            with _lock:
                same = _generations.get(key, [])
                if generation in same:
                    same.remove(generation)
                if not same:
                    _generations.pop(key, None)
            _changed()
            if joined:
                await listener.discard(key)


def adopt(plan: Any) -> None:
    """The generation of `plan` goes on in the current task (a transport that read its first
    events in one task and streams the rest from another: the Ollama-compatible proxy)."""
    task = asyncio.current_task()
    assert task is not None
    for generation in local(str(plan.conversation_pk)):
        if generation.plan is plan:
            generation.task, generation.loop = task, asyncio.get_running_loop()


def closing(conversation_id: Any) -> None:
    """The reply of this conversation is being saved for good (called on its loop, by the
    task of its generation or a task it awaits, such as a shield's)."""
    for generation in local(str(conversation_id)):
        if generation.loop is _running_loop():
            generation.closing = True


def take_stop(conversation_id: Any) -> Stop | None:
    """The stop delivered to this conversation's generation, if any, now that generate() has
    caught its cancellation: its task is uncancelled, and generate() ends normally."""
    for generation in local(str(conversation_id)):
        if generation.stop is not None and generation.loop is _running_loop():
            if generation.task.cancelling():
                generation.task.uncancel()
            return generation.stop
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _deliver(generation: Generation, stop: Stop | None) -> None:
    """Cancel `generation`'s task on its own loop (a stop records its reason first)."""

    def cancel() -> None:
        if generation.closing or generation.task.done():
            return
        if stop is not None and generation.stop is None:
            generation.stop = stop
        generation.task.cancel()

    if generation.loop is _running_loop():
        cancel()
    else:
        with contextlib.suppress(RuntimeError):  # its loop is closed: it is over
            generation.loop.call_soon_threadsafe(cancel)


async def cancel(conversation_id: str, stop: Stop | None = None) -> bool:
    """Cancel the generation of a conversation, whichever process runs it. True when it runs
    here (cancelled at once); False when the cancel was sent to the other processes."""
    here = local(conversation_id)
    for generation in here:
        _deliver(generation, stop)
    if here:
        return True
    message: dict[str, Any] = {"type": CANCEL_MESSAGE, "conversation": conversation_id}
    if stop is not None:
        message.update(code=stop.code, detail=stop.detail)
    await get_channel_layer().group_send(control_group(conversation_id), message)
    return False


# --------------------------------------------------------------------------- staff


def _generating(conversation_id: UUID) -> bool:
    generating = (
        Conversation.objects.filter(pk=conversation_id)
        .values_list("generating_since", flat=True)
        .first()
    )
    if generating is None and not Conversation.objects.filter(pk=conversation_id).exists():
        raise ChatRequestError("not_found", "No such conversation.", 404)
    return generating is not None


async def stop_by_staff(conversation_id: UUID, staff_email: str) -> bool:
    """Stop the generation (running or queued) of any user's conversation; the reply is saved
    `cancelled` with `stopped_by_staff`. 404 for no such conversation, 409 `not_generating`
    when nothing is generated there. True when it ran in this process."""
    key = str(conversation_id)
    if not local(key) and not await database.run(_generating, conversation_id):
        raise ChatRequestError(
            "not_generating", "Nothing is being generated in this conversation.", 409
        )
    return await cancel(key, Stop(STOPPED_BY_STAFF, f"Stopped by staff ({staff_email})."))


# --------------------------------------------------------------------------- the listener


class _Listener:
    """One event loop's channel for `chat.cancel` messages from the other processes."""

    def __init__(self) -> None:
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.joined: set[str] = set()
        self.starting = asyncio.Lock()

    async def add(self, conversation_id: str) -> bool:
        layer = get_channel_layer()
        try:
            async with self.starting:
                if self.task is None or self.task.done():
                    self.channel = await layer.new_channel()
                    self.task = asyncio.create_task(self._listen(self.channel), name="chat cancels")
                    # Its loop closed (cancelling it): forgotten, so the loop is not kept.
                    loop = asyncio.get_running_loop()
                    self.task.add_done_callback(lambda _: _forget(loop, self))
            assert self.channel is not None
            await layer.group_add(control_group(conversation_id), self.channel)
        except Exception:  # the generation goes on; only a stop from elsewhere cannot reach it
            logger.warning("could not listen for cancels", exc_info=True)
            return False
        self.joined.add(conversation_id)
        return True

    async def discard(self, conversation_id: str) -> None:
        self.joined.discard(conversation_id)
        if self.channel is None:
            return
        with contextlib.suppress(Exception):
            await get_channel_layer().group_discard(control_group(conversation_id), self.channel)

    async def _listen(self, channel: str) -> None:
        # The layer's receive outlives a Redis restart (config.channel_layers); the groups do
        # not, so they are joined again meanwhile.
        layer = get_channel_layer()
        keeper = (
            asyncio.create_task(self._keep_joined(layer, channel))
            if isinstance(layer, RedisChannelLayer)
            else None
        )
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("type") != CANCEL_MESSAGE:
                    continue
                code, detail = message.get("code"), message.get("detail")
                stop = Stop(str(code), str(detail or "")) if code else None
                for generation in local(str(message.get("conversation"))):
                    _deliver(generation, stop)
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _keep_joined(self, layer: Any, channel: str) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await rejoin(layer, channel, map(control_group, list(self.joined)))
            except Exception as exc:  # Redis is still away: next round
                logger.info("cancel listener upkeep failed: %s", exc)


# One per event loop: under Daphne the one loop; a sync view outside Daphne (tests, WSGI) runs
# each generation on a loop of its own, whose listener goes with it.
_listeners: dict[asyncio.AbstractEventLoop, _Listener] = {}


def _forget(loop: asyncio.AbstractEventLoop, listener: _Listener) -> None:
    with _lock:
        if _listeners.get(loop) is listener:
            del _listeners[loop]


def _listener() -> _Listener:
    loop = asyncio.get_running_loop()
    with _lock:
        listener = _listeners.get(loop)
        if listener is None:
            listener = _listeners[loop] = _Listener()
        return listener
