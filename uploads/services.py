"""What changes uploads: storing (validation, quota, atomic file + row), deleting, cleanup.

Ordering of a store, so that a failure leaves neither a file nor a row and no reader ever
sees a partial file:

1. the content is complete in a temp file ``.incoming-*`` in the uploads folder (fsynced);
2. it is validated (type by content and extension together, size);
3. it is hard-linked to its final name (``os.link`` refuses to overwrite) and the temp
   name dropped: the final name only ever shows a complete file;
4. in one transaction: the owner's row is locked, the quota checked, the row inserted;
5. if 4 fails in any way, the final file is deleted before the error propagates.

A process killed between 3 and 4 leaves an orphan file (no row), removed later by
``manage.py uploads_cleanup``; the reverse (a row without its file) cannot happen here.
Call ``store_upload`` outside any outer ``transaction.atomic``: a later rollback of an outer
transaction would leave an orphan file (harmless, but cleaned only by the command).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Sum

from uploads import storage
from uploads.errors import FileTooLarge, QuotaExceeded, UploadError
from uploads.filenames import stored_name as make_stored_name
from uploads.filetypes import RejectedFile, validate_file
from uploads.handlers import StreamedUpload
from uploads.models import Upload

logger = logging.getLogger(__name__)

COPY_CHUNK = 64 * 1024


def used_bytes(owner) -> int:
    return Upload.objects.filter(owner=owner).aggregate(total=Sum("size"))["total"] or 0


def store_upload(*, owner, file: UploadedFile) -> Upload:
    """Validate and store ``file`` for ``owner``; raise ``UploadError`` when refused.

    ``file`` is normally the ``StreamedUpload`` the upload handler produced (already on
    disk in the uploads folder, hashed); any other Django ``UploadedFile`` is copied in
    first, with the same size limit.
    """
    # Kept for display and downloads only; control characters (NUL breaks PostgreSQL text)
    # go, as Django's multipart parser already does for names it receives.
    original_name = "".join(ch for ch in file.name or "" if ch.isprintable()).strip()
    if not original_name:
        raise UploadError("no_file", "The file has no name.")
    max_bytes = settings.UPLOAD_MAX_BYTES
    if isinstance(file, StreamedUpload) and file.temp_path.parent == storage.upload_dir():
        temp_path, size, sha256 = file.temp_path, file.received_size, file.sha256
        owned_temp = False
    else:
        temp_path, size, sha256 = _spool(file, max_bytes)
        owned_temp = True
    try:
        if size > max_bytes:
            raise FileTooLarge(max_bytes)
        try:
            file_type = validate_file(temp_path, original_name)
        except RejectedFile as exc:
            raise UploadError(exc.code, exc.message) from exc

        upload_id = uuid.uuid4()
        name = make_stored_name(original_name, upload_id.hex)
        storage.link_into_place(temp_path, name)
        if isinstance(file, StreamedUpload) and not owned_temp:
            file.mark_stored()
    finally:
        if owned_temp:
            with contextlib.suppress(FileNotFoundError):
                temp_path.unlink()

    try:
        with transaction.atomic():
            _lock_owner(owner)
            used = used_bytes(owner)
            quota = settings.UPLOAD_QUOTA_BYTES
            if used + size > quota:
                raise QuotaExceeded(size=size, used=used, quota=quota)
            return Upload.objects.create(
                id=upload_id,
                owner=owner,
                original_name=original_name[:255],
                stored_name=name,
                size=size,
                content_type=file_type.content_type,
                kind=file_type.kind,
                sha256=sha256,
            )
    except BaseException:
        storage.remove(name)
        raise


def delete_upload(upload: Upload) -> None:
    """Delete the row now and its file once the transaction commits.

    The file removal itself is the ``post_delete`` receiver's job (``uploads.signals``),
    so bulk deletes in the admin and cascades from a deleted user behave the same.
    """
    with transaction.atomic():
        upload.delete()


@dataclass(frozen=True)
class CleanupReport:
    removed_temp: list[str]
    removed_orphans: list[str]
    missing_files: list[str]  # stored names of rows whose file is gone


def cleanup(*, older_than_seconds: float = 3600, dry_run: bool = False) -> CleanupReport:
    """Remove leftovers of crashed processes: stale temp files and files without a row.

    Only files older than ``older_than_seconds`` are touched, so an upload in progress
    (whose file is linked a moment before its row commits) is never taken for an orphan.
    """
    directory = storage.upload_dir()
    if not directory.is_dir():
        return CleanupReport([], [], [])
    cutoff = time.time() - older_than_seconds
    known = set(Upload.objects.values_list("stored_name", flat=True))
    removed_temp, removed_orphans = [], []
    for entry in os.scandir(directory):
        if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime > cutoff:
            continue
        if entry.name.startswith(storage.TEMP_PREFIX):
            removed_temp.append(entry.name)
        elif entry.name not in known:
            removed_orphans.append(entry.name)
        else:
            continue
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    missing = sorted(name for name in known if not (directory / name).exists())
    return CleanupReport(sorted(removed_temp), sorted(removed_orphans), missing)


def _lock_owner(owner) -> None:
    # Serialises one user's concurrent uploads so that two of them cannot both pass the
    # quota check. PostgreSQL: a row lock; SQLite: a no-op, but its transactions are
    # IMMEDIATE here (settings), which already serialises writers.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk").first()


def _spool(file: UploadedFile, max_bytes: int) -> tuple[Path, int, str]:
    directory = storage.upload_dir(create=True)
    fd, name = tempfile.mkstemp(prefix=storage.TEMP_PREFIX, dir=directory)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in file.chunks(COPY_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(max_bytes)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size, digest.hexdigest()
