"""Telemetry in the admin: read-only (samples are measurements, not data to edit); superusers
may delete, e.g. a machine's samples after it is retired."""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin

from monitoring.models import GpuSample, HostSample, LoadedModelSample


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_superuser)


class GpuSampleInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = GpuSample
    extra = 0
    can_delete = False
    fields: ClassVar[tuple[str, ...]] = (
        "index",
        "name",
        "memory_used_mb",
        "memory_total_mb",
        "utilization_percent",
        "memory_utilization_percent",
        "temperature_c",
        "power_draw_w",
        "power_limit_w",
        "error",
    )
    readonly_fields = fields


class LoadedModelSampleInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = LoadedModelSample
    extra = 0
    can_delete = False
    fields: ClassVar[tuple[str, ...]] = (
        "ollama_url",
        "model",
        "size",
        "size_vram",
        "expires_at",
        "context_length",
    )
    readonly_fields = fields


@admin.register(HostSample)
class HostSampleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    date_hierarchy = "taken_at"
    list_display = [
        "taken_at",
        "host",
        "ram_used_mb",
        "ram_percent",
        "cpu_percent",
        "load_1",
        "ollama_rss_mb",
        "gpu_available",
    ]
    list_filter = ["host", "gpu_available", "gpus__name"]
    search_fields = ["host"]
    ordering = ["-taken_at"]
    list_per_page = 50
    # The total row count of a week of 5-second samples is not worth a COUNT(*) per page.
    show_full_result_count = False
    inlines = [GpuSampleInline, LoadedModelSampleInline]


@admin.register(GpuSample)
class GpuSampleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    date_hierarchy = "taken_at"
    list_display = [
        "taken_at",
        "host",
        "index",
        "name",
        "memory_used_mb",
        "memory_total_mb",
        "utilization_percent",
        "temperature_c",
        "power_draw_w",
    ]
    list_filter = ["host", "name", "uuid", "index"]
    search_fields = ["host", "name", "uuid"]
    ordering = ["-taken_at", "index"]
    list_per_page = 50
    show_full_result_count = False


@admin.register(LoadedModelSample)
class LoadedModelSampleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    date_hierarchy = "taken_at"
    list_display = ["taken_at", "host", "ollama_url", "model", "size", "size_vram", "expires_at"]
    list_filter = ["host", "ollama_url", "model"]
    search_fields = ["model", "host"]
    ordering = ["-taken_at"]
    list_per_page = 50
    show_full_result_count = False
