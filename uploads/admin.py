from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from uploads.models import Upload
from uploads.services import forget_text

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
    "text_state",
    "text_error",
    "text_error_detail",
    "text_truncated",
    "text_extracted_at",
    "text",
)


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    """List, filter, search and delete; nothing is editable.

    Files enter only through the API (which validates them), and the stored name, size
    and hash describe the bytes on disk: editing them would make the row lie. Deleting
    (one or in bulk) removes the file after the commit (uploads.signals).

    The text cached for chats (or why a file has none) is shown; "Read the text again" drops
    it, e.g. after raising a limit, so the next use extracts it anew.
    """

    list_display = [
        "original_name",
        "owner",
        "kind",
        "content_type",
        "human_size",
        "text_state",
        "created",
    ]
    list_filter = ["kind", "text_state", "text_error", "content_type", "created"]
    search_fields = ["original_name", "owner__email", "sha256", "stored_name"]
    list_select_related = ["owner"]
    date_hierarchy = "created"
    ordering = ["-created"]
    fields = _FIELDS
    readonly_fields = _FIELDS
    actions = ["read_text_again"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("text")

    @admin.action(description="Read the text again on next use", permissions=["delete"])
    def read_text_again(self, request, queryset) -> None:
        count = forget_text(queryset)
        self.message_user(request, f"The text of {count} upload(s) will be read again.")

    @admin.display(description="size", ordering="size")
    def human_size(self, upload: Upload) -> str:
        return filesizeformat(upload.size)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
