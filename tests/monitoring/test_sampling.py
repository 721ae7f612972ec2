"""record_sample: fake NVML, real psutil, the Ollama double over HTTP -> the right rows."""

from __future__ import annotations

import asyncio
import threading

import psutil
import pytest
from asgiref.sync import async_to_sync
from django.db import IntegrityError, transaction

from core.probes import GpuReport, HostProbe
from monitoring import services
from monitoring.models import GpuSample, HostSample, LoadedModelSample
from monitoring.services import record_sample
from monitoring.tasks import sample_telemetry

from .conftest import gpu_probe, load_model
from .fake_nvml import FakeNvml

pytestmark = pytest.mark.django_db


async def receive(layer, channel, timeout=60.0):  # the message is there: bounds a broken run
    return await asyncio.wait_for(layer.receive(channel), timeout)


def test_sample_writes_host_gpu_and_model_rows(probes, ollama_double, settings):
    settings.TELEMETRY_HOST = "gpu-box-1"
    load_model(ollama_double, "llama3.2:3b")
    # CPU usage needs two readings at least 0.1 s apart (the probe never sleeps itself): a
    # probe on a fake clock, moved past that, rather than a sleep.
    now = [100.0]
    probes.host = HostProbe(clock=lambda: now[0])
    now[0] += 1.0

    outcome = record_sample(probes=probes, publish=False)

    assert outcome.created
    sample = HostSample.objects.get()
    assert sample.pk == outcome.sample.pk
    assert sample.host == "gpu-box-1"
    real = psutil.virtual_memory()
    assert sample.ram_total_mb == pytest.approx(real.total / 2**20, rel=0.01)
    assert sample.ram_used_mb is not None and sample.ram_total_mb is not None
    assert 0 < sample.ram_used_mb < sample.ram_total_mb
    assert sample.ram_percent is not None and 0 <= sample.ram_percent <= 100
    assert sample.cpu_percent is not None and 0 <= sample.cpu_percent <= 100
    assert len(sample.cpu_per_core) == psutil.cpu_count()
    assert sample.load_1 is not None and sample.load_1 >= 0
    assert sample.gpu_available is True
    assert sample.gpu_reason == ""
    assert sample.gpu_driver_version == "550.54.14"

    gpus = list(GpuSample.objects.order_by("index"))
    assert [(g.index, g.name) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4090"),
        (1, "NVIDIA A100-SXM4-80GB"),
    ]
    first = gpus[0]
    assert first.host == "gpu-box-1" and first.taken_at == sample.taken_at
    assert first.host_sample_id == sample.pk
    assert first.memory_used_mb == 5120.5
    assert first.memory_total_mb == 24564.0
    assert first.utilization_percent == 87
    assert first.memory_utilization_percent == 41
    assert first.temperature_c == 66
    assert first.power_draw_w == 312.5
    assert first.power_limit_w == 450.0
    assert gpus[1].memory_used_mb == 40960.0 and gpus[1].utilization_percent == 12

    model = LoadedModelSample.objects.get()
    assert model.host_sample_id == sample.pk
    assert model.ollama_url == ollama_double.url
    assert model.model == "llama3.2:3b"
    assert model.size == 2019393189 + 512 * 2**20
    assert model.size_vram == model.size
    assert model.expires_at is not None and model.expires_at > sample.taken_at
    assert sample.ollama_status == [
        {
            "url": ollama_double.url,
            "available": True,
            "reason": None,
            "models": 1,
            "elapsed_ms": sample.ollama_status[0]["elapsed_ms"],
        }
    ]


def test_first_cpu_reading_is_null_with_a_note_not_zero(probes):
    # Just built, on a clock that stands still: no 0.1 s since its baseline, however long the
    # probes take on a loaded machine (on the wall clock they may take longer than that).
    probes.host = HostProbe(clock=lambda: 100.0)
    sample = record_sample(probes=probes, publish=False).sample
    assert sample.cpu_percent is None
    assert sample.cpu_per_core == []
    assert "first reading" in sample.notes["cpu"]


def test_host_without_nvidia_library_still_records(probes):
    probes.gpu = gpu_probe(FakeNvml.no_library())
    sample = record_sample(probes=probes, publish=False).sample
    assert sample.gpu_available is False
    assert "NVML library not found" in sample.gpu_reason
    assert sample.ram_total_mb is not None and sample.ram_total_mb > 0
    assert GpuSample.objects.count() == 0


class ExplodingGpuProbe:
    def probe(self, **kwargs):
        raise RuntimeError("driver exploded")


class HangingGpuProbe:
    """Hangs until released: only a sample that stops waiting for it can finish first."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.returned = threading.Event()

    def probe(self, **kwargs):
        self.release.wait(600)  # a bound for a broken run only: released by the test
        self.returned.set()
        return GpuReport.unavailable("too late")


def test_a_gpu_probe_that_raises_does_not_stop_the_others(probes, ollama_double):
    load_model(ollama_double)
    probes.gpu = ExplodingGpuProbe()
    sample = record_sample(probes=probes, publish=False).sample
    assert sample.gpu_available is False
    assert sample.gpu_reason == "gpu probe failed: RuntimeError: driver exploded"
    assert sample.notes["gpu"] == sample.gpu_reason
    assert sample.ram_total_mb is not None and sample.ram_total_mb > 0
    assert LoadedModelSample.objects.filter(host_sample=sample).count() == 1


def test_a_hanging_gpu_probe_is_cut_off_at_the_timeout(probes):
    hanging = HangingGpuProbe()
    probes.gpu = hanging
    try:
        sample = record_sample(probes=probes, probe_timeout=0.5, publish=False).sample
        # The sample was written while the probe still hung: cut off, not waited for (no
        # wall-clock figure to miss on a loaded machine).
        assert not hanging.returned.is_set()
    finally:
        hanging.release.set()
    assert sample.gpu_available is False
    assert sample.gpu_reason == "gpu probe failed: TimeoutError: no answer within 0.5 s"
    assert sample.ram_total_mb is not None and sample.ram_total_mb > 0


def test_ollama_down_is_recorded_as_unavailable(probes, ollama_double):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    probes.ollama_urls = [ollama_double.url, closed]
    load_model(ollama_double)
    sample = record_sample(probes=probes, publish=False).sample
    by_url = {s["url"]: s for s in sample.ollama_status}
    assert by_url[ollama_double.url]["available"] is True
    assert by_url[closed]["available"] is False
    assert by_url[closed]["reason"].startswith("cannot connect")
    assert set(LoadedModelSample.objects.values_list("ollama_url", flat=True)) == {
        ollama_double.url
    }
    assert sample.gpu_available is True


def test_a_failing_host_probe_still_records_gpus(probes):
    class BrokenHost:
        def probe(self):
            raise OSError("/proc is gone")

    probes.host = BrokenHost()
    sample = record_sample(probes=probes, publish=False).sample
    assert sample.ram_total_mb is None and sample.cpu_percent is None
    assert sample.notes["host"] == "host probe failed: OSError: /proc is gone"
    assert sample.gpus.count() == 2


def test_out_of_range_figures_become_null_with_a_note(probes, two_gpus):
    two_gpus.gpus[0].utilization_gpu = 130  # a driver bug must not lose the whole sample
    sample = record_sample(probes=probes, publish=False).sample
    gpu = sample.gpus.get(index=0)
    assert gpu.utilization_percent is None
    assert sample.notes["gpu0.utilization_percent"] == "out of range: 130"
    assert gpu.memory_used_mb == 5120.5


def test_database_constraints_reject_nonsense(probes):
    sample = record_sample(probes=probes, publish=False).sample
    for field, value in [("ram_percent", 101.0), ("cpu_percent", -1.0), ("ram_used_mb", -5.0)]:
        with pytest.raises(IntegrityError), transaction.atomic():
            HostSample.objects.filter(pk=sample.pk).update(**{field: value})
    with pytest.raises(IntegrityError), transaction.atomic():
        GpuSample.objects.filter(host_sample=sample).update(utilization_percent=101)


def test_same_task_id_records_once(probes):
    first = record_sample(probes=probes, task_id="task-1", publish=False)
    again = record_sample(probes=probes, task_id="task-1", publish=False)
    other = record_sample(probes=probes, task_id="task-2", publish=False)
    assert first.created and not again.created and other.created
    assert again.sample.pk == first.sample.pk
    assert HostSample.objects.count() == 2
    assert GpuSample.objects.count() == 4


def test_publishes_the_saved_sample_to_the_group(
    probes, channel_layer, django_capture_on_commit_callbacks
):
    channel = async_to_sync(channel_layer.new_channel)()
    async_to_sync(channel_layer.group_add)(services.GROUP, channel)
    with django_capture_on_commit_callbacks(execute=True):
        sample = record_sample(probes=probes).sample
    message = async_to_sync(receive)(channel_layer, channel)
    assert message["type"] == "monitoring.sample"
    pushed = message["sample"]
    assert pushed["id"] == sample.pk
    assert pushed["host"] == sample.host
    assert [g["index"] for g in pushed["gpus"]] == [0, 1]
    assert pushed["gpus"][0]["memory_used_mb"] == 5120.5


def test_publish_failure_does_not_fail_sampling(
    probes, monkeypatch, django_capture_on_commit_callbacks
):
    class DeadLayer:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(services, "get_channel_layer", lambda: DeadLayer())
    with django_capture_on_commit_callbacks(execute=True):
        outcome = record_sample(probes=probes)
    assert outcome.created
    assert services.publish_sample(outcome.sample.pk) is False


def test_task_refuses_a_sample_meant_for_another_machine(settings, monkeypatch):
    settings.TELEMETRY_HOST = "box-a"
    called = []
    monkeypatch.setattr(services, "record_sample", lambda **kw: called.append(kw))
    result = sample_telemetry.apply(kwargs={"host": "box-b"}).get()
    assert result == {"recorded": False, "reason": "wrong host"}
    assert called == []


def test_task_records_with_its_task_id(probes, settings, monkeypatch):
    settings.TELEMETRY_HOST = "box-a"
    real = services.record_sample
    monkeypatch.setattr(services, "record_sample", lambda **kw: real(probes=probes, **kw))
    result = sample_telemetry.apply(kwargs={"host": "box-a"}, task_id="fixed-id").get()
    assert result["recorded"] is True and result["host"] == "box-a"
    assert HostSample.objects.get().task_id == "fixed-id"
    # Redelivered (acks_late after a worker crash): no second row.
    again = sample_telemetry.apply(kwargs={"host": "box-a"}, task_id="fixed-id").get()
    assert again["recorded"] is False and again["sample"] == result["sample"]
    assert HostSample.objects.count() == 1
