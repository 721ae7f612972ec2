"""The one error a chat request raises before it starts, whatever the transport."""

from __future__ import annotations

from chat.ollama import OllamaError


class ChatRequestError(Exception):
    """A request that cannot start: the transport answers `status` with `code` and `detail`."""

    def __init__(
        self, code: str, detail: str, status: int, *, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @classmethod
    def from_ollama(cls, exc: OllamaError) -> ChatRequestError:
        return cls(exc.code, str(exc), exc.http_status, retry_after=retry_after_seconds(exc))


def retry_after_seconds(exc: Exception) -> int | None:
    """A `Retry-After` value in whole seconds from an error's `retry_after`, if it has one."""
    value = getattr(exc, "retry_after", None)
    return max(1, int(value + 0.999)) if isinstance(value, int | float) else None
