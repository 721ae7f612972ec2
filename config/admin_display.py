"""Small helpers for the admin pages: figures rounded for people, and records shown without
Save buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin


def rounded(field: str, places: int = 1, unit: str = "", description: str = "") -> Callable:
    """An admin column (or read-only field) showing a float field with `places` decimals and a
    unit: Django shows floats with every digit (`12.345678901`), which nobody reads. Assign it
    to a ModelAdmin attribute and name that attribute in `list_display` or `readonly_fields`."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def show(_admin: Any, obj: Any) -> str:
        value = getattr(obj, field)
        if value is None:
            return "-"
        return f"{value:,.{places}f}{unit}"

    show.__name__ = f"{field}_rounded"
    return show


class NoSaveMixin:
    """For records whose every field is read-only but whose change permission still matters
    (an admin action needs it): the change page offers Close instead of Save buttons that
    would save nothing."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


class RoundedFieldsMixin:
    """On the change (or view) page, each field that has a `<name>_rounded` column on the admin
    is shown through it, so a record's page rounds the figures its list does."""

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)  # type: ignore[misc]
        return [
            f"{name}_rounded"
            if isinstance(name, str) and hasattr(self, f"{name}_rounded")
            else name
            for name in fields
        ]
