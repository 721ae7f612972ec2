"""Telemetry in the admin: read-only (samples are measurements, not data to edit); superusers
may delete, e.g. a machine's samples after it is retired."""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin

from config.admin_display import RoundedFieldsMixin, rounded
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
        "memory_used_mb_rounded",
        "memory_total_mb_rounded",
        "utilization_percent",
        "memory_utilization_percent",
        "temperature_c",
        "power_draw_w_rounded",
        "power_limit_w_rounded",
        "error",
    )
    readonly_fields = fields
    memory_used_mb_rounded = rounded("memory_used_mb", 0, " MB", "memory used")
    memory_total_mb_rounded = rounded("memory_total_mb", 0, " MB", "memory total")
    power_draw_w_rounded = rounded("power_draw_w", 1, " W", "power draw")
    power_limit_w_rounded = rounded("power_limit_w", 1, " W", "power limit")


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
class HostSampleAdmin(RoundedFieldsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    date_hierarchy = "taken_at"
    list_display = [
        "taken_at",
        "host",
        "ram_used_mb_rounded",
        "ram_percent_rounded",
        "cpu_percent_rounded",
        "load_1_rounded",
        "ollama_rss_mb_rounded",
        "gpu_available",
    ]
    ram_used_mb_rounded = rounded("ram_used_mb", 0, " MB", "RAM used")
    ram_percent_rounded = rounded("ram_percent", 1, " %", "RAM")
    cpu_percent_rounded = rounded("cpu_percent", 1, " %", "CPU")
    load_1_rounded = rounded("load_1", 2, "", "load (1 min)")
    ollama_rss_mb_rounded = rounded("ollama_rss_mb", 0, " MB", "Ollama RSS")
    ram_total_mb_rounded = rounded("ram_total_mb", 0, " MB", "RAM total")
    ram_available_mb_rounded = rounded("ram_available_mb", 0, " MB", "RAM available")
    swap_total_mb_rounded = rounded("swap_total_mb", 0, " MB", "swap total")
    swap_used_mb_rounded = rounded("swap_used_mb", 0, " MB", "swap used")
    swap_percent_rounded = rounded("swap_percent", 1, " %", "swap")
    load_5_rounded = rounded("load_5", 2, "", "load (5 min)")
    load_15_rounded = rounded("load_15", 2, "", "load (15 min)")
    list_filter = ["host", "gpu_available", "gpus__name"]
    search_fields = ["host"]
    ordering = ["-taken_at"]
    list_per_page = 50
    # The total row count of a week of 5-second samples is not worth a COUNT(*) per page.
    show_full_result_count = False
    inlines = [GpuSampleInline, LoadedModelSampleInline]


@admin.register(GpuSample)
class GpuSampleAdmin(RoundedFieldsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    date_hierarchy = "taken_at"
    list_display = [
        "taken_at",
        "host",
        "index",
        "name",
        "memory_used_mb_rounded",
        "memory_total_mb_rounded",
        "utilization_percent",
        "temperature_c",
        "power_draw_w_rounded",
    ]
    memory_used_mb_rounded = rounded("memory_used_mb", 0, " MB", "memory used")
    memory_total_mb_rounded = rounded("memory_total_mb", 0, " MB", "memory total")
    power_draw_w_rounded = rounded("power_draw_w", 1, " W", "power draw")
    power_limit_w_rounded = rounded("power_limit_w", 1, " W", "power limit")
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
