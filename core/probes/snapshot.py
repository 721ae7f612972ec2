"""Per-request GPU/RAM snapshots, and the difference between two of them.

Every chat generation takes one :func:`snapshot` before streaming and one after, stores both
(``gpu_usage_before/after``, ``ram_usage_before/after``) and their :func:`resource_delta`.

Cost and calling convention
---------------------------
A snapshot reads GPU memory and utilisation (a few NVML calls per GPU, no processes, no
temperature or power) and ``psutil.virtual_memory()``; it never measures CPU (that would need an
interval) and never scans processes. It is synchronous and does blocking system calls (typically
well under 10 ms in all), so async code must not call it directly on the event loop::

    before = await asnapshot()            # == await asyncio.to_thread(snapshot)

It is thread-safe and never raises: a missing GPU gives ``"gpu_available": false`` with
``"gpu_reason"``, a failed RAM read gives ``None`` figures with ``"ram": {"error": ...}``.

Shape (JSON-serialisable)::

    {"taken_at": "2024-05-01T12:00:00.123456+00:00",
     "gpu_available": true, "gpu_reason": null,
     "gpu": [{"index": 0, "uuid": "GPU-...", "name": "NVIDIA GeForce RTX 4090",
              "memory_used_mb": 5120.0, "memory_total_mb": 24564.0,
              "utilization_percent": 87}],
     "ram": {"used_mb": 8000.0, "total_mb": 32000.0, "available_mb": 24000.0,
             "percent": 25.0, "error": null}}
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from typing import Any

from ._common import as_number, describe_exception, utc_now_iso
from .gpu import GpuProbe, default_gpu_probe
from .host import HostProbe, RamInfo, default_host_probe

logger = logging.getLogger(__name__)

__all__ = [
    "GpuDelta",
    "GpuSnapshot",
    "RamSnapshot",
    "ResourceDelta",
    "ResourceSnapshot",
    "asnapshot",
    "compute_resource_delta",
    "resource_delta",
    "snapshot",
    "take_snapshot",
]


@dataclasses.dataclass(slots=True)
class GpuSnapshot:
    index: int
    uuid: str | None
    name: str | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    utilization_percent: int | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class RamSnapshot:
    used_mb: float | None
    total_mb: float | None
    available_mb: float | None
    percent: float | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class ResourceSnapshot:
    gpu_available: bool
    gpu_reason: str | None
    gpu: list[GpuSnapshot]
    ram: RamSnapshot
    taken_at: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def take_snapshot(
    *, gpu_probe: GpuProbe | None = None, host_probe: HostProbe | None = None
) -> ResourceSnapshot:
    """The typed snapshot; :func:`snapshot` is its ``as_dict()``. Never raises."""
    taken_at = utc_now_iso()
    try:
        report = (gpu_probe or default_gpu_probe()).probe(minimal=True)
        gpus = [
            GpuSnapshot(
                index=g.index,
                uuid=g.uuid,
                name=g.name,
                memory_used_mb=g.memory_used_mb,
                memory_total_mb=g.memory_total_mb,
                utilization_percent=g.utilization_percent,
            )
            for g in report.gpus
            if g.ok
        ]
        gpu_available, gpu_reason = report.available, report.reason
    except Exception as exc:  # GpuProbe.probe does not raise; this guards an injected probe
        gpus, gpu_available, gpu_reason = [], False, f"GPU probe failed: {describe_exception(exc)}"
    try:
        ram = (host_probe or default_host_probe()).ram()
    except Exception as exc:
        ram = RamInfo(error=describe_exception(exc))
    return ResourceSnapshot(
        gpu_available=gpu_available,
        gpu_reason=gpu_reason,
        gpu=gpus,
        ram=RamSnapshot(
            used_mb=ram.used_mb,
            total_mb=ram.total_mb,
            available_mb=ram.available_mb,
            percent=ram.percent,
            error=ram.error,
        ),
        taken_at=taken_at,
    )


def snapshot(
    *, gpu_probe: GpuProbe | None = None, host_probe: HostProbe | None = None
) -> dict[str, Any]:
    """GPU and RAM now, as a small JSON-serialisable dict (see the module docstring)."""
    return take_snapshot(gpu_probe=gpu_probe, host_probe=host_probe).as_dict()


async def asnapshot(
    *, gpu_probe: GpuProbe | None = None, host_probe: HostProbe | None = None
) -> dict[str, Any]:
    """:func:`snapshot` in a worker thread, for async code."""
    return await asyncio.to_thread(snapshot, gpu_probe=gpu_probe, host_probe=host_probe)


# --------------------------------------------------------------------------- delta


@dataclasses.dataclass(slots=True)
class GpuDelta:
    index: int | None
    uuid: str | None
    memory_used_mb_before: float | None
    memory_used_mb_after: float | None
    memory_used_mb_delta: float | None
    utilization_percent_before: float | None
    utilization_percent_after: float | None
    utilization_percent_delta: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class ResourceDelta:
    #: One entry per GPU seen in either snapshot; deltas are None unless both sides have it.
    gpu: list[GpuDelta]
    #: Sum of the per-GPU memory deltas that could be computed; None when there were none.
    gpu_memory_used_mb_delta: float | None
    ram_used_mb_delta: float | None
    ram_percent_delta: float | None
    elapsed_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _diff(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return round(after - before, 1)


def _gpu_entries(snap: dict[str, Any]) -> list[dict[str, Any]]:
    entries = snap.get("gpu")
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _gpu_key(entry: dict[str, Any], by_uuid: bool, position: int) -> Any:
    key = entry.get("uuid") if by_uuid else entry.get("index")
    if isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
        return key
    return ("position", position)  # malformed entry: pair it with its counterpart by position


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def compute_resource_delta(before: Any, after: Any) -> ResourceDelta:
    """Typed :func:`resource_delta`."""
    b, a = _mapping(before), _mapping(after)
    b_gpus, a_gpus = _gpu_entries(b), _gpu_entries(a)
    # Match GPUs by UUID when every entry has one (indices can be renumbered, e.g. by
    # CUDA_VISIBLE_DEVICES or a GPU dropping out); fall back to the index otherwise.
    by_uuid = all(isinstance(e.get("uuid"), str) and e.get("uuid") for e in b_gpus + a_gpus)
    b_map = {_gpu_key(e, by_uuid, i): e for i, e in enumerate(b_gpus)}
    a_map = {_gpu_key(e, by_uuid, i): e for i, e in enumerate(a_gpus)}
    keys = list(dict.fromkeys([*b_map, *a_map]))

    deltas: list[GpuDelta] = []
    for key in keys:
        eb, ea = b_map.get(key, {}), a_map.get(key, {})
        index = ea.get("index", eb.get("index"))
        uuid = ea.get("uuid") or eb.get("uuid")
        mem_b, mem_a = as_number(eb.get("memory_used_mb")), as_number(ea.get("memory_used_mb"))
        util_b = as_number(eb.get("utilization_percent"))
        util_a = as_number(ea.get("utilization_percent"))
        deltas.append(
            GpuDelta(
                index=index if isinstance(index, int) and not isinstance(index, bool) else None,
                uuid=uuid if isinstance(uuid, str) else None,
                memory_used_mb_before=mem_b,
                memory_used_mb_after=mem_a,
                memory_used_mb_delta=_diff(mem_b, mem_a),
                utilization_percent_before=util_b,
                utilization_percent_after=util_a,
                utilization_percent_delta=_diff(util_b, util_a),
            )
        )
    memory_deltas = [d.memory_used_mb_delta for d in deltas if d.memory_used_mb_delta is not None]

    b_ram, a_ram = _mapping(b.get("ram")), _mapping(a.get("ram"))
    t_b, t_a = _parse_time(b.get("taken_at")), _parse_time(a.get("taken_at"))
    elapsed = None
    if t_b is not None and t_a is not None:
        try:
            elapsed = round((t_a - t_b).total_seconds(), 3)
        except TypeError:  # one naive, one aware
            elapsed = None
    return ResourceDelta(
        gpu=deltas,
        gpu_memory_used_mb_delta=round(sum(memory_deltas), 1) if memory_deltas else None,
        ram_used_mb_delta=_diff(as_number(b_ram.get("used_mb")), as_number(a_ram.get("used_mb"))),
        ram_percent_delta=_diff(as_number(b_ram.get("percent")), as_number(a_ram.get("percent"))),
        elapsed_seconds=elapsed,
    )


def resource_delta(before: Any, after: Any) -> dict[str, Any]:
    """``after - before`` for two :func:`snapshot` dicts, per GPU and for RAM.

    Tolerant by design (the inputs come back from a JSON column): a missing snapshot, a GPU in
    only one of them, a None figure or a malformed value gives None for that delta, never an
    exception. Shape::

        {"gpu": [{"index": 0, "uuid": "GPU-...",
                  "memory_used_mb_before": 5120.0, "memory_used_mb_after": 5376.0,
                  "memory_used_mb_delta": 256.0,
                  "utilization_percent_before": 3.0, "utilization_percent_after": 97.0,
                  "utilization_percent_delta": 94.0}],
         "gpu_memory_used_mb_delta": 256.0,
         "ram_used_mb_delta": 12.5, "ram_percent_delta": 0.1,
         "elapsed_seconds": 4.2}
    """
    try:
        return compute_resource_delta(before, after).as_dict()
    except Exception:  # defensive: compute_resource_delta is meant to be total
        logger.exception("resource_delta failed")
        return ResourceDelta(
            gpu=[],
            gpu_memory_used_mb_delta=None,
            ram_used_mb_delta=None,
            ram_percent_delta=None,
            elapsed_seconds=None,
        ).as_dict()
