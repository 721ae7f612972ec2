"""Uploads attached to a chat message: text goes into the context, images to vision models."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chat.errors import ChatRequestError
from uploads.extract import ExtractionError
from uploads.selectors import (
    UploadsNotFound,
    extract_upload_text,
    get_user_uploads,
    read_upload_bytes,
)

MAX_ATTACHMENTS = 10


@dataclass
class Attached:
    texts: list[str] = field(default_factory=list)  # blocks for the user message's context
    images: list[str] = field(default_factory=list)  # base64, for Ollama's `images`
    records: list[dict[str, Any]] = field(default_factory=list)  # what the message keeps


def _load(user_id: int, ids: Sequence[UUID]) -> Attached:
    user = get_user_model()(pk=user_id)
    try:
        uploads = get_user_uploads(user, ids)
    except UploadsNotFound as exc:
        raise ChatRequestError(
            "attachment_not_found",
            f"Attachment not found: {', '.join(exc.missing)}.",
            404,
            extra={"attachments": list(exc.missing)},
        ) from None
    attached = Attached()
    for upload in uploads:
        try:
            kind = upload.kind  # detected from the bytes when it was uploaded
            record = {
                "id": str(upload.pk),
                "name": upload.original_name,
                "content_type": upload.content_type,
                "size": upload.size,
                "kind": kind,
            }
            if kind == "image":
                attached.images.append(base64.b64encode(read_upload_bytes(upload)).decode())
            else:
                extracted = extract_upload_text(upload)
                note = " (truncated)" if extracted.truncated else ""
                attached.texts.append(
                    f'<attachment name="{upload.original_name}"{note}>\n'
                    f"{extracted.text}\n</attachment>"
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
            raise ChatRequestError(
                "attachment_unreadable",
                f"{upload.original_name}: {exc}",
                400,
                extra={"attachments": [str(upload.pk)]},
            ) from None
        attached.records.append(record)
    return attached


async def load_attachments(user_id: int, ids: Sequence[UUID]) -> Attached:
    if len(ids) > MAX_ATTACHMENTS:
        raise ChatRequestError(
            "too_many_attachments", f"At most {MAX_ATTACHMENTS} attachments per message.", 400
        )
    if not ids:
        return Attached()
    # Files, the database and pypdf block: they run in a thread, never on the event loop.
    return await sync_to_async(_load)(user_id, list(ids))


def with_attachments(message: str, texts: Sequence[str]) -> str:
    if not texts:
        return message
    return message + "\n\n" + "\n\n".join(texts)
