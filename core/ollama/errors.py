"""Typed errors of the Ollama client.

Every failure talking to Ollama surfaces as a subclass of `OllamaError`, each with a stable
`code` string that the API layers map to HTTP statuses, SSE/WebSocket error frames and logs,
and a suggested `http_status` for a gateway answering on Ollama's behalf.
"""

from __future__ import annotations

import re

from core.errors import AppError

_MODEL_NOT_FOUND_RE = re.compile(r"""model\s+(["'])(?P<model>.+?)\1\s+not found""")


def parse_missing_model(message: str) -> str | None:
    """The model name in Ollama's `model "NAME" not found, ...` (or single-quoted) message."""
    match = _MODEL_NOT_FOUND_RE.search(message or "")
    return match.group("model") if match else None


class OllamaError(AppError):
    """Base of every Ollama client error: an application error naming the host."""

    code: str = "ollama_error"
    #: The status a gateway answering on Ollama's behalf should use (`status_code` is what
    #: Ollama itself answered, when it answered).
    status: int = 502

    def __init__(self, message: str, *, host: str, status_code: int | None = None) -> None:
        super().__init__(detail=message, extra={"host": host})
        self.message = message
        self.host = host
        self.status_code = status_code

    @property
    def http_status(self) -> int:
        return self.status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, host={self.host!r}, "
            f"status_code={self.status_code!r})"
        )

    def to_dict(self) -> dict[str, object]:
        """`{"code", "detail", "host", "status_code"}` for logs and error frames."""
        return {
            "code": self.code,
            "detail": self.message,
            "host": self.host,
            "status_code": self.status_code,
        }


class OllamaUnreachable(OllamaError):
    """No connection could be made (refused, DNS failure, connect timeout, bad URL)."""

    code = "ollama_unreachable"
    status = 502


class OllamaTimeout(OllamaError):
    """Connected, but Ollama did not answer (or send the next bytes) within read_timeout."""

    code = "ollama_timeout"
    status = 504


class ModelNotFound(OllamaError):
    """404: the model is not installed on that Ollama host."""

    code = "model_not_found"
    status = 404

    def __init__(
        self,
        message: str,
        *,
        host: str,
        status_code: int | None = 404,
        model: str | None = None,
    ) -> None:
        super().__init__(message, host=host, status_code=status_code)
        self.model = model if model is not None else parse_missing_model(message)


class OllamaBusy(OllamaError):
    """503: Ollama's queue is full (`server busy, please try again. ...`)."""

    code = "ollama_busy"
    status = 503
    DEFAULT_RETRY_AFTER = 5.0

    def __init__(
        self,
        message: str,
        *,
        host: str,
        status_code: int | None = 503,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, host=host, status_code=status_code)
        self.retry_after = retry_after if retry_after is not None else self.DEFAULT_RETRY_AFTER


class OllamaBadRequest(OllamaError):
    """400: Ollama refused the request (bad option type, missing capability, ...)."""

    code = "bad_request"
    status = 400


class OllamaStreamError(OllamaError):
    """An `{"error": ...}` line in the middle of a stream; the chunks before it were yielded."""

    code = "ollama_stream_error"
    status = 502


class OllamaProtocolError(OllamaError):
    """A malformed line, or the connection dropped before the final `done` chunk."""

    code = "ollama_protocol_error"
    status = 502


class OllamaServerError(OllamaError):
    """Any other error status from Ollama (5xx, and unexpected 4xx)."""

    code = "ollama_error"
    status = 502


__all__ = [
    "ModelNotFound",
    "OllamaBadRequest",
    "OllamaBusy",
    "OllamaError",
    "OllamaProtocolError",
    "OllamaServerError",
    "OllamaStreamError",
    "OllamaTimeout",
    "OllamaUnreachable",
    "parse_missing_model",
]
