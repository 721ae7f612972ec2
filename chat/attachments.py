"""Uploads attached to a chat message: text goes into the context, images to vision models."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model

from chat.errors import ChatRequestError
from config import database
from uploads.extract import ExtractionError
from uploads.models import Upload
from uploads.selectors import UploadsNotFound, get_user_uploads, read_upload_bytes
from uploads.services import TRANSIENT_ERRORS, upload_text

MAX_ATTACHMENTS = 10


@dataclass
class Attached:
    texts: list[str] = field(default_factory=list)  # blocks for the user message's context
    images: list[str] = field(default_factory=list)  # base64, for Ollama's `images`
    records: list[dict[str, Any]] = field(default_factory=list)  # what the message keeps


def _find(user_id: int, ids: Sequence[UUID]) -> list[Upload]:
    try:
        return get_user_uploads(get_user_model()(pk=user_id), ids)
    except UploadsNotFound as exc:
        raise ChatRequestError(
            "attachment_not_found",
            f"Attachment not found: {', '.join(exc.missing)}.",
            404,
            extra={"attachments": list(exc.missing)},
        ) from None


def _image_b64(upload: Upload) -> str:
    return base64.b64encode(read_upload_bytes(upload)).decode()


async def _attach(attached: Attached, upload: Upload) -> None:
    kind = upload.kind  # detected from the bytes when it was uploaded
    record: dict[str, Any] = {
        "id": str(upload.pk),
        "name": upload.original_name,
        "content_type": upload.content_type,
        "size": upload.size,
        "kind": kind,
    }
    try:
        if kind == Upload.Kind.IMAGE:
            attached.images.append(await asyncio.to_thread(_image_b64, upload))
        else:
            # Extracted once per file (a PDF in a child process with CPU, memory and time
            # limits), then read from the upload's row.
            extracted = await upload_text(upload)
            note = " (truncated)" if extracted.truncated else ""
            attached.texts.append(
                f'<attachment name="{upload.original_name}"{note}>\n{extracted.text}\n</attachment>'
            )
            record["truncated"] = extracted.truncated
    except FileNotFoundError:
        raise ChatRequestError(
            "attachment_missing",
            f"The file of {upload.original_name} is missing.",
            410,
            extra={"attachments": [str(upload.pk)]},
        ) from None
    except ExtractionError as exc:
        if exc.code in TRANSIENT_ERRORS:  # the server's trouble, not the file's
            raise ChatRequestError(
                "attachment_unavailable",
                f"{upload.original_name}: {exc.message}; try again in a moment.",
                503,
                retry_after=5,
                extra={"attachments": [str(upload.pk)]},
            ) from None
        # The detail says which limit was hit, or why there is no text; `reason` is its code.
        raise ChatRequestError(
            "attachment_unreadable",
            f"{upload.original_name}: {exc.message.rstrip('.')}.",
            400,
            extra={"attachments": [str(upload.pk)], "reason": exc.code},
        ) from None
    attached.records.append(record)


async def load_attachments(user_id: int, ids: Sequence[UUID]) -> Attached:
    if len(ids) > MAX_ATTACHMENTS:
        raise ChatRequestError(
            "too_many_attachments", f"At most {MAX_ATTACHMENTS} attachments per message.", 400
        )
    if not ids:
        return Attached()
    # The database and files are read in threads, PDFs parsed in child processes: nothing
    # blocks the event loop, and no thread waits for a PDF.
    attached = Attached()
    for upload in await database.run(_find, user_id, list(ids)):
        await _attach(attached, upload)
    return attached


def with_attachments(message: str, texts: Sequence[str]) -> str:
    if not texts:
        return message
    return message + "\n\n" + "\n\n".join(texts)
