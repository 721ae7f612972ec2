"""The full stack of real processes, owned by the test.

- `RedisServer` (tests/support/processes.py): a private redis-server on a free port, which a
  test can stop and start again on the same port;
- `PgProxy`: a TCP proxy between the app processes and PostgreSQL, which a test can cut
  (every connection closed, new ones refused) and restore;
- `Stack`: two Daphne processes, a Celery worker and Celery beat on that Redis and, through
  the proxy, the test database; every log under artifacts/fullstack-*.log;
- `ConnectionSampler`: PostgreSQL's connections to the test database, counted from a thread;
- `assert_nothing_lost()`: the invariants every test ends with.

The test's own Django connection goes to PostgreSQL directly, never through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection

from tests.support.live import ARTIFACTS, BASE_DIR, DaphneServer, app_environment, free_port
from tests.support.processes import WAIT, RedisServer, log_tail, wait_until

__all__ = ["WAIT", "RedisServer", "log_tail", "wait_until"]  # also the harness's own API
PG_HOST, PG_PORT = "127.0.0.1", 5432
MODEL = "llama3.2:3b"
DB_POOL_MAX_SIZE = 8


# ------------------------------------------------------------------------------- the proxy


class PgProxy:
    """A TCP proxy to PostgreSQL, served by an asyncio loop in a thread of the test process.

    `cut()` aborts every open connection and closes the listening socket (new connections are
    refused); `restore()` listens again on the same port.
    """

    def __init__(self, target: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pg-proxy", daemon=True)
        self.server: asyncio.base_events.Server | None = None
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.is_cut = False
        self.accepted = 0
        self.refused_while_cut = 0

    def _call(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(15)

    def start(self) -> PgProxy:
        self.thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True, backlog=1024
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused_while_cut += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self.pairs.add(pair)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            self.pairs.discard(pair)
            for side in pair:
                with contextlib.suppress(Exception):
                    side.close()

    async def _cut(self) -> int:
        self.is_cut = True
        if self.server is not None:
            self.server.close()
            self.server = None
        pairs = list(self.pairs)
        for pair in pairs:
            for side in pair:
                side.transport.abort()
        return len(pairs)

    async def _restore(self) -> None:
        self.is_cut = False
        if self.server is None:
            await self._listen()

    def cut(self) -> int:
        """Abort every connection and refuse new ones; returns how many were open."""
        return self._call(self._cut())

    def restore(self) -> None:
        self._call(self._restore())

    async def _shutdown(self) -> None:
        await self._cut()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# ------------------------------------------------------------------------------- processes


class CeleryProcess:
    """`celery -A config worker|beat`, in a session of its own (killed with its children)."""

    def __init__(self, kind: str, tag: str, var_dir: Path, env: dict[str, str]) -> None:
        self.kind = kind
        self.env = env
        self.var_dir = var_dir
        self.name = f"fullstack-{uuid.uuid4().hex[:8]}"
        self.log_path = ARTIFACTS / f"fullstack-{tag}-{kind}-{self.name[-8:]}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "celery", "-A", "config", self.kind, "--loglevel=INFO"]
        if self.kind == "worker":
            return [
                *base,
                "--concurrency=1",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"{self.name}@%h",
            ]
        return [*base, "--schedule", str(self.var_dir / "beat")]

    def start(self) -> CeleryProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=BASE_DIR,
                env=app_environment(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """The worker's "ready." line (it consumes from the broker from then on)."""

        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"the {self.kind} exited while starting:\n{self.log()}")
            return " ready." in self.log_path.read_text(errors="replace")

        wait_until(ready, f"'ready.' line in the {self.kind} log", timeout, interval=0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """`sig` to the whole process group: the worker and its pool children."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:  # not alive
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class Daphne(DaphneServer):
    """DaphneServer that can be signalled, and that is always killed at teardown."""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/chat/"

    def log(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:g} s:\n{self.log()}"
            ) from None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def database_name() -> str:
    return str(connection.settings_dict["NAME"])


def proxied_database_url(proxy_port: int) -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@127.0.0.1:{proxy_port}/{db['NAME']}"


def base_environment(redis_url: str, database_url: str, ollama_url: str, var_dir: Path) -> dict:
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "OLLAMA_URL": ollama_url,
        "TELEMETRY_OLLAMA_URLS": ollama_url,
        "OLLAMA_DEFAULT_MODEL": MODEL,
        "OLLAMA_MAX_CONCURRENCY": "64",
        "OLLAMA_MAX_QUEUE": "400",
        "CHAT_MESSAGES_PER_MINUTE": "0",
        "CHAT_MAX_GENERATIONS_PER_USER": "0",
        "CHAT_FLUSH_INTERVAL": "0.2",
        "CHAT_HEARTBEAT_SECONDS": "0.5",
        "CHAT_SHUTDOWN_GRACE_SECONDS": "5",
        "DB_POOL_MAX_SIZE": str(DB_POOL_MAX_SIZE),
        "VAR_DIR": str(var_dir),
    }


@dataclass
class Stack:
    """Private Redis, the database proxy, two Daphne processes, a Celery worker and beat."""

    tag: str
    var_dir: Path
    ollama_url: str
    env: dict[str, str] = field(default_factory=dict)
    daphne_count: int = 2
    celery: bool = True  # the worker and beat (a test about web processes may do without)

    def __post_init__(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.tag, self.var_dir / "redis")
        self.proxy = PgProxy()
        self.daphnes: list[Daphne] = []
        self.worker: CeleryProcess | None = None
        self.beat: CeleryProcess | None = None
        self.retired: list[Any] = []  # replaced processes, killed at teardown all the same

    @property
    def app_env(self) -> dict[str, str]:
        env = base_environment(
            self.redis.url,
            proxied_database_url(self.proxy.port),
            self.ollama_url,
            self.var_dir,
        )
        env.update(self.env)
        return env

    def _new_daphne(self, index: int) -> Daphne:
        return Daphne(f"fullstack-{self.tag}-daphne{index + 1}", **self.app_env)

    def start(self) -> Stack:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            self.redis.start()
            self.proxy.start()
            if self.celery:
                self.worker = self.new_worker()
                self.beat = CeleryProcess(
                    "beat", self.tag, self.var_dir, self.app_env | {"LOG_LEVEL": "INFO"}
                ).start()
            self.daphnes = [self._new_daphne(i) for i in range(self.daphne_count)]
            self._start_daphnes(self.daphnes)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daphnes(self, daphnes: list[Daphne]) -> None:
        errors: list[BaseException] = []

        def start(daphne: Daphne) -> None:
            try:
                daphne.start(timeout=60)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(d,)) for d in daphnes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def new_worker(self) -> CeleryProcess:
        worker = CeleryProcess(
            "worker", self.tag, self.var_dir, self.app_env | {"LOG_LEVEL": "INFO"}
        )
        return worker.start()

    def replace_worker(self) -> CeleryProcess:
        if self.worker is not None:
            self.retired.append(self.worker)
        self.worker = self.new_worker()
        return self.worker

    def revive(self) -> None:
        """Start again whatever a previous test stopped or killed."""
        if not self.redis.running:
            self.redis.start()
        if self.proxy.is_cut:
            self.proxy.restore()
        if self.celery and (self.worker is None or not self.worker.alive):
            self.replace_worker()
        if self.beat is not None and not self.beat.alive:
            self.retired.append(self.beat)
            self.beat = CeleryProcess(
                "beat", self.tag, self.var_dir, self.app_env | {"LOG_LEVEL": "INFO"}
            ).start()
        dead = [i for i, d in enumerate(self.daphnes) if not d.alive]
        for i in dead:
            self.retired.append(self.daphnes[i])
            self.daphnes[i] = self._new_daphne(i)
        self._start_daphnes([self.daphnes[i] for i in dead])

    def wait_heartbeats(self, timeout: float = WAIT) -> None:
        """Every live web process has its heartbeat row (chat.models.WebProcess).

        The test database is flushed after each test, heartbeat rows included; until a process
        has beaten again its peers take it for dead and interrupt the replies it starts.
        """
        try:
            from chat.models import WebProcess
        except ImportError:  # a product without heartbeats
            return
        pids = {d.process.pid for d in self.daphnes if d.alive and d.process is not None}
        wait_until(
            lambda: pids <= set(WebProcess.objects.values_list("pid", flat=True)),
            f"heartbeat rows of the web processes {sorted(pids)}",
            timeout,
            interval=0.1,
        )

    def stop(self) -> None:
        """Kill every process (SIGKILL: the next stack must not wait for a warm shutdown)."""
        for process in [*self.daphnes, self.worker, self.beat, *self.retired]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.kill() if isinstance(process, CeleryProcess) else process.stop()
        with contextlib.suppress(Exception):
            self.proxy.stop()
        with contextlib.suppress(Exception):
            self.redis.stop()

    def logs(self, chars: int = 1500) -> str:
        parts = []
        for process in [*self.daphnes, self.worker, self.beat]:
            if process is not None:
                parts.append(f"--- {process.log_path.name}\n{process.log(chars)}")
        return "\n".join(parts)


# ------------------------------------------------------------------------------- PostgreSQL


class ConnectionSampler:
    """Counts pg_stat_activity rows of one database from a thread (a direct connection to the
    `postgres` database, which is not counted)."""

    def __init__(self, database: str, interval: float = 0.1) -> None:
        self.database = database
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
            ) as conn:
                while not self._stop.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        (self.database,),
                    ).fetchone()
                    assert row is not None  # count(*) always answers one row
                    self.samples.append((time.monotonic(), int(row[0])))
                    self._stop.wait(self.interval)
        except BaseException as exc:
            self.error = exc

    @property
    def peak(self) -> int:
        return max((count for _, count in self.samples), default=0)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# ------------------------------------------------------------------------------- invariants


def assert_nothing_lost(timeout: float = WAIT) -> None:
    """No reply left `streaming` (waited for: another process marks a dead one's rows), no
    conversation without messages, and every user message followed by an assistant message."""
    from chat.models import Conversation, Message

    deadline = time.monotonic() + timeout
    while Message.objects.filter(status=Message.Status.STREAMING).exists():
        if time.monotonic() > deadline:
            rows = list(
                Message.objects.filter(status=Message.Status.STREAMING).values(
                    "id", "conversation_id", "updated_at", "error_code"
                )[:20]
            )
            raise AssertionError(f"replies still 'streaming' {timeout:g} s after the test: {rows}")
        time.sleep(0.1)

    problems: list[str] = []
    empty = list(Conversation.objects.filter(messages__isnull=True).values_list("id", "title")[:20])
    if empty:
        problems.append(f"conversations without messages: {empty}")

    messages = Message.objects.order_by("conversation_id", "id").values_list(
        "id", "conversation_id", "role", "status", "error_code"
    )
    previous: tuple | None = None
    orphans: list[int] = []
    for row in messages:
        _id, conversation, role, status, code = row
        if previous is not None and previous[1] == conversation and previous[2] == "user":
            if role != Message.Role.ASSISTANT:
                orphans.append(previous[0])
        elif previous is not None and previous[2] == "user":
            orphans.append(previous[0])  # the last message of its conversation
        if role == Message.Role.ASSISTANT and status == Message.Status.FAILED and not code:
            problems.append(f"failed reply {_id} without an error_code")
        previous = row
    if previous is not None and previous[2] == "user":
        orphans.append(previous[0])
    if orphans:
        problems.append(f"user messages with no assistant message after them: {orphans[:20]}")
    if problems:
        raise AssertionError("; ".join(problems))
