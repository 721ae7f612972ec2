"""Pruning removes exactly the samples older than the retention, with their children."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring import services
from monitoring.models import GpuSample, HostSample, LoadedModelSample
from monitoring.tasks import prune_telemetry

from .conftest import make_sample

pytestmark = pytest.mark.django_db

GPU = {"index": 0, "uuid": "GPU-1", "name": "RTX", "memory_used_mb": 100.0}
MODEL = {"ollama_url": "http://o:11434", "model": "llama3.2:3b", "size": 10, "size_vram": 10}


def populate(now, ages_days, host="box"):
    return {
        age: make_sample(host, now - timedelta(days=age), gpus=[GPU], models=[MODEL])
        for age in ages_days
    }


def test_prunes_exactly_the_rows_older_than_the_retention(settings):
    settings.TELEMETRY_RETENTION_DAYS = 7
    now = timezone.now()
    samples = populate(now, [30, 8, 7.01, 6.99, 1, 0])
    boundary = make_sample("box", now - timedelta(days=7), gpus=[GPU])  # exactly at the cutoff

    result = services.prune(now=now)

    kept = {samples[a].pk for a in (6.99, 1, 0)} | {boundary.pk}
    assert set(HostSample.objects.values_list("pk", flat=True)) == kept
    assert set(GpuSample.objects.values_list("host_sample_id", flat=True)) == kept
    assert set(LoadedModelSample.objects.values_list("host_sample_id", flat=True)) == kept - {
        boundary.pk
    }
    assert (result.host_samples, result.gpu_samples, result.loaded_model_samples) == (3, 3, 3)
    assert result.complete is True
    assert result.cutoff == now - timedelta(days=7)


def test_deletes_in_bounded_batches():
    now = timezone.now()
    for i in range(7):
        make_sample("box", now - timedelta(days=10, minutes=i), gpus=[GPU])
    make_sample("box", now)

    with CaptureQueriesContext(connection) as queries:
        result = services.prune(now=now, retention_days=7, batch_size=3)

    assert result.batches == 3  # 3 + 3 + 1
    assert result.host_samples == 7 and result.gpu_samples == 7
    assert HostSample.objects.count() == 1
    parent_deletes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('DELETE FROM "monitoring_hostsample"')
    ]
    assert len(parent_deletes) == 3


def test_stops_at_the_time_budget_and_leaves_the_rest_for_next_time():
    now = timezone.now()
    for i in range(5):
        make_sample("box", now - timedelta(days=10, minutes=i))
    result = services.prune(now=now, retention_days=7, batch_size=2, max_seconds=0)
    assert result.complete is False
    assert result.host_samples == 0
    assert HostSample.objects.count() == 5


def test_prune_task_uses_the_retention_setting_and_is_idempotent(settings):
    settings.TELEMETRY_RETENTION_DAYS = 2
    now = timezone.now()
    populate(now, [3, 1])
    first = prune_telemetry.apply().get()
    assert first == {
        "host_samples": 1,
        "gpu_samples": 1,
        "loaded_model_samples": 1,
        "complete": True,
    }
    second = prune_telemetry.apply().get()
    assert second["host_samples"] == 0
    assert HostSample.objects.count() == 1


def test_every_host_is_pruned():
    now = timezone.now()
    populate(now, [9], host="a")
    populate(now, [9, 0], host="b")
    services.prune(now=now, retention_days=7)
    assert list(HostSample.objects.values_list("host", flat=True)) == ["b"]
