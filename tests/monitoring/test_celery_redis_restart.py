"""A real Celery worker outlives restarts of its Redis broker.

Two ways this has gone wrong: a worker on kombu 5.7.0 was seen to exit ("Unrecoverable error:
AttributeError 'NoneType' object has no attribute 'hostname'", from the Redis transport's new
batch publishing; requirements.txt pins celery 5.6.3 with kombu 5.6.2), and older kombu
releases left a reconnected worker that no longer consumed (celery/celery#8091, fixed in
celery/kombu#2007). So the test checks both: the worker process stays the same, and a task
sent after each restart is executed.

The test owns its Redis: a ``redis-server`` on a free port, without persistence, that it
stops and starts again on the same port six times (each restart empties it). After each
restart it sends ``monitoring.tasks.sample_telemetry`` over that Redis and waits for the
worker to store the sample.
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest

from config.celery import app as celery_app
from monitoring.models import HostSample
from monitoring.tasks import sample_telemetry
from tests.support.processes import CeleryWorker, RedisServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.redis,
]

RESTARTS = 6
START_DEADLINE = 30.0  # bounds for a failing run only: each step returns as soon as it is done
SAMPLE_DEADLINE = 30.0


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer("celery-restart", tmp_path / "redis")
    server.start(timeout=START_DEADLINE)
    yield server
    server.stop()


def send_sample(redis_url: str, queue: str, host: str) -> str:
    # The suite's own settings use the filesystem broker: publish over this Redis explicitly.
    with celery_app.connection_for_write(redis_url) as connection:
        result = sample_telemetry.apply_async(
            kwargs={"host": host}, queue=queue, connection=connection
        )
    return result.id


def worker_pid(worker: CeleryWorker) -> int:
    assert worker.process is not None, "the worker was started"
    return worker.process.pid


def await_sample(task_id: str, worker: CeleryWorker, what: str) -> HostSample:
    deadline = time.monotonic() + SAMPLE_DEADLINE
    while True:
        sample = HostSample.objects.filter(task_id=task_id).first()
        if sample is not None:
            return sample
        if not worker.alive():
            pytest.fail(f"the worker exited {what}:\n{worker.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no sample {what} within {SAMPLE_DEADLINE:g} s:\n{worker.log()}")
        time.sleep(0.1)


def test_worker_survives_redis_restarts(redis_server, tmp_path, ollama_double):
    host = f"restart-test-{uuid.uuid4().hex[:6]}"
    queue = f"telemetry.{host}"
    worker = CeleryWorker(
        tmp_path / "worker.log",
        redis_server.url,
        [queue],
        name="redis-restart-test",  # as the Procfile and compose run it: gossip, mingle on
        TELEMETRY_HOST=host,
        TELEMETRY_OLLAMA_URLS=ollama_double.url,
    ).start()
    try:
        first = await_sample(send_sample(redis_server.url, queue, host), worker, "at start")
        assert first.host == host
        pid = worker_pid(worker)

        for restart in range(1, RESTARTS + 1):
            redis_server.restart()
            task_id = send_sample(redis_server.url, queue, host)
            sample = await_sample(task_id, worker, f"after Redis restart {restart}")
            assert sample.host == host
            assert worker.alive() and worker_pid(worker) == pid, worker.log()
    finally:
        code = worker.stop()

    assert code == 0, worker.log()
    log = worker.log()
    assert "Unrecoverable error" not in log, log
    assert HostSample.objects.filter(host=host).count() == RESTARTS + 1
