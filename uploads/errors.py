"""Why an upload was refused: a stable ``code``, a message for people, an HTTP status.

Application errors (``core.errors.AppError``), raised by the upload handler and the services
and rendered by the one exception handler as ``{"detail": ..., "code": ..., ...extra}``.
"""

from __future__ import annotations

from typing import Any

from django.template.defaultfilters import filesizeformat

from core.errors import AppError


class UploadError(AppError):
    status = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(code, message, extra=extra)

    @property
    def message(self) -> str:
        return self.detail


class FileTooLarge(UploadError):
    status = 413

    def __init__(self, max_bytes: int, *, declared: int | None = None) -> None:
        if declared is None:
            message = f"The file is larger than the limit of {_size(max_bytes)}."
        else:
            message = (
                f"The request body is {_size(declared)}; "
                f"the largest accepted file is {_size(max_bytes)}."
            )
        super().__init__("file_too_large", message, max_bytes=max_bytes)


class QuotaExceeded(UploadError):
    status = 413

    def __init__(self, *, size: int, used: int, quota: int) -> None:
        super().__init__(
            "quota_exceeded",
            f"This file ({_size(size)}) does not fit in your storage quota: you use "
            f"{_size(used)} of {_size(quota)}. Delete some files first.",
            size=size,
            used_bytes=used,
            quota_bytes=quota,
        )


def _size(n: int) -> str:
    return f"{filesizeformat(n)} ({n} bytes)".replace("\xa0", " ")
