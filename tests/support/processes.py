"""Processes that integration tests own: a private redis-server, a Celery worker, and waiting
on them.

A test that must stop and restart Redis cannot use the machine's shared one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

from tests.support.live import ARTIFACTS, BASE_DIR, app_environment, free_port

T = TypeVar("T")
WAIT = 30.0  # only a failing run waits this long


def wait_until(
    predicate: Callable[[], T | None], what: str, timeout: float = WAIT, interval: float = 0.05
) -> T:
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(interval)


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


class RedisServer:
    """`redis-server` on 127.0.0.1 and a free port, no persistence."""

    def __init__(self, tag: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = ARTIFACTS / f"fullstack-{tag}-redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = WAIT) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = process = subprocess.Popen(
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
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {log_tail(self.log_path)}")
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    return False

            wait_until(answers, f"answer from redis-server on port {self.port}", timeout)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> RedisServer:
        self.stop()  # waits for the exit, so the port is free again
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# ------------------------------------------------------------------------------- Celery


class CeleryWorker:
    """`celery -A config worker` on a Redis broker, in a process group of its own."""

    def __init__(
        self,
        log_path: Path,
        redis_url: str,
        queues: list[str],
        *,
        name: str,
        options: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.log_path = log_path
        self.queues = queues
        self.name = name
        self.options = options
        self.env = app_environment(REDIS_URL=redis_url, VAR_DIR=str(log_path.parent), **env)
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",  # the default prefork pool: soft time limits, fork + NVML
                *self.options,
                "-n",
                f"{self.name}-{uuid.uuid4().hex[:8]}@%h",
                "-Q",
                ",".join(self.queues),
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

    def stop(self, timeout: float = 90.0) -> int | None:
        """A warm shutdown (the task in hand finishes); the exit code, None if it was killed."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)  # a loaded machine shuts down slowly too
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool children only
            process.wait()
            return None
