"""Rendering of generate()'s events and errors for the HTTP transports."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from rest_framework.response import Response

from chat.events import Accepted, Cancelled, Done, Event, Failed, Queued, Started, Token
from chat.services import ChatRequestError, failure_of
from chat.streaming import batches

logger = logging.getLogger(__name__)


def error_response(code: str, detail: str, status: int, retry_after: int | None = None, **extra):
    response = Response({"detail": detail, "code": code, **extra}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def request_error_response(exc: ChatRequestError) -> Response:
    return error_response(exc.code, exc.detail, exc.status, exc.retry_after, **exc.extra)


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
            return {"type": "queued", "position": event.position}
        case Started():
            return {
                "type": "status",
                "status": "started",
                "conversation": event.conversation_id,
                "message": event.message_id,
                "model": event.model,
                "queue_wait_seconds": event.queue_wait_seconds,
            }
        case Token():
            return {"type": "content", "content": event.text, "offset": event.offset}
        case Done():
            return {"type": "metrics", "message": event.message_id, **event.metrics}
        case Failed():
            payload = {"type": "error", "code": event.code, "detail": event.detail}
            if event.message_id is not None:
                payload["message"] = event.message_id
            if event.retry_after is not None:
                payload["retry_after"] = event.retry_after
            return payload
        case Cancelled():
            return {"type": "status", "status": "cancelled", "message": event.message_id}
    return None


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def merge_tokens(batch: list[Event]) -> list[Event]:
    """Consecutive tokens as one: the offsets make the joined text exact."""
    merged: list[Event] = []
    for event in batch:
        last = merged[-1] if merged else None
        if isinstance(event, Token) and isinstance(last, Token):
            merged[-1] = Token(last.text + event.text, last.offset)
        else:
            merged.append(event)
    return merged


async def sse_stream(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    # Closing this iterator (the client went away) cancels the generation: see batches().
    try:
        async for batch in batches(events):
            payloads = (sse_event(event) for event in merge_tokens(batch))
            yield b"".join(_sse(payload) for payload in payloads if payload is not None)
    except Exception as exc:  # generate() reports its own failures; this is a bug of ours
        logger.exception("SSE stream failed")
        code, detail, _status, retry_after = failure_of(exc)
        payload: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
        if retry_after:
            payload["retry_after"] = retry_after
        yield _sse(payload)
    yield b"data: [DONE]\n\n"
