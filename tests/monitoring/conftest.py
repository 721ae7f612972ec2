"""Fixtures for the telemetry tests (none autouse: the pure probe tests here are untouched)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.probes import GpuProbe, HostProbe, NvmlSession
from monitoring.models import GpuSample, HostSample, LoadedModelSample
from monitoring.services import Probes

from .fake_nvml import FakeGpu, FakeNvml, MiB

SECOND_GPU = FakeGpu(
    name="NVIDIA A100-SXM4-80GB",
    uuid="GPU-a100-0000-4000-8000-000000000001",
    memory_total=81920 * MiB,
    memory_used=40960 * MiB,
    utilization_gpu=12,
    utilization_memory=5,
    temperature=48,
    power_usage_mw=95_000,
    power_limit_mw=400_000,
)


def gpu_probe(nvml: FakeNvml) -> GpuProbe:
    # A session of its own: the shared one would outlive the test and remember the fake.
    return GpuProbe(nvml=nvml, session=NvmlSession(nvml))


@pytest.fixture
def two_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu(), SECOND_GPU])


@pytest.fixture
def probes(two_gpus, ollama_double) -> Probes:
    """Fake NVML with two GPUs, real psutil, the Ollama double over real HTTP."""
    return Probes(gpu=gpu_probe(two_gpus), host=HostProbe(), ollama_urls=[ollama_double.url])


def load_model(double, model: str = "llama3.2:3b", keep_alive: str | int = "5m") -> None:
    """Make the double hold a model in memory (an empty generate loads it, as in Ollama)."""
    response = httpx.post(
        f"{double.url}/api/generate",
        json={"model": model, "keep_alive": keep_alive, "stream": False},
        timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def channel_layer():
    layer = get_channel_layer()
    async_to_sync(layer.flush)()
    yield layer
    async_to_sync(layer.flush)()


def make_sample(host: str, taken_at: datetime, *, gpus: list[dict] | None = None, models=(), **f):
    """Store a sample directly (API, pruning and admin tests need exact values and times)."""
    sample = HostSample.objects.create(host=host, taken_at=taken_at, **f)
    for gpu in gpus or []:
        GpuSample.objects.create(host_sample=sample, host=host, taken_at=taken_at, **gpu)
    for model in models:
        LoadedModelSample.objects.create(host_sample=sample, host=host, taken_at=taken_at, **model)
    return sample


def make_reply(
    owner,
    created_at: datetime,
    *,
    model: str = "llama3.2:3b",
    status: str = "complete",
    conversation=None,
    **figures,
):
    """Store an assistant reply with exact figures and time (created_at is auto_now_add)."""
    from chat.models import Conversation, Message

    if conversation is None:
        conversation = Conversation.objects.create(owner=owner, title="t", model=model)
    if status == "failed":
        figures.setdefault("error_code", "ollama_error")
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=status,
        model=model,
        ollama_host=figures.pop("ollama_host", "http://ollama:11434"),
        content="reply",
        **figures,
    )
    Message.objects.filter(pk=message.pk).update(created_at=created_at)
    message.refresh_from_db()
    return message
