"""Reading uploads: the owner-filtered queries and access to a stored file's content.

Every query for a user's uploads goes through ``uploads_for``, so another user's upload is
simply not found (a 404, never a 403 that would confirm it exists).

For the chat (attachments):

* ``get_user_uploads(user, ids)`` -> the uploads in the order given, or ``UploadsNotFound``
  naming every id that is not one of the user's uploads;
* ``open_upload`` / ``read_upload_bytes`` -> the stored bytes (images for vision models);
* ``upload_file_type`` -> the ``FileType`` (kind, encoding...) detected from the stored file.

The text of a document is ``services.upload_text`` (async: extracted once, a PDF in a child
process with limits, then cached on the row). These are blocking (database, file system):
from async code, call them in a thread, never directly in the event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import BinaryIO

from django.db.models import QuerySet

from uploads import storage
from uploads.filetypes import HEAD_SIZE, FileType, detect
from uploads.models import Upload

__all__ = [
    "UploadsNotFound",
    "get_upload",
    "get_user_uploads",
    "open_upload",
    "read_upload_bytes",
    "upload_file_type",
    "uploads_for",
]


class UploadsNotFound(LookupError):
    """Some requested uploads do not exist or belong to someone else."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"No such upload{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")


def uploads_for(user) -> QuerySet[Upload]:
    """The user's uploads, newest first (without their cached text, read only when needed)."""
    return Upload.objects.filter(owner=user).order_by("-created", "-id").defer("text")


def get_upload(user, upload_id) -> Upload:
    """One of the user's uploads; ``Upload.DoesNotExist`` for anyone else's or a bad id."""
    key = _as_uuid(upload_id)
    if key is None:
        raise Upload.DoesNotExist(f"{upload_id!r} is not an upload id")
    return uploads_for(user).get(pk=key)


def get_user_uploads(user, ids: Iterable[str | uuid.UUID]) -> list[Upload]:
    """The user's uploads with these ids, in the order given (duplicates dropped).

    Raises ``UploadsNotFound`` listing every id that is malformed, unknown or another
    user's, so the caller can report them all at once.
    """
    wanted: list[tuple[str, uuid.UUID | None]] = []
    seen: set[str] = set()
    for raw in ids:
        key = _as_uuid(raw)
        label = str(key) if key is not None else str(raw)
        if label not in seen:
            seen.add(label)
            wanted.append((label, key))
    keys = [key for _, key in wanted if key is not None]
    found = {str(upload.pk): upload for upload in uploads_for(user).filter(pk__in=keys)}
    missing = [label for label, _ in wanted if label not in found]
    if missing:
        raise UploadsNotFound(missing)
    return [found[label] for label, _ in wanted]


def open_upload(upload: Upload) -> BinaryIO:
    """The stored file, open for binary reading (the caller closes it).

    ``FileNotFoundError`` if the file is gone; ``filenames.UnsafePath`` if the stored name
    would leave the uploads folder (a tampered row).
    """
    return storage.open_for_reading(upload.stored_name)


def read_upload_bytes(upload: Upload) -> bytes:
    """The whole stored file (at most ``UPLOAD_MAX_BYTES``, by construction)."""
    with open_upload(upload) as fh:
        return fh.read()


def upload_file_type(upload: Upload) -> FileType:
    """The type detected from the stored bytes, with the text encoding ``extract`` needs."""
    with open_upload(upload) as fh:
        head = fh.read(HEAD_SIZE)
    return detect(head, upload.stored_name)


def _as_uuid(value) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        return None
