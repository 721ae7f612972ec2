from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length, Lower
from django.db.models.lookups import Exact, GreaterThan
from django.utils import timezone


class Upload(models.Model):
    """A file a user uploaded, stored as ``MEDIA_ROOT/uploads/<stored_name>``.

    Rows are created only by ``uploads.services.store_upload`` once the file is complete on
    disk; deleting a row (directly, in bulk or by a cascade from its owner) removes the file
    after the transaction commits (see ``uploads.signals``).

    The ``text_*`` fields cache the text a chat gets from the file (``services.upload_text``),
    extracted once, on first use: the text, or why there is none. ``running`` is a lease
    taken by the process extracting it (since ``text_started``), so that other processes
    wait for its outcome instead of parsing the file again.
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        PDF = "pdf", "PDF"
        IMAGE = "image", "Image"

    class TextState(models.TextChoices):
        PENDING = "pending", "Not extracted yet"
        RUNNING = "running", "Being extracted"
        READY = "ready", "Extracted"
        FAILED = "failed", "Unreadable"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    #: The name the client sent, for display and for the download's Content-Disposition.
    #: Never used to build a path.
    original_name = models.CharField(max_length=255)
    #: ``<id hex>_<sanitised name>``: the file's name inside MEDIA_ROOT/uploads/.
    stored_name = models.CharField(max_length=200, unique=True, editable=False)
    size = models.PositiveBigIntegerField(help_text="bytes")
    #: As detected from the content and extension together, never the client's claim.
    content_type = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    sha256 = models.CharField("SHA-256", max_length=64, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    text_state = models.CharField(
        max_length=10, choices=TextState.choices, default=TextState.PENDING, editable=False
    )
    #: At most ``ATTACHMENT_MAX_CHARS`` (as it was when extracted) characters.
    text = models.TextField(blank=True, editable=False)
    text_truncated = models.BooleanField(default=False, editable=False)
    #: Why there is no text: a stable code (``cpu_limit``, ``no_text``, ``pdf_encrypted``...).
    text_error = models.CharField(max_length=32, blank=True, editable=False)
    text_error_detail = models.CharField(max_length=500, blank=True, editable=False)
    #: When the extraction running now began (the lease).
    text_started = models.DateTimeField(null=True, blank=True, editable=False)
    #: When the outcome was cached.
    text_extracted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["owner", "-created"], name="uploads_owner_created_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(size__gt=0), name="uploads_upload_size_positive"),
            models.CheckConstraint(
                condition=Exact(Length("sha256"), 64), name="uploads_upload_sha256_length"
            ),
            models.CheckConstraint(
                condition=Q(sha256=Lower("sha256")), name="uploads_upload_sha256_lowercase"
            ),
            models.CheckConstraint(
                condition=~Q(original_name=""), name="uploads_upload_original_name_not_empty"
            ),
            # "<32 hex>_x" at least, and never anything that could act as a path. (No regex:
            # SQLite's REGEXP exists only inside Django, so other tools could not insert.)
            models.CheckConstraint(
                condition=GreaterThan(Length("stored_name"), 33)
                & ~Q(stored_name__contains="/")
                & ~Q(stored_name__contains="\\")
                & ~Q(stored_name__contains=".."),
                name="uploads_upload_stored_name_safe",
            ),
            models.CheckConstraint(
                condition=~Q(content_type=""), name="uploads_upload_content_type_not_empty"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["text", "pdf", "image"]), name="uploads_upload_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(text_state__in=["pending", "running", "ready", "failed"]),
                name="uploads_upload_text_state_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.original_name

    @property
    def is_image(self) -> bool:
        return self.kind == self.Kind.IMAGE
