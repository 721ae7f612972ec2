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

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from config.celery import app as celery_app
from monitoring.models import HostSample
from monitoring.tasks import sample_telemetry
from tests.support.live import BASE_DIR, app_environment, free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.redis,
]

RESTARTS = 6
START_DEADLINE = 30.0  # bounds for a failing run only: each step returns as soon as it is done
SAMPLE_DEADLINE = 30.0


class RedisServer:
    """A redis-server process of the test's own, restartable on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = tmp_path / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + START_DEADLINE
        try:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"redis-server did not answer within {START_DEADLINE:g} s")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()  # waits for the exit, so the port is free again
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Worker:
    def __init__(self, tmp_path: Path, redis_url: str, queue: str, **env: str) -> None:
        self.log_path = tmp_path / "worker.log"
        self.queue = queue
        self.env = app_environment(REDIS_URL=redis_url, VAR_DIR=str(tmp_path), **env)
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                # As the Procfile and docker-compose.yml run it: heartbeats, gossip and mingle on.
                "-n",
                f"redis-restart-test-{uuid.uuid4().hex[:8]}@%h",
                "-Q",
                self.queue,
            ],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool children only
            process.wait()
            return None


def send_sample(redis_url: str, queue: str, host: str) -> str:
    # The suite's own settings use the filesystem broker: publish over this Redis explicitly.
    with celery_app.connection_for_write(redis_url) as connection:
        result = sample_telemetry.apply_async(
            kwargs={"host": host}, queue=queue, connection=connection
        )
    return result.id


def await_sample(task_id: str, worker: Worker, what: str) -> HostSample:
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
    worker = Worker(
        tmp_path,
        redis_server.url,
        queue,
        TELEMETRY_HOST=host,
        TELEMETRY_OLLAMA_URLS=ollama_double.url,
    ).start()
    try:
        first = await_sample(send_sample(redis_server.url, queue, host), worker, "at start")
        assert first.host == host
        pid = worker.process.pid

        for restart in range(1, RESTARTS + 1):
            redis_server.restart()
            task_id = send_sample(redis_server.url, queue, host)
            sample = await_sample(task_id, worker, f"after Redis restart {restart}")
            assert sample.host == host
            assert worker.alive() and worker.process.pid == pid, worker.log()
    finally:
        code = worker.stop()

    assert code == 0, worker.log()
    log = worker.log()
    assert "Unrecoverable error" not in log, log
    assert HostSample.objects.filter(host=host).count() == RESTARTS + 1
