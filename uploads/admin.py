from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from uploads.models import Upload

# Shown, all read-only (a tuple: the admin stubs type `fields` as a list of field groups).
_FIELDS = (
    "id",
    "owner",
    "original_name",
    "stored_name",
    "kind",
    "content_type",
    "size",
    "sha256",
    "created",
)


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    """List, filter, search and delete; nothing is editable.

    Files enter only through the API (which validates them), and the stored name, size
    and hash describe the bytes on disk: editing them would make the row lie. Deleting
    (one or in bulk) removes the file after the commit (uploads.signals).
    """

    list_display = ["original_name", "owner", "kind", "content_type", "human_size", "created"]
    list_filter = ["kind", "content_type", "created"]
    search_fields = ["original_name", "owner__email", "sha256", "stored_name"]
    list_select_related = ["owner"]
    date_hierarchy = "created"
    ordering = ["-created"]
    fields = _FIELDS
    readonly_fields = _FIELDS

    @admin.display(description="size", ordering="size")
    def human_size(self, upload: Upload) -> str:
        return filesizeformat(upload.size)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
