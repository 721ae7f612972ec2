"""What chat.services.generate() yields; each transport renders these and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import AppError


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
    #: Seconds until the slot, from the model's recent replies on the host; None: no history.
    estimated_wait: float | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """A slot is held and the assistant message exists (status `streaming`)."""

    message_id: int
    conversation_id: str
    model: str
    host: str
    queue_wait_seconds: float
    offset: int = 0  # where its text starts: the length so far of a continued reply


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
    """The generation failed: `error` says why (rendered from `error.as_body()` everywhere);
    `message_id` and `content` are the reply row saved with what was generated, if any."""

    error: AppError
    message_id: int | None = None
    content: str = ""

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def detail(self) -> str:
        return self.error.detail

    @property
    def status(self) -> int:
        return self.error.status


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The task iterating generate() was cancelled: a stop from the user, or the server
    shutting down (`interrupted`). The partial reply is saved as `message_id`. Stopped by
    someone else (chat.cancels: staff, or abandoned by its sockets), `code` and `detail` say
    who and why, as the reply's `error_code` and `error` do."""

    message_id: int | None
    content: str
    interrupted: bool = False
    code: str = ""
    detail: str = ""


Event = Accepted | Queued | Started | Token | Done | Failed | Cancelled
