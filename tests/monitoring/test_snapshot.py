"""Per-request snapshots and resource_delta."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import psutil
import pytest

from core.probes.gpu import GpuProbe, GpuReport, NvmlSession
from core.probes.host import HostProbe
from core.probes.snapshot import (
    asnapshot,
    compute_resource_delta,
    resource_delta,
    snapshot,
    take_snapshot,
)

from .fake_nvml import FakeGpu, FakeNvml, FakeProcess, MiB


def gpu_probe(fake: FakeNvml) -> GpuProbe:
    return GpuProbe(nvml=fake, session=NvmlSession(fake))


def two_gpu_fake() -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(processes=[FakeProcess(1, 10 * MiB)]),
            FakeGpu(
                name="NVIDIA RTX A6000",
                uuid="GPU-a6000",
                memory_total=49140 * MiB,
                memory_used=100 * MiB,
                utilization_gpu=5,
            ),
        ]
    )


# --------------------------------------------------------------------------- snapshot


def test_snapshot_shape_and_values():
    fake = two_gpu_fake()
    snap = snapshot(gpu_probe=gpu_probe(fake), host_probe=HostProbe())

    assert json.loads(json.dumps(snap)) == snap
    assert set(snap) == {"gpu", "gpu_available", "gpu_reason", "ram", "taken_at"}
    assert snap["gpu_available"] is True
    assert snap["gpu_reason"] is None
    assert snap["gpu"] == [
        {
            "index": 0,
            "uuid": "GPU-5c1e6a4e-0000-4000-8000-000000000000",
            "name": "NVIDIA GeForce RTX 4090",
            "memory_used_mb": 5120.5,
            "memory_total_mb": 24564.0,
            "utilization_percent": 87,
        },
        {
            "index": 1,
            "uuid": "GPU-a6000",
            "name": "NVIDIA RTX A6000",
            "memory_used_mb": 100.0,
            "memory_total_mb": 49140.0,
            "utilization_percent": 5,
        },
    ]
    ram = snap["ram"]
    assert set(ram) == {"used_mb", "total_mb", "available_mb", "percent", "error"}
    assert ram["total_mb"] == round(psutil.virtual_memory().total / MiB, 1)
    assert ram["total_mb"] > ram["used_mb"] > 0
    assert 0 <= ram["percent"] <= 100
    assert ram["error"] is None
    taken_at = datetime.fromisoformat(snap["taken_at"])
    assert taken_at.tzinfo is not None
    assert abs((datetime.now(UTC) - taken_at).total_seconds()) < 60


def test_snapshot_is_cheap(monkeypatch):
    fake = two_gpu_fake()
    host = HostProbe()  # built before the traps: its constructor takes a CPU baseline
    expensive = []
    for name in ("cpu_percent", "cpu_times", "process_iter", "swap_memory"):
        monkeypatch.setattr(psutil, name, lambda *a, _n=name, **k: expensive.append(_n))

    snap = snapshot(gpu_probe=gpu_probe(fake), host_probe=host)

    assert expensive == []
    assert snap["ram"]["error"] is None
    called = {name for name, _ in fake.calls}
    assert called == {
        "nvmlInit",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetUtilizationRates",
    }


def test_snapshot_without_gpu():
    fake = FakeNvml.no_library()
    snap = snapshot(gpu_probe=gpu_probe(fake), host_probe=HostProbe())
    assert snap["gpu_available"] is False
    assert snap["gpu_reason"] == "NVIDIA driver not found (NVML library not found)"
    assert snap["gpu"] == []
    assert snap["ram"]["total_mb"] > 0


def test_snapshot_leaves_out_lost_gpus():
    snap = snapshot(gpu_probe=gpu_probe(FakeNvml.gpu_lost()), host_probe=HostProbe())
    assert snap["gpu_available"] is True
    assert [g["index"] for g in snap["gpu"]] == [0]


def test_snapshot_survives_a_failing_ram_reading():
    class NoRam:
        def cpu_times(self, percpu=False):
            raise OSError("no /proc")

        def virtual_memory(self):
            raise PermissionError("/proc/meminfo: permission denied")

    snap = snapshot(gpu_probe=gpu_probe(FakeNvml()), host_probe=HostProbe(psutil_module=NoRam()))
    assert snap["ram"] == {
        "used_mb": None,
        "total_mb": None,
        "available_mb": None,
        "percent": None,
        "error": "PermissionError: /proc/meminfo: permission denied",
    }
    assert snap["gpu_available"] is True


def test_snapshot_survives_a_broken_injected_probe():
    class Broken(GpuProbe):
        def probe(self, *, minimal: bool = False) -> GpuReport:
            raise RuntimeError("boom")

    snap = snapshot(gpu_probe=Broken(), host_probe=HostProbe())
    assert snap["gpu_available"] is False
    assert snap["gpu_reason"] == "GPU probe failed: RuntimeError: boom"


def test_snapshot_with_the_real_machine_defaults():
    snap = snapshot()  # the real pynvml (no driver here) and the real psutil
    assert isinstance(snap["gpu_available"], bool)
    if not snap["gpu_available"]:
        assert snap["gpu_reason"]
        assert snap["gpu"] == []
    assert snap["ram"]["total_mb"] > 0


def test_typed_snapshot_matches_the_dict():
    fake = FakeNvml()
    typed = take_snapshot(gpu_probe=gpu_probe(fake), host_probe=HostProbe())
    data = typed.as_dict()
    assert data["gpu"][0]["memory_used_mb"] == typed.gpu[0].memory_used_mb == 5120.5
    assert data["ram"]["total_mb"] == typed.ram.total_mb


async def test_asnapshot_runs_off_the_event_loop_thread():
    fake = FakeNvml()
    loop_thread = threading.get_ident()
    snap = await asnapshot(gpu_probe=gpu_probe(fake), host_probe=HostProbe())
    assert snap["gpu_available"] is True
    assert fake.call_threads
    assert loop_thread not in fake.call_threads


def test_asnapshot_from_plain_asyncio_run():
    fake = FakeNvml()
    snap = asyncio.run(asnapshot(gpu_probe=gpu_probe(fake), host_probe=HostProbe()))
    assert snap["gpu"][0]["utilization_percent"] == 87


# --------------------------------------------------------------------------- resource_delta


def snap(gpus, ram_used=None, ram_percent=None, taken_at="2024-05-01T12:00:00+00:00"):
    return {
        "gpu_available": bool(gpus),
        "gpu_reason": None,
        "gpu": gpus,
        "ram": {"used_mb": ram_used, "total_mb": 32000.0, "percent": ram_percent},
        "taken_at": taken_at,
    }


def gpu(index, used, util, uuid=None):
    return {
        "index": index,
        "uuid": uuid,
        "memory_used_mb": used,
        "memory_total_mb": 24564.0,
        "utilization_percent": util,
    }


def test_delta_arithmetic():
    before = snap([gpu(0, 1000.0, 3, "GPU-a"), gpu(1, 200.5, 0, "GPU-b")], 8000.0, 25.0)
    after = snap(
        [gpu(0, 5120.5, 97, "GPU-a"), gpu(1, 200.0, 10, "GPU-b")],
        8012.6,
        25.1,
        taken_at="2024-05-01T12:00:04.250000+00:00",
    )
    delta = resource_delta(before, after)
    assert json.loads(json.dumps(delta)) == delta
    assert delta == {
        "gpu": [
            {
                "index": 0,
                "uuid": "GPU-a",
                "memory_used_mb_before": 1000.0,
                "memory_used_mb_after": 5120.5,
                "memory_used_mb_delta": 4120.5,
                "utilization_percent_before": 3.0,
                "utilization_percent_after": 97.0,
                "utilization_percent_delta": 94.0,
            },
            {
                "index": 1,
                "uuid": "GPU-b",
                "memory_used_mb_before": 200.5,
                "memory_used_mb_after": 200.0,
                "memory_used_mb_delta": -0.5,
                "utilization_percent_before": 0.0,
                "utilization_percent_after": 10.0,
                "utilization_percent_delta": 10.0,
            },
        ],
        "gpu_memory_used_mb_delta": 4120.0,
        "ram_used_mb_delta": 12.6,
        "ram_percent_delta": 0.1,
        "elapsed_seconds": 4.25,
    }


def test_gpus_are_matched_by_uuid_when_indices_move():
    before = snap([gpu(0, 100.0, 1, "GPU-a"), gpu(1, 500.0, 2, "GPU-b")])
    after = snap([gpu(0, 700.0, 50, "GPU-b")])  # GPU-a dropped out, GPU-b renumbered
    delta = resource_delta(before, after)
    by_uuid = {d["uuid"]: d for d in delta["gpu"]}
    assert by_uuid["GPU-b"]["memory_used_mb_delta"] == 200.0
    assert by_uuid["GPU-b"]["index"] == 0
    assert by_uuid["GPU-a"]["memory_used_mb_before"] == 100.0
    assert by_uuid["GPU-a"]["memory_used_mb_after"] is None
    assert by_uuid["GPU-a"]["memory_used_mb_delta"] is None
    assert delta["gpu_memory_used_mb_delta"] == 200.0


def test_gpus_are_matched_by_index_without_uuids():
    before = snap([gpu(0, 100.0, 1), gpu(1, 100.0, 1)])
    after = snap([gpu(1, 150.0, 1)])
    delta = resource_delta(before, after)
    by_index = {d["index"]: d for d in delta["gpu"]}
    assert by_index[1]["memory_used_mb_delta"] == 50.0
    assert by_index[0]["memory_used_mb_delta"] is None
    assert delta["gpu_memory_used_mb_delta"] == 50.0


def test_gpu_appearing_after_has_no_delta():
    delta = resource_delta(snap([]), snap([gpu(0, 300.0, 9, "GPU-new")]))
    assert delta["gpu"][0]["memory_used_mb_before"] is None
    assert delta["gpu"][0]["memory_used_mb_after"] == 300.0
    assert delta["gpu"][0]["memory_used_mb_delta"] is None
    assert delta["gpu_memory_used_mb_delta"] is None


def test_no_gpus_at_all():
    delta = resource_delta(snap([], 1000.0, 10.0), snap([], 1100.0, 11.0))
    assert delta["gpu"] == []
    assert delta["gpu_memory_used_mb_delta"] is None
    assert delta["ram_used_mb_delta"] == 100.0
    assert delta["ram_percent_delta"] == 1.0


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, None),
        ({}, {}),
        (None, snap([gpu(0, 1.0, 1)], 10.0, 1.0)),
        ("not a snapshot", 42),
        ({"gpu": "nope", "ram": [], "taken_at": 5}, {"gpu": [None, 3], "ram": None}),
    ],
)
def test_missing_or_malformed_snapshots_give_none(before, after):
    delta = resource_delta(before, after)
    assert delta["ram_used_mb_delta"] is None
    assert delta["ram_percent_delta"] is None
    assert delta["gpu_memory_used_mb_delta"] is None
    assert delta["elapsed_seconds"] is None
    assert all(d["memory_used_mb_delta"] is None for d in delta["gpu"])


def test_malformed_values_inside_give_none_for_those_deltas_only():
    before = snap([gpu(0, "lots", True, "GPU-a"), gpu(1, 10.0, 1, "GPU-b")], "8000", 25.0)
    after = snap([gpu(0, 20.0, 5, "GPU-a"), gpu(1, 30.0, 4, "GPU-b")], 9000.0, float("nan"))
    delta = resource_delta(before, after)
    first, second = delta["gpu"]
    assert first["memory_used_mb_delta"] is None
    assert first["utilization_percent_delta"] is None  # a bool is not a percentage
    assert second["memory_used_mb_delta"] == 20.0
    assert second["utilization_percent_delta"] == 3.0
    assert delta["gpu_memory_used_mb_delta"] == 20.0
    assert delta["ram_used_mb_delta"] is None
    assert delta["ram_percent_delta"] is None


def test_delta_of_real_snapshots_follows_the_gpu():
    fake = FakeNvml()
    probe = gpu_probe(fake)
    host = HostProbe()
    before = snapshot(gpu_probe=probe, host_probe=host)
    fake.gpus[0].memory_used += 256 * MiB
    fake.gpus[0].utilization_gpu = 99
    after = snapshot(gpu_probe=probe, host_probe=host)

    delta = compute_resource_delta(before, after)
    assert delta.gpu[0].memory_used_mb_delta == 256.0
    assert delta.gpu[0].utilization_percent_delta == 12.0
    assert delta.gpu_memory_used_mb_delta == 256.0
    assert delta.ram_used_mb_delta is not None
    assert delta.elapsed_seconds is not None and delta.elapsed_seconds >= 0
    assert fake.init_count == 1  # two snapshots, one NVML initialisation
