"""Generations detached from the socket that started them.

A run iterates chat.services.generate() in its own task and publishes the events to the
channel-layer group of its conversation; sockets come and go. Tokens are coalesced before
publishing so that a fast model costs a bounded number of messages per second, and nothing
waits for a reader: a slow client cannot slow the generation. `cancel()` stops a run from any
process: generate() can be cancelled by its conversation id wherever it runs (chat.cancels),
which closes the upstream response. With `CHAT_CANCEL_ABANDONED`, a run that every socket
has left gives its slot up to the users waiting (chat.abandon).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer

from chat import abandon, cancels, protocol, services
from chat.actions import ActionInput, prepare_action
from chat.events import Cancelled, Done, Event, Failed, Started, Token
from config.channel_layers import RedisChannelLayer
from core.errors import AppError

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.03
COALESCE_MAX_CHARS = 4000
# With a channel layer shared between processes (Redis): how often a run asks the layer whether
# sockets of other processes follow it, for its token frames (its other frames always go).
REMOTE_CHECK_SECONDS = 1.0

_runs: dict[str, Run] = {}  # conversation id -> run, in this process


class Follower(Protocol):
    """A socket of this process following a conversation's frames (chat.consumers)."""

    channel_name: str

    def deliver(self, frame: dict[str, Any]) -> None: ...


# One generation, many transports (issue 16): the sockets of this process that follow a
# conversation get its run's frames handed to them directly, not through the channel layer;
# the layer carries them only to followers elsewhere (other processes, other listeners).
_followers: dict[str, set[Follower]] = {}


def follow(conversation_id: str, follower: Follower) -> None:
    """Register before joining the layer group, so that no frame of this process's runs can
    miss the socket: a run hands its frames to its followers here and sends through the layer
    only to the group's other members, never to these twice."""
    _followers.setdefault(conversation_id, set()).add(follower)


def unfollow(conversation_id: str, follower: Follower) -> None:
    followers = _followers.get(conversation_id)
    if followers is not None:
        followers.discard(follower)
        if not followers:
            del _followers[conversation_id]


async def _members(layer: Any, group: str) -> list[str] | None:
    """The channels in a layer group (None when the layer cannot tell)."""
    if isinstance(layer, InMemoryChannelLayer):
        return list(layer.groups.get(group, ()))
    if isinstance(layer, RedisChannelLayer):
        connection = layer.connection(layer.consistent_hash(group))
        members = await connection.zrange(layer._group_key(group), 0, -1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    return None


def stream_group(conversation_id: str) -> str:
    return f"chat.stream.{conversation_id}"


control_group = cancels.control_group


class Run:
    def __init__(self, plan: services.GenerationPlan) -> None:
        self.plan = plan
        self.conversation_id = str(plan.conversation_pk)
        self.message_id: int | None = None
        self.layer = get_channel_layer()
        self.task: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._pending = ""
        self._pending_offset = 0
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._published_token = False
        self._remote: list[str] = []  # the group's other channels, as last read (Redis)
        self._next_check = 0.0
        self.ended = False  # generate() yielded its last event

    def start(self) -> Run:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run())
        if abandon.enabled():
            self._watcher = loop.create_task(abandon.watch(self))
        return self

    async def _publish(self, frame: dict[str, Any]) -> None:
        local = _followers.get(self.conversation_id)
        try:
            if not local:
                await self.layer.group_send(stream_group(self.conversation_id), frame)
                return
            for follower in list(local):
                follower.deliver(frame)
            for channel in await self._others(local, frame["type"] == "chat.token"):
                await self.layer.send(channel, frame)
        except Exception:  # a broken layer must not lose the generation: it is saved anyway
            logger.exception("could not publish a chat frame")

    async def _others(self, local: set[Follower], token: bool) -> list[str]:
        """The channels of the layer group that are not this process's followers (sockets of
        other processes, other listeners): they get the frame through the layer. In memory
        that is known exactly. With Redis it is read for every frame but tokens, and for
        tokens once per REMOTE_CHECK_SECONDS: a socket of another process that joins in
        between hears of the tokens it missed with the next frame it gets (chat.consumers
        reads a gap back from the saved reply), at the latest with the reply's end."""
        group = stream_group(self.conversation_id)
        exact = isinstance(self.layer, InMemoryChannelLayer)
        now = time.monotonic()
        if not exact and token and now < self._next_check:
            return self._remote
        self._next_check = now + REMOTE_CHECK_SECONDS
        members = await _members(self.layer, group)
        if members is None:  # an unknown layer: everyone through it, the local ones too
            for follower in list(local):
                _followers.get(self.conversation_id, set()).discard(follower)
            return []
        names = {follower.channel_name for follower in local}
        self._remote = [channel for channel in members if channel not in names]
        return self._remote

    async def _flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            text, offset = self._pending, self._pending_offset
            self._pending = ""
        await self._publish(
            protocol.token_frame(self.conversation_id, self.message_id, offset, text)
        )

    async def _flush_later(self) -> None:
        await asyncio.sleep(COALESCE_SECONDS)
        self._flusher = None
        await self._flush()

    async def _token(self, token: Token) -> None:
        if not self._pending:
            self._pending_offset = token.offset
        self._pending += token.text
        if not self._published_token or len(self._pending) >= COALESCE_MAX_CHARS:
            # The first token goes out at once (time to first token); the rest are coalesced,
            # which under load is what keeps the frame rate bounded.
            self._published_token = True
            await self._flush()
        elif self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_later())

    async def _drain(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self._flush()

    async def _event(self, event: Event) -> None:
        if isinstance(event, Started):
            self.message_id = event.message_id
        if isinstance(event, Token):
            await self._token(event)
            return
        if isinstance(event, Done | Failed | Cancelled):
            self.ended = True
            await self._drain()
        frame = protocol.event_frame(self.conversation_id, event)
        if frame:
            await self._publish(frame)

    async def _run(self) -> None:
        events = services.generate(self.plan)
        try:
            async for event in events:
                await self._event(event)
        except asyncio.CancelledError:
            if not self.ended:
                # Cancelled while publishing, outside generate(): it saves and reports the
                # cancel all the same when told at the point where it waits.
                with contextlib.suppress(StopAsyncIteration, asyncio.CancelledError):
                    await self._event(await events.athrow(asyncio.CancelledError()))
        except Exception:  # generate() reports its own failures; this is a bug of ours
            logger.exception("generation run failed")
            error = AppError("internal_error", services.GENERATION_FAILED, 500)
            await self._publish(
                protocol.error_frame(
                    error, conversation=self.conversation_id, message=self.message_id
                )
            )
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
            await events.aclose()
            if _runs.get(self.conversation_id) is self:
                del _runs[self.conversation_id]


def start(plan: services.GenerationPlan) -> Run:
    """Run a generation detached from its socket; one per conversation (across processes,
    generate() refuses a second with `generation_running`; here it is refused at once)."""
    run = _runs.get(str(plan.conversation_pk))
    if run is not None and run.task is not None and not run.task.done():
        raise services.generation_running()
    run = Run(plan).start()
    _runs[run.conversation_id] = run
    return run


async def start_chat(
    user_id: int, chat_input: services.ChatInput, subscribe: Callable[[str], Awaitable[None]]
) -> str:
    """Start a detached generation for this user and input; return the conversation id.

    `subscribe` joins the conversation's frames before the run can publish its first one.
    """
    plan = await services.prepare_chat(user_id, chat_input)
    conversation_id = str(plan.conversation_pk)
    await subscribe(conversation_id)
    start(plan)
    return conversation_id


async def start_action(
    user_id: int, action: ActionInput, subscribe: Callable[[str], Awaitable[None]]
) -> str:
    """As start_chat, for a regenerate, an edit or a continue (chat.actions)."""
    plan = await prepare_action(user_id, action)
    conversation_id = str(plan.conversation_pk)
    await subscribe(conversation_id)
    start(plan)
    return conversation_id


def local_run(conversation_id: str) -> Run | None:
    return _runs.get(conversation_id)


async def cancel(conversation_id: str) -> None:
    """Cancel the run of a conversation, whichever process runs it (the user's own stop)."""
    run = _runs.get(conversation_id)
    if run is not None and run.task is not None:
        run.task.cancel()
        return
    await cancels.cancel(conversation_id)
