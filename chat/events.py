"""What chat.services.generate() yields; each transport renders these and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is saved (and the conversation created, for a new one)."""

    conversation_id: str
    user_message_id: int
    model: str
    attachments: tuple[dict[str, Any], ...] = ()  # the records the user message keeps


@dataclass(frozen=True, slots=True)
class Queued:
    position: int


@dataclass(frozen=True, slots=True)
class Started:
    """A slot is held and the assistant message exists (status `streaming`)."""

    message_id: int
    conversation_id: str
    model: str
    host: str
    queue_wait_seconds: float


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    offset: int  # character offset of `text` in the reply
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Done:
    message_id: int
    content: str
    metrics: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    detail: str
    status: int  # the HTTP status a request/response transport should answer with
    message_id: int | None = None
    retry_after: int | None = None
    content: str = ""


@dataclass(frozen=True, slots=True)
class Cancelled:
    message_id: int | None
    content: str


Event = Accepted | Queued | Started | Token | Done | Failed | Cancelled
