"""The one error a chat request raises before it starts, whatever the transport."""

from __future__ import annotations

from typing import Any

from chat.ollama import OllamaError


class ChatRequestError(Exception):
    """A request that cannot start: the transport answers `status` with `code` and `detail`,
    plus the `extra` fields that say what was wrong (e.g. which attachments)."""

    def __init__(
        self,
        code: str,
        detail: str,
        status: int,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.extra = extra or {}

    @classmethod
    def from_ollama(cls, exc: OllamaError) -> ChatRequestError:
        return cls(exc.code, str(exc), exc.http_status, retry_after=retry_after_seconds(exc))


def retry_after_seconds(exc: Exception) -> int | None:
    """A `Retry-After` value in whole seconds from an error's `retry_after`, if it has one."""
    value = getattr(exc, "retry_after", None)
    return max(1, int(value + 0.999)) if isinstance(value, int | float) else None
