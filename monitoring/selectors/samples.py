"""Reads of the telemetry samples: the newest sample of each host, bucketed time series and
summaries over a window, and the JSON shape of one sample (the REST API and the live push share
it). The samples are written by :mod:`monitoring.services`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Avg, Count, Max, Min, QuerySet

from monitoring.expressions import bucket_time, epoch_bucket
from monitoring.models import GpuSample, HostSample, LoadedModelSample

#: Samples older than this many intervals mark their host as stale in the latest view.
STALE_INTERVALS = 3

#: Longest window the series and summary endpoints accept, and the most points a series returns.
MAX_WINDOW = timedelta(days=31)
MAX_POINTS = 2000
#: Without an explicit resolution a series aims at about this many points.
DEFAULT_POINTS = 300

HOST_SERIES_FIELDS = (
    "ram_used_mb",
    "ram_percent",
    "ram_total_mb",
    "swap_used_mb",
    "cpu_percent",
    "load_1",
    "ollama_rss_mb",
)
GPU_SERIES_FIELDS = (
    "memory_used_mb",
    "memory_total_mb",
    "utilization_percent",
    "memory_utilization_percent",
    "temperature_c",
    "power_draw_w",
    "power_limit_w",
)
HOST_SUMMARY_FIELDS = (
    "ram_used_mb",
    "ram_percent",
    "swap_used_mb",
    "cpu_percent",
    "load_1",
    "ollama_rss_mb",
)
GPU_SUMMARY_FIELDS = (
    "memory_used_mb",
    "utilization_percent",
    "memory_utilization_percent",
    "temperature_c",
    "power_draw_w",
)


# --------------------------------------------------------------------------- one sample


def _with_related(queryset: QuerySet[HostSample]) -> QuerySet[HostSample]:
    return queryset.prefetch_related("gpus", "loaded_models")


def find_sample(sample_id: int) -> HostSample | None:
    """One sample with its GPUs and loaded models, or None if it is gone."""
    return _with_related(HostSample.objects.filter(pk=sample_id)).first()


def sample_payload(sample: HostSample) -> dict[str, Any]:
    """The JSON shape of one sample (as in ``GET /api/monitoring/latest/``), as plain types
    (msgpack for the Redis channel layer cannot carry datetimes or DRF's dict subclasses)."""
    from monitoring.serializers import HostSampleOutput

    return json.loads(json.dumps(HostSampleOutput(sample).data, cls=DjangoJSONEncoder))


# --------------------------------------------------------------------------- latest


def latest_samples(host: str | None = None) -> list[HostSample]:
    """The newest sample of each host (or of ``host``), with GPUs and loaded models."""
    if host is not None:
        hosts = [host]
    else:
        hosts = list(HostSample.objects.order_by("host").values_list("host", flat=True).distinct())
    ids = []
    for name in hosts:
        pk = (
            HostSample.objects.filter(host=name)
            .order_by("-taken_at", "-id")
            .values_list("pk", flat=True)
            .first()
        )
        if pk is not None:
            ids.append(pk)
    return list(_with_related(HostSample.objects.filter(pk__in=ids)).order_by("host"))


def latest_payloads() -> list[dict[str, Any]]:
    return [sample_payload(sample) for sample in latest_samples()]


# --------------------------------------------------------------------------- series


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def series(
    *, since: datetime, until: datetime, resolution: int, host: str | None = None
) -> dict[str, Any]:
    """Bucketed averages per host and per GPU over ``[since, until)``, computed in the database.

    Buckets are aligned on multiples of ``resolution`` seconds since the epoch, so consecutive
    polls of a moving window agree on their shared buckets. Empty buckets are left out (a gap).
    """
    bucket = epoch_bucket("taken_at", resolution)
    hosts_qs = HostSample.objects.filter(taken_at__gte=since, taken_at__lt=until)
    gpus_qs = GpuSample.objects.filter(taken_at__gte=since, taken_at__lt=until)
    if host is not None:
        hosts_qs = hosts_qs.filter(host=host)
        gpus_qs = gpus_qs.filter(host=host)

    host_rows: QuerySet[HostSample, Mapping[str, Any]] = (
        hosts_qs.annotate(bucket=bucket)
        .values("host", "bucket")
        .annotate(samples=Count("id"), **{name: Avg(name) for name in HOST_SERIES_FIELDS})
        .order_by("host", "bucket")
    )
    gpu_rows: QuerySet[GpuSample, Mapping[str, Any]] = (
        gpus_qs.annotate(bucket=bucket)
        .values("host", "index", "uuid", "bucket")
        .annotate(
            gpu_name=Max("name"),
            samples=Count("id"),
            **{name: Avg(name) for name in GPU_SERIES_FIELDS},
        )
        .order_by("host", "index", "uuid", "bucket")
    )

    by_host: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return by_host.setdefault(name, {"host": name, "points": [], "gpus": []})

    for row in host_rows:
        point = {"t": bucket_time(row["bucket"]), "samples": row["samples"]}
        point.update({name: _round(row[name]) for name in HOST_SERIES_FIELDS})
        entry(row["host"])["points"].append(point)

    gpu_index: dict[tuple[str, int, str], dict[str, Any]] = {}
    for row in gpu_rows:
        key = (row["host"], row["index"], row["uuid"])
        gpu = gpu_index.get(key)
        if gpu is None:
            gpu = gpu_index[key] = {
                "index": row["index"],
                "uuid": row["uuid"],
                "name": row["gpu_name"],
                "points": [],
            }
            entry(row["host"])["gpus"].append(gpu)
        point = {"t": bucket_time(row["bucket"]), "samples": row["samples"]}
        point.update({name: _round(row[name]) for name in GPU_SERIES_FIELDS})
        gpu["points"].append(point)

    return {
        "since": since,
        "until": until,
        "resolution": resolution,
        "hosts": [by_host[name] for name in sorted(by_host)],
    }


# --------------------------------------------------------------------------- summary


def _stats(row: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "min": _round(row[f"{name}__min"]),
        "avg": _round(row[f"{name}__avg"]),
        "max": _round(row[f"{name}__max"]),
    }


def _stat_aggregates(fields: Iterable[str]) -> dict[str, Any]:
    aggregates: dict[str, Any] = {}
    for name in fields:
        aggregates[f"{name}__min"] = Min(name)
        aggregates[f"{name}__avg"] = Avg(name)
        aggregates[f"{name}__max"] = Max(name)
    return aggregates


def summary(*, since: datetime, until: datetime, host: str | None = None) -> dict[str, Any]:
    """Min/avg/max of the host figures and of each GPU's over ``[since, until)``, and the models
    seen loaded."""
    window: dict[str, datetime | str] = {"taken_at__gte": since, "taken_at__lt": until}
    if host is not None:
        window["host"] = host
    host_rows: QuerySet[HostSample, Mapping[str, Any]] = (
        HostSample.objects.filter(**window)
        .values("host")
        .annotate(
            samples=Count("id"),
            first=Min("taken_at"),
            last=Max("taken_at"),
            **_stat_aggregates(HOST_SUMMARY_FIELDS),
        )
        .order_by("host")
    )
    gpu_rows: QuerySet[GpuSample, Mapping[str, Any]] = (
        GpuSample.objects.filter(**window)
        .values("host", "index", "uuid")
        .annotate(
            gpu_name=Max("name"),
            samples=Count("id"),
            memory_total_mb=Max("memory_total_mb"),
            **_stat_aggregates(GPU_SUMMARY_FIELDS),
        )
        .order_by("host", "index", "uuid")
    )
    model_rows = (
        LoadedModelSample.objects.filter(**window)
        .values("host", "ollama_url", "model")
        .annotate(
            samples=Count("id"),
            first=Min("taken_at"),
            last=Max("taken_at"),
            max_size=Max("size"),
            max_size_vram=Max("size_vram"),
        )
        .order_by("host", "ollama_url", "model")
    )

    hosts: dict[str, dict[str, Any]] = {}
    for row in host_rows:
        item = {
            "host": row["host"],
            "samples": row["samples"],
            "first": row["first"],
            "last": row["last"],
            "gpus": [],
            "models": [],
        }
        item.update({name: _stats(row, name) for name in HOST_SUMMARY_FIELDS})
        hosts[row["host"]] = item
    for row in gpu_rows:
        if row["host"] not in hosts:
            continue
        gpu = {
            "index": row["index"],
            "uuid": row["uuid"],
            "name": row["gpu_name"],
            "samples": row["samples"],
            "memory_total_mb": _round(row["memory_total_mb"]),
        }
        gpu.update({name: _stats(row, name) for name in GPU_SUMMARY_FIELDS})
        hosts[row["host"]]["gpus"].append(gpu)
    for row in model_rows:
        if row["host"] not in hosts:
            continue
        hosts[row["host"]]["models"].append(
            {
                "ollama_url": row["ollama_url"],
                "model": row["model"],
                "samples": row["samples"],
                "first": row["first"],
                "last": row["last"],
                "max_size": row["max_size"],
                "max_size_vram": row["max_size_vram"],
            }
        )
    return {"since": since, "until": until, "hosts": list(hosts.values())}
