"""Telemetry samples: one HostSample per machine and sampling tick, with its GPUs and the models
each Ollama server had loaded at that moment.

"MB" is MiB, as in the probes. A figure the probe could not read is NULL, never 0: a chart must
show a gap, not a fake drop. The invariants (percentages within 0..100, no negative memory) are
CHECK constraints, so a bug anywhere (or a hand-written INSERT) cannot store nonsense.

``GpuSample`` and ``LoadedModelSample`` repeat their sample's ``host`` and ``taken_at``: the time
series and summaries filter and bucket them on their own (host, taken_at) index without a join.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


def _percent(field: str, name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__gte": 0, f"{field}__lte": 100}),
        name=name,
    )


def _non_negative(field: str, name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__gte": 0}), name=name
    )


class HostSample(models.Model):
    host = models.CharField(max_length=255, help_text="TELEMETRY_HOST of the machine sampled")
    taken_at = models.DateTimeField()
    # The Celery task that recorded it: a redelivered message (acks_late) must not record twice.
    task_id = models.CharField(max_length=255, blank=True, default="", editable=False)

    ram_total_mb = models.FloatField(null=True, blank=True)
    ram_used_mb = models.FloatField(null=True, blank=True)
    ram_available_mb = models.FloatField(null=True, blank=True)
    ram_percent = models.FloatField(null=True, blank=True)
    swap_total_mb = models.FloatField(null=True, blank=True)
    swap_used_mb = models.FloatField(null=True, blank=True)
    swap_percent = models.FloatField(null=True, blank=True)

    cpu_count = models.PositiveSmallIntegerField(null=True, blank=True)
    cpu_percent = models.FloatField(null=True, blank=True)
    cpu_per_core = models.JSONField(default=list, blank=True)
    load_1 = models.FloatField(null=True, blank=True)
    load_5 = models.FloatField(null=True, blank=True)
    load_15 = models.FloatField(null=True, blank=True)

    ollama_rss_mb = models.FloatField(
        null=True, blank=True, help_text="resident memory of the Ollama processes on this machine"
    )
    ollama_process_count = models.PositiveIntegerField(default=0)

    gpu_available = models.BooleanField(default=False)
    gpu_reason = models.TextField(blank=True, default="")
    gpu_driver_version = models.CharField(max_length=64, blank=True, default="")

    # One entry per Ollama server asked: {"url", "available", "reason", "models", "elapsed_ms"}.
    ollama_status = models.JSONField(default=list, blank=True)
    # Part ("host", "ram", "cpu", "gpu", "ollama", "gpu0.power_draw_w", ...) -> why that figure
    # is missing or partial (a failed probe, the first CPU reading, a value out of range).
    notes = models.JSONField(default=dict, blank=True)

    # Not columns: set by the latest view (monitoring.api.LatestView) on the samples it returns.
    age_seconds: float
    stale: bool

    class Meta:
        ordering = ["-taken_at", "-id"]
        get_latest_by = "taken_at"
        indexes = [
            models.Index(fields=["host", "taken_at"], name="mon_hostsample_host_taken"),
            # Pruning scans by age across every host.
            models.Index(fields=["taken_at"], name="mon_hostsample_taken"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["task_id"],
                condition=~Q(task_id=""),
                name="mon_hostsample_task_once",
            ),
            _percent("ram_percent", "mon_host_ram_percent_range"),
            _percent("swap_percent", "mon_host_swap_percent_range"),
            _percent("cpu_percent", "mon_host_cpu_percent_range"),
            _non_negative("ram_total_mb", "mon_host_ram_total_nonneg"),
            _non_negative("ram_used_mb", "mon_host_ram_used_nonneg"),
            _non_negative("ram_available_mb", "mon_host_ram_avail_nonneg"),
            _non_negative("swap_total_mb", "mon_host_swap_total_nonneg"),
            _non_negative("swap_used_mb", "mon_host_swap_used_nonneg"),
            _non_negative("ollama_rss_mb", "mon_host_ollama_rss_nonneg"),
            _non_negative("load_1", "mon_host_load1_nonneg"),
            _non_negative("load_5", "mon_host_load5_nonneg"),
            _non_negative("load_15", "mon_host_load15_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.host} @ {self.taken_at:%Y-%m-%d %H:%M:%S}"


class GpuSample(models.Model):
    host_sample = models.ForeignKey(HostSample, on_delete=models.CASCADE, related_name="gpus")
    host = models.CharField(max_length=255)
    taken_at = models.DateTimeField()

    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=96, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    memory_used_mb = models.FloatField(null=True, blank=True)
    memory_total_mb = models.FloatField(null=True, blank=True)
    utilization_percent = models.SmallIntegerField(null=True, blank=True)
    memory_utilization_percent = models.SmallIntegerField(null=True, blank=True)
    temperature_c = models.SmallIntegerField(null=True, blank=True)
    power_draw_w = models.FloatField(null=True, blank=True)
    power_limit_w = models.FloatField(null=True, blank=True)
    # No upper bound: NVML documents fan speeds above 100 % on some boards.
    fan_speed_percent = models.SmallIntegerField(null=True, blank=True)
    # The device-level failure (lost, needs a reset), or the queries that failed.
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-taken_at", "index"]
        indexes = [
            models.Index(fields=["host", "taken_at"], name="mon_gpusample_host_taken"),
            models.Index(fields=["uuid", "taken_at"], name="mon_gpusample_uuid_taken"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["host_sample", "index"], name="mon_gpu_once_per_sample"
            ),
            _percent("utilization_percent", "mon_gpu_util_range"),
            _percent("memory_utilization_percent", "mon_gpu_mem_util_range"),
            _non_negative("memory_used_mb", "mon_gpu_mem_used_nonneg"),
            _non_negative("memory_total_mb", "mon_gpu_mem_total_nonneg"),
            _non_negative("power_draw_w", "mon_gpu_power_draw_nonneg"),
            _non_negative("power_limit_w", "mon_gpu_power_limit_nonneg"),
            _non_negative("fan_speed_percent", "mon_gpu_fan_nonneg"),
        ]

    def __str__(self) -> str:
        return f"GPU {self.index} ({self.name or self.uuid or '?'}) on {self.host}"


class LoadedModelSample(models.Model):
    host_sample = models.ForeignKey(
        HostSample, on_delete=models.CASCADE, related_name="loaded_models"
    )
    host = models.CharField(max_length=255)
    taken_at = models.DateTimeField()

    ollama_url = models.CharField(max_length=500)
    model = models.CharField(max_length=255)
    size = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    size_vram = models.BigIntegerField(null=True, blank=True, help_text="bytes in GPU memory")
    expires_at = models.DateTimeField(null=True, blank=True)
    context_length = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-taken_at", "ollama_url", "model"]
        indexes = [
            models.Index(fields=["host", "taken_at"], name="mon_loadedmodel_host_taken"),
            models.Index(fields=["model", "taken_at"], name="mon_loadedmodel_model_taken"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["host_sample", "ollama_url", "model"], name="mon_model_once_per_sample"
            ),
            _non_negative("size", "mon_model_size_nonneg"),
            _non_negative("size_vram", "mon_model_size_vram_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.ollama_url}"
