"""Where upload files live on disk, and the few file-system operations on them.

Every path goes through ``filenames.safe_join``, so a stored name taken from the database
(or anywhere else) can never point outside MEDIA_ROOT/uploads/. The folder is read from
settings at call time so that tests (and ``MEDIA_ROOT`` changes) are honoured.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from django.conf import settings

from uploads.filenames import safe_join

logger = logging.getLogger(__name__)

SUBDIR = "uploads"
#: Incoming files are written as ``.incoming-*`` next to the final ones (same file system,
#: so the final ``os.link`` is atomic); the leading dot keeps them apart from stored names,
#: which never start with one.
TEMP_PREFIX = ".incoming-"


def upload_dir(*, create: bool = False) -> Path:
    path = Path(settings.MEDIA_ROOT) / SUBDIR
    if create:
        # Owner-only: other local accounts have no business reading users' files.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def path_of(stored_name: str) -> Path:
    """The resolved path of a stored file; ``UnsafePath`` if it would leave the folder."""
    return safe_join(upload_dir(), stored_name)


def link_into_place(temp_path: Path, stored_name: str) -> Path:
    """Give the complete temp file its final name, atomically and without overwriting.

    ``os.link`` fails if the name exists, so two uploads can never clobber each other, and
    the final name only ever points at a complete, fsynced file.
    """
    final = path_of(stored_name)
    temp = safe_join(upload_dir(), Path(temp_path).name)
    os.link(temp, final, follow_symlinks=False)
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    _fsync_dir(final.parent)
    return final


def remove(stored_name: str) -> None:
    """Delete a stored file; a file already gone is not an error."""
    try:
        path_of(stored_name).unlink(missing_ok=True)
    except OSError:
        # The row is gone either way; a leftover file is found by `manage.py uploads_cleanup`.
        logger.exception("could not remove the upload file %r", stored_name)


def open_for_reading(stored_name: str):
    """Open a stored file for binary reading, refusing a symlink in its place."""
    fd = os.open(path_of(stored_name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


def _fsync_dir(path: Path) -> None:
    # Makes the new directory entry durable: without it a crash could lose a file whose
    # row was committed.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
