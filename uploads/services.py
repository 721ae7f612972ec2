"""What changes uploads: storing (validation, quota, atomic file + row), deleting, cleanup,
and the text a chat gets from a file (extracted once, cached on the row: ``upload_text``).

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

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from config import database
from uploads import sandbox, storage
from uploads.errors import FileTooLarge, QuotaExceeded, UploadError
from uploads.extract import ExtractedText, ExtractionError, extract_text
from uploads.filenames import stored_name as make_stored_name
from uploads.filetypes import RejectedFile, validate_file
from uploads.handlers import StreamedUpload
from uploads.models import Upload
from uploads.selectors import upload_file_type

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


# --------------------------------------------------------------------------- text for the chat

#: Failures that say nothing about the file: not cached, the next use tries again.
TRANSIENT_ERRORS = frozenset({"spawn_failed", "interrupted"})
#: How often a process waiting for another one's extraction looks at the row.
POLL_SECONDS = 0.2
#: A lease outlives the wall-clock limit by this much before another process may take over
#: (its holder died, or the database write of its outcome failed).
LEASE_MARGIN_SECONDS = 10.0

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class _TextRow:
    state: str
    text: str
    truncated: bool
    error: str
    detail: str
    started: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in (Upload.TextState.READY, Upload.TextState.FAILED)

    def busy(self, now: datetime) -> bool:
        """Another process holds a lease that has not expired."""
        return (
            self.state == Upload.TextState.RUNNING
            and self.started is not None
            and self.started >= now - _lease()
        )

    def outcome(self) -> ExtractedText:
        if self.state == Upload.TextState.FAILED:
            raise ExtractionError(self.error, self.detail)
        max_chars = settings.ATTACHMENT_MAX_CHARS
        return ExtractedText(
            text=self.text[:max_chars],
            truncated=self.truncated or len(self.text) > max_chars,
            chars_total=None,
        )


async def upload_text(upload: Upload) -> ExtractedText:
    """The text of a text or PDF upload for a chat's context, extracted at most once.

    The first use extracts it (a text file in a thread; a PDF in a child process with
    ``UPLOAD_EXTRACT_*`` limits, at most ``UPLOAD_EXTRACT_CONCURRENCY`` at once per process)
    and caches the outcome on the row, failures included; later uses, in any process, read
    the row. A process that finds another one extracting waits for its outcome.

    Raises ``ExtractionError`` (a limit hit: ``cpu_limit``, ``memory_limit``,
    ``wall_limit``; ``no_text``, ``not_text``, ``pdf_encrypted``, ``pdf_invalid``,
    ``invalid_encoding``, ``extraction_failed``; not cached: ``spawn_failed``, ``interrupted``)
    and ``FileNotFoundError`` when the file (or the row) is gone. Never blocks the event loop;
    cancelled, it kills the child and leaves the text to the next use.
    """
    while True:
        row = await database.run(_text_row, upload.pk)
        if row.finished:
            return row.outcome()
        if not row.busy(timezone.now()):
            async with _slot(upload):
                row, claimed = await database.run(_claim_text, upload.pk)
                if claimed:
                    assert row.started is not None
                    return await _extract_and_cache(upload, row.started)
            if row.finished:
                return row.outcome()
        await asyncio.sleep(POLL_SECONDS)


def forget_text(uploads: QuerySet[Upload]) -> int:
    """Drop the cached text (or failure): the next use extracts it again."""
    return uploads.exclude(text_state=Upload.TextState.RUNNING).update(
        text_state=Upload.TextState.PENDING,
        text="",
        text_truncated=False,
        text_error="",
        text_error_detail="",
        text_started=None,
        text_extracted_at=None,
    )


def extraction_limits() -> sandbox.Limits:
    return sandbox.Limits(
        cpu_seconds=settings.UPLOAD_EXTRACT_CPU_SECONDS,
        wall_seconds=settings.UPLOAD_EXTRACT_WALL_SECONDS,
        memory_bytes=settings.UPLOAD_EXTRACT_MEMORY_MB * 1024 * 1024,
    )


def _lease() -> timedelta:
    return timedelta(seconds=settings.UPLOAD_EXTRACT_WALL_SECONDS + LEASE_MARGIN_SECONDS)


def _slot(upload: Upload) -> Any:
    """PDFs take a slot of this process's event loop; text files are cheap (no slot)."""
    if upload.kind != Upload.Kind.PDF:
        return contextlib.nullcontext()
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(settings.UPLOAD_EXTRACT_CONCURRENCY)
    return slot


async def _extract_and_cache(upload: Upload, started: datetime) -> ExtractedText:
    try:
        result = _checked(await _extract(upload))
    except ExtractionError as exc:
        if exc.code in TRANSIENT_ERRORS:
            await _release_quietly(upload.pk, started)
        else:
            logger.info("upload %s: no text (%s): %s", upload.pk, exc.code, exc.message)
            await database.run(_save_failure, upload.pk, exc)
        raise
    except BaseException:
        # The file is gone, the database failed, the caller was cancelled (a client gone, a
        # shutdown): nothing learnt about the file, so the next use extracts it.
        await _release_quietly(upload.pk, started)
        raise
    await database.run(_save_text, upload.pk, result)
    return result


async def _extract(upload: Upload) -> ExtractedText:
    max_chars = settings.ATTACHMENT_MAX_CHARS
    if upload.kind == Upload.Kind.PDF:
        with storage.open_for_reading(upload.stored_name) as file:
            return await sandbox.extract_pdf(
                file,
                max_chars=max_chars,
                max_pages=settings.UPLOAD_EXTRACT_MAX_PAGES,
                limits=extraction_limits(),
            )
    if upload.kind == Upload.Kind.TEXT:
        # At most UPLOAD_MAX_BYTES of text to decode: cheap, no child needed.
        return await asyncio.to_thread(_extract_plain, upload, max_chars)
    raise ExtractionError(
        "not_text", f"{upload.content_type} files are sent to the model as images, not as text"
    )


def _extract_plain(upload: Upload, max_chars: int) -> ExtractedText:
    try:
        file_type = upload_file_type(upload)
    except RejectedFile as exc:  # the file changed on disk since it was accepted
        raise ExtractionError(exc.code, exc.message) from exc
    return extract_text(storage.path_of(upload.stored_name), file_type, max_chars=max_chars)


def _checked(result: ExtractedText) -> ExtractedText:
    # PostgreSQL's text holds neither NUL nor lone surrogates (a PDF's text may have both).
    text = result.text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if not text.strip():
        pages_read, pages_total = result.pages_read, result.pages_total
        if pages_read is not None and pages_total is not None and pages_read < pages_total:
            raise ExtractionError(
                "no_text",
                f"there is no text in its first {pages_read} pages (of {pages_total}; the "
                f"page limit is {settings.UPLOAD_EXTRACT_MAX_PAGES})",
            )
        if pages_total is None:
            raise ExtractionError("no_text", "it holds nothing but blank space")
        raise ExtractionError("no_text", "it has no text to read (a scan, or only images)")
    if text == result.text:
        return result
    return ExtractedText(
        text, result.truncated, result.chars_total, result.pages_read, result.pages_total
    )


_TEXT_FIELDS = (
    "text_state",
    "text",
    "text_truncated",
    "text_error",
    "text_error_detail",
    "text_started",
)


def _text_row(pk: Any) -> _TextRow:
    values = Upload.objects.filter(pk=pk).values_list(*_TEXT_FIELDS).first()
    if values is None:
        raise FileNotFoundError(f"upload {pk} was deleted")
    return _TextRow(*values)


def _claim_text(pk: Any) -> tuple[_TextRow, bool]:
    """Take the lease if the text is pending or its lease expired."""
    now = timezone.now()
    claimed = (
        Upload.objects.filter(pk=pk)
        .filter(
            Q(text_state=Upload.TextState.PENDING)
            | Q(text_state=Upload.TextState.RUNNING, text_started__lt=now - _lease())
            | Q(text_state=Upload.TextState.RUNNING, text_started__isnull=True)
        )
        .update(text_state=Upload.TextState.RUNNING, text_started=now)
    )
    return _text_row(pk), bool(claimed)


def _save_text(pk: Any, result: ExtractedText) -> None:
    Upload.objects.filter(pk=pk).update(
        text_state=Upload.TextState.READY,
        text=result.text,
        text_truncated=result.truncated,
        text_error="",
        text_error_detail="",
        text_started=None,
        text_extracted_at=timezone.now(),
    )


def _save_failure(pk: Any, error: ExtractionError) -> None:
    Upload.objects.filter(pk=pk).update(
        text_state=Upload.TextState.FAILED,
        text="",
        text_truncated=False,
        text_error=error.code[:32],
        text_error_detail=_clip(error.message, 500),
        text_started=None,
        text_extracted_at=timezone.now(),
    )


def _release(pk: Any, started: datetime) -> None:
    Upload.objects.filter(pk=pk, text_state=Upload.TextState.RUNNING, text_started=started).update(
        text_state=Upload.TextState.PENDING, text_started=None
    )


async def _release_quietly(pk: Any, started: datetime) -> None:
    # Best effort: if this fails (or the loop stops first), the lease expires instead.
    try:
        await asyncio.shield(database.run(_release, pk, started))
    except asyncio.CancelledError:
        pass  # cancelled again: the shielded release goes on without us
    except Exception:
        logger.warning("upload %s: could not release the text lease", pk, exc_info=True)


def _clip(text: str, length: int) -> str:
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= length else text[: length - 1] + "\u2026"
