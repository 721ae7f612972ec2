"""GPU probe over NVML: every field, every failure, the NVML life cycle, and the real pynvml."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pynvml
import pytest

from core.probes import gpu as gpu_module
from core.probes.gpu import GpuProbe, NvmlSession, describe_nvml_error

from .fake_nvml import FakeGpu, FakeNvml, FakeProcess, GiB, MiB

REPO_ROOT = Path(__file__).resolve().parents[2]


def two_gpus() -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(
                processes=[
                    FakeProcess(pid=4242, used_gpu_memory=4 * GiB + 256 * MiB),
                    FakeProcess(pid=4343, used_gpu_memory=None),
                ]
            ),
            FakeGpu(
                name="NVIDIA RTX A6000",
                uuid="GPU-a6000-0001",
                memory_total=49140 * MiB,
                memory_used=1 * MiB,
                utilization_gpu=0,
                utilization_memory=3,
                temperature=31,
                power_usage_mw=21_040,
                power_limit_mw=300_000,
                fan_speed=30,
            ),
        ],
        driver_version="555.42.06",
    )


def probe_with_own_session(fake: FakeNvml, **session_kwargs) -> GpuProbe:
    return GpuProbe(nvml=fake, session=NvmlSession(fake, **session_kwargs))


def session_of(probe: GpuProbe) -> NvmlSession:
    session = probe.session
    assert session is not None
    return session


# --------------------------------------------------------------------------- every field


def test_every_field_is_read_from_nvml():
    fake = two_gpus()
    report = probe_with_own_session(fake).probe()

    assert report.available is True
    assert report.reason is None
    assert report.driver_version == "555.42.06"
    assert [g.index for g in report.gpus] == [0, 1]

    first, second = report.gpus
    assert first.name == "NVIDIA GeForce RTX 4090"
    assert first.uuid == "GPU-5c1e6a4e-0000-4000-8000-000000000000"
    assert first.memory_total_mb == 24564.0
    assert first.memory_used_mb == 5120.5
    assert first.memory_free_mb == 19443.5
    assert first.utilization_percent == 87
    assert first.memory_utilization_percent == 41
    assert first.temperature_c == 66
    assert first.power_draw_w == 312.5  # 312_456 mW
    assert first.power_limit_w == 450.0
    assert first.fan_speed_percent == 47
    assert [(p.pid, p.used_memory_mb) for p in first.processes] == [(4242, 4352.0), (4343, None)]
    assert first.processes_note is None
    assert first.errors == {}
    assert first.error is None

    assert second.name == "NVIDIA RTX A6000"
    assert second.uuid == "GPU-a6000-0001"
    assert (second.memory_total_mb, second.memory_used_mb, second.memory_free_mb) == (
        49140.0,
        1.0,
        49139.0,
    )
    assert (second.utilization_percent, second.memory_utilization_percent) == (0, 3)
    assert second.temperature_c == 31
    assert (second.power_draw_w, second.power_limit_w) == (21.0, 300.0)
    assert second.fan_speed_percent == 30
    assert second.processes == []
    assert second.processes_note is None


def test_report_as_dict_is_json_serialisable():
    report = probe_with_own_session(two_gpus()).probe()
    data = json.loads(json.dumps(report.as_dict()))
    assert data["available"] is True
    assert data["gpus"][0]["processes"][0] == {"pid": 4242, "used_memory_mb": 4352.0}
    assert data["gpus"][1]["power_limit_w"] == 300.0
    assert data["taken_at"].endswith("+00:00")


def test_bytes_names_from_old_bindings_are_decoded():
    fake = FakeNvml(gpus=[FakeGpu(name=b"Tesla T4", uuid=b"GPU-t4")])
    gpu = probe_with_own_session(fake).probe().gpus[0]
    assert gpu.name == "Tesla T4"
    assert gpu.uuid == "GPU-t4"


def test_minimal_probe_reads_only_identity_memory_and_utilisation():
    fake = two_gpus()
    report = probe_with_own_session(fake).probe(minimal=True)
    gpu = report.gpus[0]
    assert (gpu.memory_used_mb, gpu.utilization_percent) == (5120.5, 87)
    assert gpu.temperature_c is None
    assert gpu.power_draw_w is None
    assert gpu.processes == []
    called = {name for name, _ in fake.calls}
    assert called.isdisjoint(
        {
            "nvmlDeviceGetTemperature",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetEnforcedPowerLimit",
            "nvmlDeviceGetFanSpeed",
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlSystemGetDriverVersion",
        }
    )


# --------------------------------------------------------------------------- no NVML at all


@pytest.mark.parametrize(
    ("fake_factory", "expected_reason"),
    [
        (FakeNvml.no_library, "NVIDIA driver not found (NVML library not found)"),
        (FakeNvml.driver_not_loaded, "NVIDIA driver not loaded"),
        (FakeNvml.no_permission, "no permission to query the NVIDIA driver"),
    ],
)
def test_init_failure_gives_unavailable_with_reason(fake_factory, expected_reason):
    fake = fake_factory()
    report = probe_with_own_session(fake).probe()
    assert report.available is False
    assert report.reason is not None and report.reason.startswith(expected_reason)
    assert report.gpus == []
    assert fake.init_attempts == 1
    assert fake.init_count == 0
    # Nothing else was called on an uninitialised library.
    assert [name for name, _ in fake.calls] == ["nvmlInit"]


def test_no_gpu_gives_unavailable():
    report = probe_with_own_session(FakeNvml.no_gpu()).probe()
    assert report.available is False
    assert report.reason == "no NVIDIA GPU detected"
    assert report.gpus == []


def test_failure_to_count_gpus_gives_unavailable():
    fake = FakeNvml(failures={"nvmlDeviceGetCount": pynvml.NVML_ERROR_UNKNOWN})
    report = probe_with_own_session(fake).probe()
    assert report.available is False
    assert report.reason == "cannot enumerate GPUs: unknown NVML error"


def test_unexpected_exception_never_escapes():
    fake = FakeNvml(failures={"nvmlDeviceGetCount": RuntimeError("ctypes exploded")})
    report = probe_with_own_session(fake).probe()
    assert report.available is False
    assert report.reason == "GPU probe failed: RuntimeError: ctypes exploded"


def test_missing_bindings_give_unavailable(monkeypatch):
    def no_pynvml():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gpu_module, "_load_pynvml", no_pynvml)
    report = GpuProbe().probe()
    assert report.available is False
    assert report.reason is not None
    assert "nvidia-ml-py" in report.reason
    assert "No module named 'pynvml'" in report.reason


# --------------------------------------------------------------------------- one query fails

QUERY_FIELDS = {
    "nvmlDeviceGetName": ("name", ["name"]),
    "nvmlDeviceGetUUID": ("uuid", ["uuid"]),
    "nvmlDeviceGetMemoryInfo": (
        "memory",
        ["memory_used_mb", "memory_total_mb", "memory_free_mb"],
    ),
    "nvmlDeviceGetUtilizationRates": (
        "utilization",
        ["utilization_percent", "memory_utilization_percent"],
    ),
    "nvmlDeviceGetTemperature": ("temperature", ["temperature_c"]),
    "nvmlDeviceGetPowerUsage": ("power_draw", ["power_draw_w"]),
    "nvmlDeviceGetEnforcedPowerLimit": ("power_limit", ["power_limit_w"]),
    "nvmlDeviceGetFanSpeed": ("fan_speed", ["fan_speed_percent"]),
}
ALL_FIELDS = [f for _, fields in QUERY_FIELDS.values() for f in fields]


@pytest.mark.parametrize("function", sorted(QUERY_FIELDS))
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "not supported by this GPU or driver"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission to query the NVIDIA driver"),
        (pynvml.NVML_ERROR_UNKNOWN, "unknown NVML error"),
    ],
)
def test_one_failing_query_gives_none_for_its_fields_only(function, code, reason):
    fake = FakeNvml.query_fails(function, code)
    report = probe_with_own_session(fake).probe()
    assert report.available is True
    gpu = report.gpus[0]
    assert gpu.ok
    error_key, failed_fields = QUERY_FIELDS[function]
    assert gpu.errors == {error_key: reason}
    for name in ALL_FIELDS:
        value = getattr(gpu, name)
        if name in failed_fields:
            assert value is None, name
        else:
            assert value is not None, name


def test_non_nvml_exception_in_a_query_is_contained():
    # Seen in the wild: nvmlDeviceGetName raising UnicodeDecodeError on WSL2.
    bad = UnicodeDecodeError("utf-8", b"\xf8", 0, 1, "invalid start byte")
    fake = FakeNvml.query_fails("nvmlDeviceGetName", bad)
    gpu = probe_with_own_session(fake).probe().gpus[0]
    assert gpu.name is None
    assert gpu.errors["name"].startswith("UnicodeDecodeError")
    assert gpu.memory_used_mb == 5120.5


@pytest.mark.parametrize(
    ("code", "note"),
    [
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "processes unavailable: not supported by this GPU"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "processes unavailable: no permission"),
    ],
)
def test_processes_not_allowed_gives_empty_list_with_note(code, note):
    fake = FakeNvml(gpus=[FakeGpu(processes=[FakeProcess(1, 1)])])
    fake.gpus[0].failures["nvmlDeviceGetComputeRunningProcesses"] = code
    gpu = probe_with_own_session(fake).probe().gpus[0]
    assert gpu.processes == []
    assert gpu.processes_note is not None
    assert gpu.processes_note.startswith(note)
    assert gpu.memory_used_mb == 5120.5  # the rest of the device is fine


def test_processes_fall_back_to_v2_on_an_old_driver():
    mismatch = pynvml.NVMLLibraryMismatchError("use nvmlDeviceGetComputeRunningProcesses_v2")
    fake = FakeNvml(gpus=[FakeGpu(processes=[FakeProcess(77, 300 * MiB)])])
    fake.gpus[0].failures["nvmlDeviceGetComputeRunningProcesses"] = mismatch
    gpu = probe_with_own_session(fake).probe().gpus[0]
    assert [(p.pid, p.used_memory_mb) for p in gpu.processes] == [(77, 300.0)]
    assert gpu.processes_note is None
    assert "nvmlDeviceGetComputeRunningProcesses_v2" in fake.device_calls(0)


# --------------------------------------------------------------------------- lost GPUs


def test_lost_gpu_is_reported_and_the_others_still_read():
    fake = FakeNvml.gpu_lost()
    report = probe_with_own_session(fake).probe()
    assert report.available is True
    healthy, lost = report.gpus
    assert healthy.ok and healthy.memory_used_mb == 5120.5
    assert lost.index == 1
    assert lost.error == "GPU is lost (fell off the bus or stopped responding)"
    assert not lost.ok
    assert all(getattr(lost, name) is None for name in ALL_FIELDS)
    # The probe stopped at the first GpuIsLost instead of timing out on every query.
    assert fake.device_calls(1) == ["nvmlDeviceGetHandleByIndex", "nvmlDeviceGetName"]


def test_lost_at_handle():
    fake = FakeNvml.gpu_lost(at_handle=True)
    report = probe_with_own_session(fake).probe()
    assert report.available is True
    assert report.gpus[1].error == "GPU is lost (fell off the bus or stopped responding)"
    assert fake.device_calls(1) == ["nvmlDeviceGetHandleByIndex"]


def test_every_gpu_lost_gives_unavailable_with_the_details():
    fake = FakeNvml(gpus=[FakeGpu(lost=True), FakeGpu(lost=True, lost_at_handle=True)])
    report = probe_with_own_session(fake).probe()
    assert report.available is False
    assert report.reason is not None
    assert report.reason.startswith("no GPU answered (GPU 0: GPU is lost")
    assert "GPU 1: GPU is lost" in report.reason
    assert len(report.gpus) == 2


def test_other_handle_error_marks_only_that_gpu():
    fake = FakeNvml(gpus=[FakeGpu(), FakeGpu()])
    fake.gpus[0].failures["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_NO_PERMISSION
    report = probe_with_own_session(fake).probe()
    assert report.available is True
    assert report.gpus[0].error == "cannot open GPU 0: no permission to query the NVIDIA driver"
    assert report.gpus[1].ok


# --------------------------------------------------------------------------- life cycle


def test_fake_refuses_use_before_init_and_after_shutdown():
    fake = FakeNvml()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    assert fake.nvmlDeviceGetCount() == 1
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()


def test_init_once_across_many_probes_and_threads_then_shutdown_once():
    fake = two_gpus()
    fake.init_delay = 0.05  # eight threads arrive while the first is still initialising
    barrier = threading.Barrier(8)
    reports = []

    def worker():
        barrier.wait()
        for _ in range(5):
            reports.append(GpuProbe(nvml=fake).probe())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(reports) == 40
    assert all(r.available for r in reports)
    assert fake.init_attempts == 1
    assert fake.init_count == 1
    assert fake.shutdown_count == 0

    session = NvmlSession.shared(fake)
    assert GpuProbe(nvml=fake).session is session
    assert session.shutdown() is True
    assert session.shutdown() is False
    assert fake.shutdown_count == 1
    assert fake.refcount == 0


def test_probe_after_shutdown_initialises_again():
    fake = FakeNvml()
    probe = probe_with_own_session(fake)
    assert probe.probe().available
    session_of(probe).shutdown()
    assert probe.probe().available
    assert (fake.init_count, fake.shutdown_count) == (2, 1)


def test_nvml_shut_down_underneath_is_reported_then_recovered():
    fake = FakeNvml()
    probe = probe_with_own_session(fake)
    assert probe.probe().available
    fake.nvmlShutdown()  # someone else in the process released the last reference

    report = probe.probe()
    assert report.available is False
    assert report.reason is not None
    assert "re-initialised" in report.reason
    assert fake.shutdown_count == 1  # the probe did not try to shut down what it no longer owns

    assert probe.probe().available
    assert fake.init_count == 2


def test_driver_gone_mid_probe_resets_the_session():
    fake = FakeNvml()
    probe = probe_with_own_session(fake)
    assert probe.probe().available
    fake.failures["nvmlDeviceGetCount"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    report = probe.probe()
    assert report.available is False
    assert report.reason is not None
    assert report.reason.startswith("NVIDIA driver not loaded")
    assert fake.shutdown_count == 1  # released, to start clean
    assert not session_of(probe).initialised

    del fake.failures["nvmlDeviceGetCount"]
    assert probe.probe().available
    assert fake.init_count == 2


def test_failed_init_is_retried_after_the_interval_only():
    now = [1000.0]
    fake = FakeNvml.no_library()
    probe = probe_with_own_session(fake, retry_interval=30.0, clock=lambda: now[0])

    assert probe.probe().reason == "NVIDIA driver not found (NVML library not found)"
    now[0] += 10
    assert probe.probe().reason == "NVIDIA driver not found (NVML library not found)"
    assert fake.init_attempts == 1  # remembered, not retried twice per request

    fake.init_error = None  # the driver got installed
    now[0] += 21
    report = probe.probe()
    assert report.available is True
    assert fake.init_attempts == 2
    assert fake.init_count == 1


def test_atexit_shuts_nvml_down_once():
    # A real interpreter exit. The script registers its reporter before importing the probes, so
    # (atexit being last-in first-out) it runs after the probes' own atexit hook.
    script = """
import atexit
from tests.monitoring.fake_nvml import FakeNvml
fake = FakeNvml()
atexit.register(lambda: print("at exit", fake.init_count, fake.shutdown_count))
from core.probes.gpu import GpuProbe
for _ in range(3):
    assert GpuProbe(nvml=fake).probe().available
print("before exit", fake.init_count, fake.shutdown_count)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["before exit 1 0", "at exit 1 1"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_initialises_its_own_nvml_and_leaves_the_parents_alone():
    fake = FakeNvml()
    probe = GpuProbe(nvml=fake)
    assert probe.probe().available
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report and leave without running atexit or pytest teardown
        try:
            os.close(read_fd)
            ok = probe.probe().available
            before_shutdown = (fake.init_count, fake.shutdown_count)
            session_of(probe).shutdown()
            line = f"{ok} {before_shutdown} {fake.shutdown_count}"
            os.write(write_fd, line.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_says = pipe.read()
    os.waitpid(pid, 0)
    # Child: inherited one init, made its own, shut down only its own.
    assert child_says == "True (2, 0) 1"
    # Parent: untouched, still initialised once.
    assert (fake.init_count, fake.shutdown_count) == (1, 0)
    assert session_of(probe).initialised
    assert probe.probe().available
    assert fake.init_count == 1
    session_of(probe).shutdown()


def test_pid_change_without_fork_hook_is_also_detected(monkeypatch):
    fake = FakeNvml()
    probe = probe_with_own_session(fake)
    assert probe.probe().available
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    assert probe.probe().available
    assert fake.init_count == 2
    assert fake.shutdown_count == 0


# --------------------------------------------------------------------------- the real pynvml


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None,
    reason="an NVIDIA driver is installed on this machine",
)
def test_real_pynvml_without_driver_is_unavailable_not_an_exception():
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):  # what the bindings really do here
        pynvml.nvmlInit()

    for probe in (GpuProbe(), GpuProbe(nvml=pynvml), GpuProbe(session=NvmlSession(pynvml))):
        report = probe.probe()
        assert report.available is False
        assert report.reason == "NVIDIA driver not found (NVML library not found)"
        assert report.gpus == []


def test_describe_nvml_error():
    assert describe_nvml_error(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)) == (
        "GPU is lost (fell off the bus or stopped responding)"
    )
    assert describe_nvml_error(pynvml.NVMLError_NotSupported()) == (
        "not supported by this GPU or driver"
    )
    assert describe_nvml_error(pynvml.NVMLError(12345)).startswith("NVML error 12345")
    assert describe_nvml_error(ValueError("x")) == "ValueError: x"
