"""Telemetry: take and store samples, publish them live and prune them.

The Celery tasks (``monitoring.tasks``) are thin wrappers around these functions. Reading the
samples back (latest values, bucketed time series, summaries) is in
:mod:`monitoring.selectors.samples`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.probes import (
    GpuProbe,
    GpuReport,
    HostProbe,
    HostReport,
    OllamaPsProbe,
    OllamaPsReport,
    default_gpu_probe,
    default_host_probe,
)
from core.probes._common import describe_exception
from monitoring.models import GpuSample, HostSample, LoadedModelSample
from monitoring.selectors.samples import find_sample, sample_payload

logger = logging.getLogger(__name__)

#: The channel-layer group every dashboard socket joins.
GROUP = "monitoring"
#: How long one probe may take before its part of the sample is marked unavailable. The probes
#: bound themselves (Ollama: OLLAMA_PS_TIMEOUT); this also covers a GPU driver that hangs.
PROBE_TIMEOUT = 10.0
OLLAMA_PS_TIMEOUT = 3.0
PUBLISH_TIMEOUT = 2.0

PRUNE_BATCH_SIZE = 1000
PRUNE_MAX_SECONDS = 120.0


# --------------------------------------------------------------------------- probing


@dataclass
class Probes:
    """What one sample is made of. Every part is optional so tests can inject fakes."""

    gpu: GpuProbe | None = None
    host: HostProbe | None = None
    ollama: OllamaPsProbe | None = None
    ollama_urls: list[str] | None = None


@dataclass
class Collected:
    host: HostReport | None
    gpu: GpuReport
    ollama: list[OllamaPsReport]
    #: Part -> why the whole probe failed (it raised or did not answer in time).
    failures: dict[str, str] = field(default_factory=dict)


def _run_bounded(jobs: dict[str, Callable[[], Any]], timeout: float) -> dict[str, Any]:
    """Run the jobs in parallel daemon threads; name -> result, or an Exception / TimeoutError.

    Daemon threads rather than a pool: a probe stuck in the GPU driver must neither block the
    task past ``timeout`` nor keep the worker from shutting down.
    """
    boxes: dict[str, dict[str, Any]] = {name: {} for name in jobs}

    def run(name: str, job: Callable[[], Any]) -> None:
        try:
            boxes[name]["value"] = job()
        except BaseException as exc:  # reported to the caller, never lost in a thread
            boxes[name]["error"] = exc

    threads = {
        name: threading.Thread(target=run, args=(name, job), name=f"telemetry-{name}", daemon=True)
        for name, job in jobs.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    results: dict[str, Any] = {}
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        box = boxes[name]
        if thread.is_alive():
            results[name] = TimeoutError(f"no answer within {timeout:g} s")
        elif "error" in box:
            results[name] = box["error"]
        else:
            results[name] = box.get("value")
    return results


def collect(probes: Probes | None = None, *, timeout: float = PROBE_TIMEOUT) -> Collected:
    """Run the host, GPU and Ollama probes side by side. Never raises: a probe that fails or
    hangs leaves its part empty with the reason in ``failures``."""
    probes = probes or Probes()
    urls = list(
        probes.ollama_urls if probes.ollama_urls is not None else settings.TELEMETRY_OLLAMA_URLS
    )
    ollama_probe = probes.ollama or OllamaPsProbe(timeout=OLLAMA_PS_TIMEOUT)
    results = _run_bounded(
        {
            "host": lambda: (probes.host or default_host_probe()).probe(),
            "gpu": lambda: (probes.gpu or default_gpu_probe()).probe(),
            "ollama": lambda: ollama_probe.probe_many(urls),
        },
        timeout,
    )
    failures: dict[str, str] = {}

    def take(name: str, expected: type) -> Any:
        value = results[name]
        if isinstance(value, BaseException) or not isinstance(value, expected):
            reason = (
                describe_exception(value)
                if isinstance(value, BaseException)
                else f"unexpected result {type(value).__name__}"
            )
            failures[name] = f"{name} probe failed: {reason}"
            logger.warning("telemetry: %s", failures[name])
            return None
        return value

    host = take("host", HostReport)
    gpu = take("gpu", GpuReport) or GpuReport.unavailable(failures["gpu"])
    ollama = take("ollama", list)
    if ollama is None:
        ollama = [
            OllamaPsReport(url=url, available=False, reason=failures["ollama"]) for url in urls
        ]
    return Collected(host=host, gpu=gpu, ollama=ollama, failures=failures)


# --------------------------------------------------------------------------- recording


def _bounded(
    value: Any, label: str, notes: dict[str, str], *, high: float | None = None
) -> float | None:
    """The value if it is a finite number within [0, high]; else None, with a note.

    A figure out of range would break the CHECK constraint and lose the whole sample; losing
    just that figure is better.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        notes[label] = f"not a number: {value!r}"
        return None
    if value < 0 or (high is not None and value > high):
        notes[label] = f"out of range: {value!r}"
        return None
    return value


def _parse_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _host_fields(report: HostReport | None, notes: dict[str, str]) -> dict[str, Any]:
    if report is None:
        return {}
    ram, swap, cpu, load = report.ram, report.swap, report.cpu, report.load_average
    for part, reason in (
        ("ram", ram.error),
        ("swap", swap.error),
        ("cpu", cpu.note),
        ("load", load.error),
        ("ollama_processes", report.ollama_error),
    ):
        if reason:
            notes[part] = reason
    per_core = [
        round(float(v), 1)
        for v in cpu.per_core
        if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100
    ]
    return {
        "ram_total_mb": _bounded(ram.total_mb, "ram_total_mb", notes),
        "ram_used_mb": _bounded(ram.used_mb, "ram_used_mb", notes),
        "ram_available_mb": _bounded(ram.available_mb, "ram_available_mb", notes),
        "ram_percent": _bounded(ram.percent, "ram_percent", notes, high=100),
        "swap_total_mb": _bounded(swap.total_mb, "swap_total_mb", notes),
        "swap_used_mb": _bounded(swap.used_mb, "swap_used_mb", notes),
        "swap_percent": _bounded(swap.percent, "swap_percent", notes, high=100),
        "cpu_count": cpu.count if isinstance(cpu.count, int) and 0 < cpu.count < 32768 else None,
        "cpu_percent": _bounded(cpu.percent, "cpu_percent", notes, high=100),
        "cpu_per_core": per_core,
        "load_1": _bounded(load.one, "load_1", notes),
        "load_5": _bounded(load.five, "load_5", notes),
        "load_15": _bounded(load.fifteen, "load_15", notes),
        "ollama_rss_mb": _bounded(report.ollama_rss_mb, "ollama_rss_mb", notes),
        "ollama_process_count": len(report.ollama_processes),
    }


def _gpu_rows(
    report: GpuReport, host: str, taken_at: datetime, notes: dict[str, str]
) -> list[GpuSample]:
    rows: list[GpuSample] = []
    seen: set[int] = set()
    for gpu in report.gpus:
        if not isinstance(gpu.index, int) or gpu.index < 0 or gpu.index in seen:
            continue
        seen.add(gpu.index)
        prefix = f"gpu{gpu.index}."
        errors = [gpu.error] if gpu.error else []
        errors += [f"{query}: {reason}" for query, reason in gpu.errors.items()]
        rows.append(
            GpuSample(
                host=host,
                taken_at=taken_at,
                index=gpu.index,
                uuid=(gpu.uuid or "")[:96],
                name=(gpu.name or "")[:255],
                memory_used_mb=_bounded(gpu.memory_used_mb, prefix + "memory_used_mb", notes),
                memory_total_mb=_bounded(gpu.memory_total_mb, prefix + "memory_total_mb", notes),
                utilization_percent=_bounded(
                    gpu.utilization_percent, prefix + "utilization_percent", notes, high=100
                ),
                memory_utilization_percent=_bounded(
                    gpu.memory_utilization_percent,
                    prefix + "memory_utilization_percent",
                    notes,
                    high=100,
                ),
                temperature_c=gpu.temperature_c
                if isinstance(gpu.temperature_c, int) and -100 < gpu.temperature_c < 1000
                else None,
                power_draw_w=_bounded(gpu.power_draw_w, prefix + "power_draw_w", notes),
                power_limit_w=_bounded(gpu.power_limit_w, prefix + "power_limit_w", notes),
                fan_speed_percent=_bounded(
                    gpu.fan_speed_percent, prefix + "fan_speed_percent", notes, high=32767
                ),
                error="; ".join(errors),
            )
        )
    return rows


def _ollama_rows(
    reports: Iterable[OllamaPsReport], host: str, taken_at: datetime
) -> tuple[list[dict[str, Any]], list[LoadedModelSample]]:
    statuses: list[dict[str, Any]] = []
    rows: list[LoadedModelSample] = []
    for report in reports:
        seen: set[str] = set()
        for model in report.models:
            if model.name in seen:  # a server listing a model twice must not lose the sample
                continue
            seen.add(model.name)
            rows.append(
                LoadedModelSample(
                    host=host,
                    taken_at=taken_at,
                    ollama_url=report.url[:500],
                    model=model.name[:255],
                    size=model.size,
                    size_vram=model.size_vram,
                    expires_at=_parse_datetime(model.expires_at),
                    context_length=model.context_length
                    if model.context_length is not None and 0 <= model.context_length < 2**31
                    else None,
                )
            )
        statuses.append(
            {
                "url": report.url,
                "available": report.available,
                "reason": report.reason,
                "models": len(seen),
                "elapsed_ms": report.elapsed_ms,
            }
        )
    return statuses, rows


@dataclass
class SampleOutcome:
    sample: HostSample
    #: False when this task id had already recorded its sample (a redelivered message).
    created: bool


def record_sample(
    *,
    host: str | None = None,
    task_id: str | None = None,
    probes: Probes | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
    publish: bool = True,
) -> SampleOutcome:
    """Probe this machine and store one HostSample with its GPUs and loaded models.

    Idempotent per ``task_id``. Each part that fails is stored as unavailable (with the reason
    in ``gpu_reason`` / ``ollama_status`` / ``notes``); the host sample is recorded regardless.
    After the commit the sample is pushed to the ``monitoring`` channel-layer group.
    """
    host = host or settings.TELEMETRY_HOST
    if task_id:
        existing = HostSample.objects.filter(task_id=task_id).first()
        if existing is not None:
            return SampleOutcome(existing, created=False)

    taken_at = timezone.now()
    collected = collect(probes, timeout=probe_timeout)
    notes: dict[str, str] = dict(collected.failures)
    host_fields = _host_fields(collected.host, notes)
    gpu_rows = _gpu_rows(collected.gpu, host, taken_at, notes)
    statuses, model_rows = _ollama_rows(collected.ollama, host, taken_at)

    try:
        with transaction.atomic():
            sample = HostSample.objects.create(
                host=host,
                taken_at=taken_at,
                task_id=task_id or "",
                gpu_available=bool(collected.gpu.available),
                gpu_reason=collected.gpu.reason or "",
                gpu_driver_version=(collected.gpu.driver_version or "")[:64],
                ollama_status=statuses,
                notes=notes,
                **host_fields,
            )
            children: list[GpuSample | LoadedModelSample] = [*gpu_rows, *model_rows]
            for row in children:
                row.host_sample = sample
            GpuSample.objects.bulk_create(gpu_rows)
            LoadedModelSample.objects.bulk_create(model_rows)
    except IntegrityError:
        if task_id:
            existing = HostSample.objects.filter(task_id=task_id).first()
            if existing is not None:  # a concurrent delivery of the same task won
                return SampleOutcome(existing, created=False)
        raise

    if publish:
        transaction.on_commit(lambda: publish_sample(sample.pk), robust=True)
    return SampleOutcome(sample, created=True)


# --------------------------------------------------------------------------- live push


def publish_sample(sample_id: int) -> bool:
    """Push a stored sample to every connected dashboard. Never raises; True if sent.

    With the embedded in-memory channel layer a worker's push reaches no one (Daphne has its
    own memory): the dashboard then polls the REST endpoint instead.
    """
    try:
        layer = get_channel_layer()
        if layer is None:
            return False
        sample = find_sample(sample_id)
        if sample is None:
            return False
        message = {"type": "monitoring.sample", "sample": sample_payload(sample)}

        async def send() -> None:
            await asyncio.wait_for(layer.group_send(GROUP, message), PUBLISH_TIMEOUT)

        async_to_sync(send)()
        return True
    except Exception as exc:  # a dead channel layer must not fail the sampling task
        logger.warning("telemetry: could not publish sample %s: %s", sample_id, exc)
        return False


# --------------------------------------------------------------------------- pruning


@dataclass
class PruneResult:
    cutoff: datetime
    host_samples: int = 0
    gpu_samples: int = 0
    loaded_model_samples: int = 0
    batches: int = 0
    #: False when the time budget ran out first; the next run carries on.
    complete: bool = True


def prune(
    *,
    retention_days: float | None = None,
    now: datetime | None = None,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_seconds: float = PRUNE_MAX_SECONDS,
) -> PruneResult:
    """Delete samples older than the retention, ``batch_size`` host samples per transaction.

    Small batches keep each transaction (and, on SQLite, the write lock the sampler also needs)
    short; the time budget keeps the task under its limit however large the backlog.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    days = settings.TELEMETRY_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    result = PruneResult(cutoff=cutoff)
    deadline = time.monotonic() + max_seconds
    while True:
        if time.monotonic() >= deadline:
            result.complete = False
            break
        ids = list(
            HostSample.objects.filter(taken_at__lt=cutoff)
            .order_by("taken_at", "id")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        with transaction.atomic():
            # No signals on these models, so the cascade is one DELETE per child table
            # (WHERE host_sample_id IN the batch); only the batch's parents are loaded.
            _, per_model = HostSample.objects.filter(pk__in=ids).delete()
        result.host_samples += per_model.get(HostSample._meta.label, 0)
        result.gpu_samples += per_model.get(GpuSample._meta.label, 0)
        result.loaded_model_samples += per_model.get(LoadedModelSample._meta.label, 0)
        result.batches += 1
        if len(ids) < batch_size:
            break
    return result
