"""Rendering of generate()'s events for the HTTP transports (JSON and Server-Sent Events)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from chat.events import Accepted, Cancelled, Done, Event, Failed, Queued, Started, Token
from config.exceptions import app_error_of
from core import fastjson
from core.errors import AppError
from core.streaming import batches

logger = logging.getLogger(__name__)

INTERRUPTED_DETAIL = "The server is restarting; the reply so far is kept."


def failed_error(event: Failed, conversation_id: str | None) -> AppError:
    """A failed generation as the error a JSON request answers with."""
    return AppError(
        event.code,
        event.detail,
        event.status,
        retry_after=event.error.retry_after,
        extra={
            **event.error.extra,
            "conversation": conversation_id,
            "message": event.message_id,
            "partial_response": event.content,
        },
    )


def stopped_error(event: Cancelled, conversation_id: str | None) -> AppError:
    """A generation stopped by staff, as the error a JSON request answers with (409: the
    request was valid; someone ended it)."""
    return AppError(
        event.code,
        event.detail,
        409,
        extra={
            "conversation": conversation_id,
            "message": event.message_id,
            "partial_response": event.content,
        },
    )


def sse_event(event: Event) -> dict[str, Any] | None:
    """One `data:` payload of POST /api/chat/stream/ for an event."""
    match event:
        case Accepted():
            return {
                "type": "status",
                "status": "accepted",
                "conversation": event.conversation_id,
                "user_message": event.user_message_id,
                "model": event.model,
                "attachments": list(event.attachments),
            }
        case Queued():
            return {
                "type": "queued",
                "position": event.position,
                "estimated_wait": event.estimated_wait,
            }
        case Started():
            return {
                "type": "status",
                "status": "started",
                "conversation": event.conversation_id,
                "message": event.message_id,
                "model": event.model,
                "queue_wait_seconds": event.queue_wait_seconds,
                "offset": event.offset,
            }
        case Token():
            return {"type": "content", "content": event.text, "offset": event.offset}
        case Done():
            return {"type": "metrics", "message": event.message_id, **event.metrics}
        case Failed():
            payload = {"type": "error", **event.error.as_body()}
            if event.message_id is not None:
                payload["message"] = event.message_id
            return payload
        case Cancelled() if event.interrupted:
            return {
                "type": "error",
                "code": "interrupted",
                "detail": INTERRUPTED_DETAIL,
                "message": event.message_id,
            }
        case Cancelled() if event.code:  # stopped by staff, or abandoned: who and why
            return {
                "type": "status",
                "status": "cancelled",
                "message": event.message_id,
                "code": event.code,
                "detail": event.detail,
            }
        case Cancelled():
            return {"type": "status", "status": "cancelled", "message": event.message_id}
    return None


def _sse(payload: Any) -> bytes:
    return b"data: " + fastjson.dumps(payload) + b"\n\n"


def merge_tokens(batch: list[Event]) -> list[Event]:
    """Consecutive tokens as one: the offsets make the joined text exact."""
    merged: list[Event] = []
    run: list[Token] = []

    def close_run() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            merged.append(Token("".join(t.text for t in run), run[0].offset))
        run.clear()

    for event in batch:
        if isinstance(event, Token):
            run.append(event)
        else:
            close_run()
            merged.append(event)
    close_run()
    return merged


async def sse_stream(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    # Closing this iterator (the client went away) cancels the generation: see batches().
    try:
        async for batch in batches(events):
            payloads = (sse_event(event) for event in merge_tokens(batch))
            yield b"".join(_sse(payload) for payload in payloads if payload is not None)
    except Exception as exc:  # generate() reports its own failures; this is a bug of ours
        logger.exception("SSE stream failed")
        yield _sse({"type": "error", **app_error_of(exc).as_body()})
    yield b"data: [DONE]\n\n"
