"""The error a chat request raises before it starts, whatever the transport."""

from __future__ import annotations

from core.errors import AppError


class ChatRequestError(AppError):
    """A request that cannot start (validation, limits, ownership, a server shutting down):
    the transport answers `status` with `code`, `detail` and the `extra` fields that say what
    was wrong (e.g. which attachments)."""
