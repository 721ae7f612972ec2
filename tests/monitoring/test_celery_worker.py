"""The telemetry tasks run by a real ``celery -A config worker`` against the real Redis.

The worker is a separate process with REDIS_URL on a Redis database of its own (broker and
channel layer), the test database (a file on SQLite -- config/settings.py gives the SQLite test
database a file name for exactly this -- or the PostgreSQL test database) and the real pynvml,
which on a machine without an NVIDIA driver must yield "unavailable", not a failed sample.
The test sends the tasks over Redis, listens on the ``monitoring`` group through a Redis
channel layer of its own, and checks the rows the worker wrote.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import timedelta

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.utils import timezone

from config.celery import app as celery_app
from monitoring import services
from monitoring.models import HostSample, LoadedModelSample
from monitoring.tasks import prune_telemetry, sample_telemetry
from tests.support.processes import CeleryWorker

from .conftest import load_model, make_sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

REDIS_URL = os.environ.get("MONITORING_REDIS_TEST_URL", "redis://127.0.0.1:6379/14")
DEADLINE = 90.0  # only a failing run waits this long; a loaded machine starts workers slowly


def redis_options() -> dict:
    """The app's Redis client options (config/settings.py), for the test's own clients too:
    redis-py's default read timeout (5 s) equals channels-redis' blocking pop (5 s), so a
    receive that waits longer than that for a slow worker failed with a TimeoutError."""
    return dict(settings.REDIS_CLIENT_OPTIONS)


@pytest.fixture
def clean_redis():
    try:
        client = redis.Redis.from_url(REDIS_URL, **redis_options())
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis unreachable at {REDIS_URL} (MONITORING_REDIS_TEST_URL): {error}")
    client.flushdb()  # this database is this test's own
    yield client
    client.flushdb()
    client.close()


def wait_for(predicate, what: str, worker: CeleryWorker, timeout: float = DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if not worker.alive():
            pytest.fail(f"the worker exited while waiting for {what}:\n{worker.log()}")
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout:g} s; worker log:\n{worker.log()}")


def send(task, queue: str, **kwargs) -> str:
    # The suite's own settings use the filesystem broker: publish over Redis explicitly.
    with celery_app.connection_for_write(REDIS_URL) as connection:
        result = task.apply_async(kwargs=kwargs, queue=queue, connection=connection)
    return result.id


async def _sample_and_listen(queue: str, host: str, worker: CeleryWorker) -> tuple[str, dict]:
    layer = RedisChannelLayer(hosts=[{"address": REDIS_URL, **redis_options()}])
    channel = await layer.new_channel()
    await layer.group_add(services.GROUP, channel)
    # One receive, never cancelled while it waits (a cancelled receive may drop a message);
    # meanwhile the worker is watched, so that a crash fails at once and with its log.
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        task_id = await asyncio.to_thread(send, sample_telemetry, queue, host=host)
        deadline = time.monotonic() + DEADLINE
        while not receiving.done():
            await asyncio.wait({receiving}, timeout=0.5)
            if not worker.alive():
                pytest.fail(f"the worker exited before publishing a sample:\n{worker.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no sample published within {DEADLINE:g} s:\n{worker.log()}")
        message = receiving.result()
    finally:
        receiving.cancel()
        await layer.group_discard(services.GROUP, channel)
        await layer.close_pools()
    return task_id, message


def test_worker_samples_publishes_and_prunes(clean_redis, tmp_path, ollama_double):
    host = f"worker-test-{uuid.uuid4().hex[:6]}"
    sample_queue = f"telemetry.{host}"
    other_queue = f"monitoring-test-{uuid.uuid4().hex[:6]}"
    load_model(ollama_double, "qwen2.5:0.5b")
    old = make_sample(host, timezone.now() - timedelta(days=3))

    worker = CeleryWorker(
        tmp_path / "worker.log",
        REDIS_URL,
        [sample_queue, other_queue],
        name="telemetry-test",
        options=("--without-heartbeat", "--without-gossip", "--without-mingle"),
        TELEMETRY_HOST=host,
        TELEMETRY_OLLAMA_URLS=ollama_double.url,
        TELEMETRY_RETENTION_DAYS="2",
    ).start()
    try:
        task_id, message = asyncio.run(_sample_and_listen(sample_queue, host, worker))

        # The sample the worker pushed through Redis is the row it stored.
        assert message["type"] == "monitoring.sample"
        sample = HostSample.objects.get(task_id=task_id)
        assert message["sample"]["id"] == sample.pk
        assert sample.host == host
        assert sample.ram_total_mb is not None and sample.ram_total_mb > 0
        assert sample.ram_used_mb is not None and sample.ram_used_mb > 0
        # Real pynvml: GPUs where there are some, NVML's reason where there are none (not a
        # probe that crashed).
        assert sample.gpu_available or sample.gpu_reason, sample.gpu_reason
        assert not sample.gpu_reason.startswith("gpu probe failed"), sample.gpu_reason
        assert sample.ollama_status[0]["url"] == ollama_double.url
        assert sample.ollama_status[0]["available"] is True
        assert list(
            LoadedModelSample.objects.filter(host_sample=sample).values_list("model", flat=True)
        ) == ["qwen2.5:0.5b"]

        send(prune_telemetry, other_queue)
        wait_for(lambda: not HostSample.objects.filter(pk=old.pk).exists(), "pruning", worker)
        assert HostSample.objects.filter(pk=sample.pk).exists()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    log = worker.log()
    assert "Task monitoring.tasks.sample_telemetry" in log and "succeeded" in log
    assert "Traceback" not in log, log
