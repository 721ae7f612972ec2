"""The one application error: what every transport renders when a request cannot be served.

REST answers `status` with `{"detail", "code", ...extra}` (and `Retry-After`), SSE and the
WebSocket send the same fields in an error event, the Ollama-compatible proxy folds them into
Ollama's `{"error"}` shape. A subclass only chooses its `code`, `status` and `extra`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class AppError(Exception):
    """A failure with a stable machine-readable `code` and a `detail` for people."""

    code: str = "error"
    status: int = 400

    def __init__(
        self,
        code: str | None = None,
        detail: str = "",
        status: int | None = None,
        *,
        retry_after: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.extra: dict[str, Any] = dict(extra or {})

    def __str__(self) -> str:
        return self.detail

    @property
    def retry_after_seconds(self) -> int | None:
        """`retry_after` as the whole seconds of a `Retry-After` header (at least 1)."""
        value = self.retry_after
        if value is None or not math.isfinite(value):
            return None
        return max(1, math.ceil(value))

    def as_body(self) -> dict[str, Any]:
        """The fields every transport sends: detail, code, the extras, retry_after if any."""
        body: dict[str, Any] = {"detail": self.detail, "code": self.code, **self.extra}
        if self.retry_after_seconds is not None:
            body["retry_after"] = self.retry_after_seconds
        return body
