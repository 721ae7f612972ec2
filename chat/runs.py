"""Generations detached from the socket that started them.

A run iterates chat.services.generate() in its own task and publishes the events to the
channel-layer group of its conversation; sockets come and go. Tokens are coalesced before
publishing so that a fast model costs a bounded number of messages per second, and nothing
waits for a reader: a slow client cannot slow the generation. A `chat.cancel` message sent to
the conversation's control group (from any process) cancels the run, which closes the
upstream response.

Each process listens for cancels on one channel of its own, made like a consumer's
(`new_channel()`): channels-redis serves all of a process's channels with one blocking pop,
and a channel of another prefix would queue behind it for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.layers import get_channel_layer

from chat import lifecycle, services
from chat.events import Accepted, Done, Event, Failed, Queued, Started, Token
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.03
COALESCE_MAX_CHARS = 4000

_runs: dict[str, Run] = {}  # conversation id -> run, in this process


def stream_group(conversation_id: str) -> str:
    return f"chat.stream.{conversation_id}"


def control_group(conversation_id: str) -> str:
    return f"chat.control.{conversation_id}"


def event_frame(conversation_id: str, event: Event) -> dict[str, Any] | None:
    """The WebSocket frame for an event (see docs/api.md)."""
    match event:
        case Accepted():
            return {
                "type": "chat.accepted",
                "conversation": conversation_id,
                "user_message": event.user_message_id,
                "model": event.model,
                "attachments": list(event.attachments),
            }
        case Queued():
            return {
                "type": "chat.queued",
                "conversation": conversation_id,
                "position": event.position,
            }
        case Started():
            return {
                "type": "chat.started",
                "conversation": conversation_id,
                "message": event.message_id,
                "model": event.model,
            }
        case Done():
            return {
                "type": "chat.done",
                "conversation": conversation_id,
                "message": event.message_id,
                "length": len(event.content),
                "metrics": event.metrics,
            }
        case Failed():
            frame = {
                "type": "chat.error",
                "conversation": conversation_id,
                "code": event.code,
                "detail": event.detail,
            }
            if event.message_id is not None:
                frame["message"] = event.message_id
                frame["length"] = len(event.content)
            if event.retry_after is not None:
                frame["retry_after"] = event.retry_after
            return frame
    return None


class Run:
    def __init__(self, plan: services.GenerationPlan) -> None:
        self.plan = plan
        self.conversation_id = str(plan.conversation_pk)
        self.message_id: int | None = None
        self.layer = get_channel_layer()
        self.task: asyncio.Task | None = None
        self._pending = ""
        self._pending_offset = 0
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._published_token = False

    def start(self) -> Run:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _publish(self, frame: dict[str, Any]) -> None:
        try:
            await self.layer.group_send(stream_group(self.conversation_id), frame)
        except Exception:  # a broken layer must not lose the generation: it is saved anyway
            logger.exception("could not publish a chat frame")

    async def _flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            text, offset = self._pending, self._pending_offset
            self._pending = ""
        await self._publish(
            {
                "type": "chat.token",
                "conversation": self.conversation_id,
                "message": self.message_id,
                "offset": offset,
                "content": text,
            }
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

    async def _run(self) -> None:
        listening = await _listener.add(self.conversation_id)
        events = services.generate(self.plan)
        try:
            async for event in events:
                if isinstance(event, Started):
                    self.message_id = event.message_id
                if isinstance(event, Token):
                    await self._token(event)
                    continue
                if isinstance(event, Done | Failed):
                    await self._drain()
                frame = event_frame(self.conversation_id, event)
                if frame:
                    await self._publish(frame)
        except asyncio.CancelledError:
            await events.aclose()  # saves the partial reply, closes upstream
            await self._drain()
            if lifecycle.interrupting():
                await self._publish(
                    {
                        "type": "chat.error",
                        "conversation": self.conversation_id,
                        "message": self.message_id,
                        "code": "interrupted",
                        "detail": lifecycle.INTERRUPTED_DETAIL,
                    }
                )
            else:
                await self._publish(
                    {
                        "type": "chat.cancelled",
                        "conversation": self.conversation_id,
                        "message": self.message_id,
                    }
                )
        except Exception:  # generate() reports its own failures; this is a bug of ours
            logger.exception("generation run failed")
            await self._publish(
                {
                    "type": "chat.error",
                    "conversation": self.conversation_id,
                    "message": self.message_id,
                    "code": "internal_error",
                    "detail": "The server failed while generating; what was generated is kept.",
                }
            )
        finally:
            if listening:
                await _listener.discard(self.conversation_id)
            if _runs.get(self.conversation_id) is self:
                del _runs[self.conversation_id]


class _CancelListener:
    """This process's one channel for `chat.cancel` messages, on the running loop."""

    def __init__(self) -> None:
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def add(self, conversation_id: str) -> bool:
        layer = get_channel_layer()
        try:
            if (
                self.task is None
                or self.task.done()
                or self.task.get_loop() is not asyncio.get_running_loop()
            ):
                self.channel = await layer.new_channel()
                self.task = asyncio.create_task(self._listen(self.channel), name="chat cancels")
            assert self.channel is not None
            await layer.group_add(control_group(conversation_id), self.channel)
        except Exception:  # the run goes on; only a stop from another process cannot reach it
            logger.warning("could not listen for cancels", exc_info=True)
            return False
        return True

    async def discard(self, conversation_id: str) -> None:
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
                if message.get("type") == "chat.cancel":
                    run = _runs.get(str(message.get("conversation")))
                    if run is not None and run.task is not None:
                        run.task.cancel()
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _keep_joined(self, layer: Any, channel: str) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await rejoin(layer, channel, map(control_group, list(_runs)))
            except Exception as exc:  # Redis is still away: next round
                logger.info("cancel listener upkeep failed: %s", exc)


_listener = _CancelListener()


def start(plan: services.GenerationPlan) -> Run:
    run = Run(plan).start()
    _runs[run.conversation_id] = run
    return run


def local_run(conversation_id: str) -> Run | None:
    return _runs.get(conversation_id)


async def cancel(conversation_id: str) -> None:
    """Cancel the run of a conversation, whichever process runs it."""
    run = _runs.get(conversation_id)
    if run is not None and run.task is not None:
        run.task.cancel()
        return
    await get_channel_layer().group_send(
        control_group(conversation_id), {"type": "chat.cancel", "conversation": conversation_id}
    )
