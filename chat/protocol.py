"""The `/ws/chat/` protocol: every frame the server sends, and how a `chat.send` is read.

docs/api.md documents each frame. The consumer (chat.consumers) owns the socket (who it is,
which offsets it has sent); the runs (chat.runs, whose `start_chat` is the one entry that
starts a generation) publish what generate() yields. Both build their frames here and nowhere
else, so a live reply and a resumed one read the same.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from chat import lifecycle, services
from chat.actions import ActionInput
from chat.events import Accepted, Cancelled, Done, Event, Failed, Queued, Started
from chat.models import Message
from chat.serializers import parse_action as parse_action_input
from chat.serializers import parse_chat_input
from config.exceptions import invalid_input
from core.errors import AppError

Frame = dict[str, Any]

PONG: Frame = {"type": "pong"}


class FrameError(AppError):
    """A frame that cannot be acted on: answered with a `chat.error` frame, socket kept."""


def invalid_frame(detail: str) -> FrameError:
    return FrameError("invalid_frame", detail, 400)


def error_frame(error: AppError, **about: Any) -> Frame:
    """`chat.error` for any application error; `about` places it (conversation, message)."""
    return {"type": "chat.error", **error.as_body(), **about}


def interrupted_frame(
    conversation_id: str, message_id: int | None, length: int | None = None
) -> Frame:
    """The end of a reply cut by a server stopping; `length` when the text's length is known
    (a sweep of a dead process's replies does not read them)."""
    frame: Frame = {
        "type": "chat.error",
        "conversation": conversation_id,
        "message": message_id,
        "code": "interrupted",
        "detail": lifecycle.INTERRUPTED_DETAIL,
    }
    if length is not None:
        frame["length"] = length
    return frame


def auth_ok(user: Any) -> Frame:
    return {"type": "auth.ok", "user": {"id": user.pk, "email": user.email}}


def token_expired() -> Frame:
    return {
        "type": "chat.error",
        "code": "token_expired",
        "detail": "The access token expired; reconnect with a new one.",
    }


def session_ended(**about: Any) -> Frame:
    """Sent before closing with 4401 a socket whose session or token no longer holds: a logout
    of its session, a password change, a deactivation or deletion of the account."""
    error = AppError(
        "session_ended",
        "Your session ended (logged out, password changed or account deactivated); log in again.",
        401,
    )
    return error_frame(error, **about)


def token_frame(conversation_id: str, message_id: int | None, offset: int, text: str) -> Frame:
    return {
        "type": "chat.token",
        "conversation": conversation_id,
        "message": message_id,
        "offset": offset,
        "content": text,
    }


def started_frame(conversation_id: str, message_id: int, model: str, offset: int = 0) -> Frame:
    return {
        "type": "chat.started",
        "conversation": conversation_id,
        "message": message_id,
        "model": model,
        "offset": offset,
    }


def event_frame(conversation_id: str, event: Event) -> Frame | None:
    """The frame of one of generate()'s events (tokens are coalesced by the run first)."""
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
                "estimated_wait": event.estimated_wait,
            }
        case Started():
            return started_frame(conversation_id, event.message_id, event.model, event.offset)
        case Done():
            return {
                "type": "chat.done",
                "conversation": conversation_id,
                "message": event.message_id,
                "length": len(event.content),
                "metrics": event.metrics,
            }
        case Failed():
            about: dict[str, Any] = {"conversation": conversation_id}
            if event.message_id is not None:
                about.update(message=event.message_id, length=len(event.content))
            return error_frame(event.error, **about)
        case Cancelled() if event.interrupted:
            return interrupted_frame(conversation_id, event.message_id, len(event.content))
        case Cancelled():
            frame: Frame = {
                "type": "chat.cancelled",
                "conversation": conversation_id,
                "message": event.message_id,
                "length": len(event.content),
            }
            if event.code:  # stopped by staff, or abandoned: who and why
                frame.update(code=event.code, detail=event.detail)
            return frame
    return None


def saved_end_frame(conversation_id: str, reply: Message) -> Frame | None:
    """The frame that ends a saved reply (for a resume), or None while it still streams."""
    about = {"conversation": conversation_id, "message": reply.pk, "length": len(reply.content)}
    match reply.status:
        case Message.Status.COMPLETE:
            return {"type": "chat.done", **about, "metrics": services.message_metrics(reply)}
        case Message.Status.CANCELLED if reply.error_code:
            return {
                "type": "chat.cancelled",
                **about,
                "code": reply.error_code,
                "detail": reply.error,
            }
        case Message.Status.CANCELLED:
            return {"type": "chat.cancelled", **about}
        case Message.Status.FAILED | Message.Status.INTERRUPTED:
            return {
                "type": "chat.error",
                **about,
                "code": reply.error_code or "interrupted",
                "detail": reply.error or "The reply did not finish.",
            }
    return None


ACTIONS = {"chat.regenerate": "regenerate", "chat.edit": "edit", "chat.continue": "continue"}


def parse_action(frame: dict[str, Any]) -> ActionInput:
    """`chat.regenerate`, `chat.edit` and `chat.continue`: `message` is the id acted on (an
    edit's new text is `content`), checked by the same parser as the REST actions."""
    message_id = frame.get("message")
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
        raise invalid_frame('"message" must be a message id.')
    fields: dict[str, Any] = {
        key: frame[key] for key in ("attachments", "model", "options") if key in frame
    }
    if "content" in frame:
        fields["message"] = frame["content"]
    try:
        return parse_action_input(ACTIONS[frame["type"]], message_id, fields)
    except ValidationError as exc:
        raise invalid_input(exc, errors_key="errors", generic_code="invalid_frame") from None


def parse_send(frame: dict[str, Any]) -> services.ChatInput:
    """`chat.send`'s fields, checked by the same parser as POST /api/chat/."""
    try:
        return parse_chat_input(frame)
    except ValidationError as exc:
        raise invalid_input(exc, errors_key="errors", generic_code="invalid_frame") from None
