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
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer

from chat import abandon, cancels, protocol, services
from chat.actions import ActionInput, prepare_action
from chat.events import Cancelled, Done, Event, Failed, Started, Token
from core.errors import AppError

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.03
COALESCE_MAX_CHARS = 4000

_runs: dict[str, Run] = {}  # conversation id -> run, in this process


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
        self.ended = False  # generate() yielded its last event

    def start(self) -> Run:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run())
        if abandon.enabled():
            self._watcher = loop.create_task(abandon.watch(self))
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
