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
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        PDF = "pdf", "PDF"
        IMAGE = "image", "Image"

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
        ]

    def __str__(self) -> str:
        return self.original_name

    @property
    def is_image(self) -> bool:
        return self.kind == self.Kind.IMAGE
