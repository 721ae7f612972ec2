"""Benchmark: `POST /api/chat/stream/` versus the same Ollama double called directly.

    .venv/bin/python -m tests.bench.chat_stream [--concurrency 1,50] [--tokens 200]
                                                [--requests N] [--json out.json]

It sets everything up itself, in a throwaway directory: a SQLite database (migrated in a
subprocess), a user and its JWT, the Ollama test double in this process with instant tokens
(token_delay=0, a fixed reply of `--tokens` tokens, enough parallel slots never to queue), and
the app in Daphne subprocesses pointed at the double: one with a wide gate
(`OLLAMA_MAX_CONCURRENCY=64`, so the gate is not the bottleneck) and, unless `--no-gate-one`,
one at the default `OLLAMA_MAX_CONCURRENCY=1`, which shows the queueing.

At each concurrency level it runs `--requests` streams (default max(20, 3 x concurrency)) per
target with that many in flight at once (closed loop, after an unmeasured warm-up round), and
prints p50/p95 time to first token, per-stream and aggregate tokens/s and the ratios
gateway/direct. Nothing here asserts on time: figures are printed (and written with `--json`).

Definitions, per stream, timed on the client with `time.perf_counter()`:
- TTFT: from sending the request to the first `content` event (direct: the first NDJSON chunk
  with non-empty `message.content`);
- tokens/s: (content events - 1) / (time of the last one - time of the first one), the rate
  at which tokens are relayed once they flow (TTFT excluded);
- aggregate tokens/s: all content events of the level / its wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.ollama_double import OllamaDouble
from tests.support.live import BASE_DIR, daphne_command, free_port

MODEL = "llama3.2:3b"
WIDE_GATE = 64
# Variables of the caller's environment that must not reach the app under test.
_STRIPPED_PREFIXES = ("OLLAMA_", "TELEMETRY_", "CHAT_", "JWT_", "DB_", "UPLOAD_")
_STRIPPED = {
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_ENV",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DEBUG",
    "VAR_DIR",
    "MEDIA_ROOT",
    "STATIC_ROOT",
    "DJANGO_SETTINGS_MODULE",
}

# Run in a subprocess with the bench's environment. The user needs no password (None: unusable,
# and no slow hashing): the benchmark authenticates with the access token printed here.
_SETUP_CODE = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from accounts.models import User
from rest_framework_simplejwt.tokens import AccessToken
user = User.objects.create_user("bench@example.com", None)
print("TOKEN=" + str(AccessToken.for_user(user)))
"""


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    concurrency: Sequence[int] = (1, 50)
    tokens: int = 200
    requests: int | None = None  # per level and target; None: max(20, 3 x concurrency)
    warmup: int = 5  # sequential unmeasured requests per target before the first level
    gate_one: bool = True  # also measure the gateway at the default OLLAMA_MAX_CONCURRENCY=1
    gate: int = WIDE_GATE  # OLLAMA_MAX_CONCURRENCY of the main gateway run
    keep_dir: bool = False  # keep the temporary directory (database, Daphne logs)
    verbose: bool = True  # print the tables as they are measured

    def requests_at(self, concurrency: int) -> int:
        if self.requests is not None:
            return max(self.requests, concurrency)
        return max(20, 3 * concurrency)


# --------------------------------------------------------------------------- results


@dataclass
class StreamResult:
    ok: bool
    tokens: int
    ttft: float | None  # seconds
    tokens_per_second: float | None
    total: float  # seconds, request sent -> response ended
    error: str | None = None
    queue_position: int | None = None  # the largest `queued` position seen (gateway)
    accepted: float | None = None  # seconds to the `accepted` status event (gateway)
    started: float | None = None  # seconds to the `started` status event (gateway)


@dataclass
class TargetSummary:
    label: str
    requests: int
    completed: int  # streams that received every token, in order, and a clean end
    failed: int
    errors: list[str]
    tokens_received: int
    wall_seconds: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_max_ms: float | None
    stream_tps_p50: float | None
    stream_tps_mean: float | None
    aggregate_tps: float | None
    total_p50_ms: float | None
    total_p95_ms: float | None
    # Gateway only, p50 from sending the request: the `accepted` event (authenticated, request
    # prepared, gate entered, user message saved; Daphne sends the response headers with it)
    # and the `started` event (slot held, resource snapshot taken, reply row created); the
    # first token follows the upstream request.
    accepted_p50_ms: float | None
    started_p50_ms: float | None
    queued_streams: int
    max_queue_position: int | None
    server_cpu_seconds: float | None  # Daphne's CPU time during the level (gateway only)
    server_cpu_percent: float | None  # the same over the wall time: 100 = one core busy
    server_cpu_us_per_token: float | None  # the same per token relayed (per-request work included)
    client_cpu_seconds: float  # this process (clients + the double) during the level
    machine_cpu_percent: float | None = None  # all CPUs busy, whoever uses them (100 = all)


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    direct: TargetSummary
    gateway: TargetSummary
    ratios: dict[str, float | None]  # gateway / direct
    gateway_gate_one: TargetSummary | None = None
    ratios_gate_one: dict[str, float | None] | None = None


@dataclass
class BenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def summarize(
    label: str,
    results: list[StreamResult],
    wall: float,
    server_cpu: float | None,
    client_cpu: float,
) -> TargetSummary:
    good = [r for r in results if r.ok]
    ttfts = [r.ttft for r in good if r.ttft is not None]
    rates = [r.tokens_per_second for r in good if r.tokens_per_second is not None]
    totals = [r.total for r in good]
    received = sum(r.tokens for r in results)
    positions = [r.queue_position for r in results if r.queue_position]
    errors = sorted({r.error for r in results if r.error})
    return TargetSummary(
        label=label,
        requests=len(results),
        completed=len(good),
        failed=len(results) - len(good),
        errors=errors[:5],
        tokens_received=received,
        wall_seconds=wall,
        ttft_p50_ms=_ms(percentile(ttfts, 0.50)),
        ttft_p95_ms=_ms(percentile(ttfts, 0.95)),
        ttft_max_ms=_ms(max(ttfts, default=None)),
        stream_tps_p50=percentile(rates, 0.50),
        stream_tps_mean=sum(rates) / len(rates) if rates else None,
        aggregate_tps=received / wall if wall > 0 else None,
        total_p50_ms=_ms(percentile(totals, 0.50)),
        total_p95_ms=_ms(percentile(totals, 0.95)),
        accepted_p50_ms=_ms(percentile([r.accepted for r in good if r.accepted is not None], 0.5)),
        started_p50_ms=_ms(percentile([r.started for r in good if r.started is not None], 0.5)),
        queued_streams=len(positions),
        max_queue_position=max(positions, default=None),
        server_cpu_seconds=server_cpu,
        server_cpu_percent=(
            server_cpu / wall * 100 if server_cpu is not None and wall > 0 else None
        ),
        server_cpu_us_per_token=(
            server_cpu / received * 1e6 if server_cpu is not None and received else None
        ),
        client_cpu_seconds=client_cpu,
    )


RATIO_FIELDS = (
    "ttft_p50_ms",
    "ttft_p95_ms",
    "stream_tps_p50",
    "aggregate_tps",
    "total_p50_ms",
)


def ratios(gateway: TargetSummary, direct: TargetSummary) -> dict[str, float | None]:
    return {name: ratio(getattr(gateway, name), getattr(direct, name)) for name in RATIO_FIELDS}


# --------------------------------------------------------------------------- one stream


class _Timer:
    """Counts content tokens and their arrival times for one stream."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.parts: list[str] = []
        # The gateway may merge tokens that queued up into one event: it then reports the
        # count Ollama gave (eval_count) instead of the number of events.
        self.counted: int | None = None
        self.finished_at: float | None = None

    def token(self, text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.parts.append(text)

    def result(self, expected: str, clean_end: bool, error: str | None, **extra) -> StreamResult:
        end = time.perf_counter()
        count = self.counted if self.counted is not None else len(self.parts)
        if error is None and not clean_end:
            error = "the stream ended without its final event"
        if error is None and "".join(self.parts) != expected:
            error = f"wrong content: {count} tokens received"
        rate = None
        # Merged events arrive together: time the stream up to its end (the metrics event
        # for the gateway), not up to its last content event.
        last = self.finished_at if self.finished_at is not None else self.last
        if self.first is not None and last is not None and count > 1 and last > self.first:
            rate = (count - 1) / (last - self.first)
        return StreamResult(
            ok=error is None,
            tokens=count,
            ttft=None if self.first is None else self.first - self.start,
            tokens_per_second=rate,
            total=end - self.start,
            error=error,
            **extra,
        )


async def direct_stream(client: httpx.AsyncClient, index: int, expected: str) -> StreamResult:
    """One streamed `/api/chat` straight to the double."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Benchmark prompt {index}"}],
        "stream": True,
    }
    timer = _Timer()
    done, error = False, None
    try:
        async with client.stream("POST", "/api/chat", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            else:
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    chunk = json.loads(line)
                    if "error" in chunk:
                        error = f"stream error: {chunk['error']}"
                        break
                    content = (chunk.get("message") or {}).get("content")
                    if content:
                        timer.token(content)
                    if chunk.get("done"):
                        done = True
    except (httpx.HTTPError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return timer.result(expected, done, error)


async def gateway_stream(
    client: httpx.AsyncClient, index: int, expected: str, headers: dict[str, str]
) -> StreamResult:
    """One `POST /api/chat/stream/` through the app (Server-Sent Events)."""
    body = {"message": f"Benchmark prompt {index}", "model": MODEL}
    timer = _Timer()
    metrics = finished = False
    error: str | None = None
    position: int | None = None
    accepted = started = None
    try:
        async with client.stream(
            "POST", "/api/chat/stream/", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                await response.aread()
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        finished = True
                        continue
                    event = json.loads(data)
                    kind = event.get("type")
                    if kind == "content":
                        timer.token(event["content"])
                    elif kind == "status" and event.get("status") == "accepted":
                        accepted = time.perf_counter() - timer.start
                    elif kind == "status" and event.get("status") == "started":
                        started = time.perf_counter() - timer.start
                    elif kind == "metrics":
                        metrics = True
                        timer.counted = event.get("eval_count")
                        timer.finished_at = time.perf_counter()
                    elif kind == "queued":
                        position = max(position or 0, int(event["position"]))
                    elif kind == "error":
                        error = f"error event: {event.get('code')}: {event.get('detail')}"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None and finished and not metrics:
        error = "no metrics event"
    return timer.result(
        expected, finished, error, queue_position=position, accepted=accepted, started=started
    )


# --------------------------------------------------------------------------- processes


def app_environment(work_dir: Path, secret_key: str, **overrides: str) -> dict[str, str]:
    """The environment of the app's processes: the bench's own database and secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _STRIPPED and not key.startswith(_STRIPPED_PREFIXES)
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{work_dir / 'bench.sqlite3'}",
        VAR_DIR=str(work_dir / "var"),
        SECRET_KEY=secret_key,
        DEBUG="false",
        LOG_LEVEL="WARNING",
        JWT_ACCESS_MINUTES="240",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def prepare_database(work_dir: Path, secret_key: str) -> str:
    """Migrate a fresh SQLite database, create the bench user; return its access token."""
    env = app_environment(work_dir, secret_key)
    done = subprocess.run(
        [sys.executable, "-c", _SETUP_CODE],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    tokens = [line[6:] for line in done.stdout.splitlines() if line.startswith("TOKEN=")]
    if done.returncode != 0 or not tokens:
        raise RuntimeError(f"setting up the bench database failed:\n{done.stderr[-3000:]}")
    return tokens[-1]


class BenchDaphne:
    """The app in a Daphne subprocess (like tests.support.live.DaphneServer, without the
    test database: the environment is the bench's own)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                daphne_command(self.port),
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne ({self.name}) exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"Daphne ({self.name}) did not answer in {timeout} s:\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float | None:
        if self.process is None or self.process.poll() is not None:
            return None
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- running


StreamFn = Callable[[int], Awaitable[StreamResult]]


@dataclass
class Target:
    label: str
    stream: StreamFn
    server: BenchDaphne | None = None


async def run_streams(stream: StreamFn, concurrency: int, count: int, first_index: int):
    """`count` streams, `concurrency` of them in flight at any time; (results, wall seconds)."""
    indices = itertools.count(first_index)
    stop_at = first_index + count
    results: list[StreamResult] = []

    async def worker() -> None:
        while (index := next(indices)) < stop_at:
            results.append(await stream(index))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


async def measure(target: Target, concurrency: int, count: int, index: int) -> TargetSummary:
    # Unmeasured round at this concurrency: opens the pooled connections on every hop.
    await run_streams(target.stream, concurrency, concurrency, index)
    server_before = target.server.cpu_seconds() if target.server else None
    client_before = time.process_time()
    psutil.cpu_percent(interval=None)  # starts the machine-wide measurement
    results, wall = await run_streams(target.stream, concurrency, count, index + concurrency)
    machine = psutil.cpu_percent(interval=None)
    client_cpu = time.process_time() - client_before
    server_cpu = None
    if target.server and server_before is not None:
        after = target.server.cpu_seconds()
        server_cpu = None if after is None else after - server_before
    summary = summarize(target.label, results, wall, server_cpu, client_cpu)
    summary.machine_cpu_percent = machine
    return summary


async def run_levels(
    config: BenchConfig,
    double: OllamaDouble,
    gateway: BenchDaphne,
    gateway_one: BenchDaphne | None,
    token: str,
    expected: str,
    emit: Callable[[str], None],
) -> list[LevelResult]:
    top = max(config.concurrency)
    limits = httpx.Limits(max_connections=top + 8, max_keepalive_connections=top + 8)
    timeout = httpx.Timeout(120.0, connect=10.0)
    headers = {"Authorization": f"Bearer {token}"}
    clients: list[httpx.AsyncClient] = []

    def client(url: str) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout))
        return clients[-1]

    direct_client = client(double.url)
    targets = {
        "direct": Target("direct", lambda i: direct_stream(direct_client, i, expected)),
    }
    gw_client = client(gateway.url)
    targets["gateway"] = Target(
        f"gateway (gate {config.gate})",
        lambda i: gateway_stream(gw_client, i, expected, headers),
        gateway,
    )
    if gateway_one is not None:
        one_client = client(gateway_one.url)
        targets["gateway_one"] = Target(
            "gateway (gate 1)",
            lambda i: gateway_stream(one_client, i, expected, headers),
            gateway_one,
        )

    levels: list[LevelResult] = []
    index = 0
    try:
        # Warm up every hop (imports, URL resolving, pools, the double's model "load").
        for target in targets.values():
            for _ in range(config.warmup):
                warm = await target.stream(index)
                index += 1
                if not warm.ok:
                    raise RuntimeError(f"warm-up of {target.label} failed: {warm.error}")
        for concurrency in config.concurrency:
            count = config.requests_at(concurrency)
            summaries: dict[str, TargetSummary] = {}
            for key, target in targets.items():
                if key == "gateway_one" and concurrency == 1:
                    continue  # with one stream at a time the gate cannot make a difference
                summaries[key] = await measure(target, concurrency, count, index)
                index += count + concurrency
            level = LevelResult(
                concurrency=concurrency,
                requests=count,
                direct=summaries["direct"],
                gateway=summaries["gateway"],
                ratios=ratios(summaries["gateway"], summaries["direct"]),
            )
            if "gateway_one" in summaries:
                level.gateway_gate_one = summaries["gateway_one"]
                level.ratios_gate_one = ratios(summaries["gateway_one"], summaries["direct"])
            levels.append(level)
            emit(format_level(level, config))
    finally:
        for c in clients:
            await c.aclose()
    return levels


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Set everything up, measure every level, tear down; the figures and the printed report."""
    if not config.concurrency or min(config.concurrency) < 1:
        raise ValueError("concurrency levels must be positive")
    if config.tokens < 2:
        raise ValueError("at least 2 tokens per reply are needed for a rate")
    lines: list[str] = []

    def emit(text: str) -> None:
        lines.append(text)
        if config.verbose:
            print(text, flush=True)

    top = max(config.concurrency)
    tokens = [f" w{i}" for i in range(config.tokens)]
    expected = "".join(tokens)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-chat-stream-"))
    secret_key = secrets.token_urlsafe(64)
    servers: list[BenchDaphne] = []
    double = OllamaDouble(token_delay=0.0, num_parallel=top + WIDE_GATE, max_queue=4 * top + 64)
    result = BenchResult(
        config={
            "concurrency": list(config.concurrency),
            "tokens": config.tokens,
            "requests": {c: config.requests_at(c) for c in config.concurrency},
            "warmup": config.warmup,
            "gate": config.gate,
            "gate_one": config.gate_one,
        },
        environment={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "database": "sqlite (temporary file)",
            "model": MODEL,
            "load_average_at_start": _load_average(),
        },
    )
    try:
        double.start()
        double.script(tokens=tokens, times=None)
        started = time.perf_counter()
        common = {
            "OLLAMA_URL": double.url,
            "OLLAMA_DEFAULT_MODEL": MODEL,
            "OLLAMA_MAX_QUEUE": str(4 * top + 64),
            # One benchmark user sends far more than a person would.
            "CHAT_MESSAGES_PER_MINUTE": "0",
            "CHAT_MAX_GENERATIONS_PER_USER": "0",
        }
        gateway = BenchDaphne(
            "bench-daphne-wide",
            app_environment(
                work_dir, secret_key, OLLAMA_MAX_CONCURRENCY=str(config.gate), **common
            ),
            work_dir,
        )
        servers.append(gateway)
        gateway_one = None
        if config.gate_one and top > 1:
            gateway_one = BenchDaphne(
                "bench-daphne-gate1",
                app_environment(work_dir, secret_key, OLLAMA_MAX_CONCURRENCY="1", **common),
                work_dir,
            )
            servers.append(gateway_one)
        for server in servers:
            server.launch()
        # Daphne answers /health without the database: migrate while the servers start.
        token = prepare_database(work_dir, secret_key)
        for server in servers:
            server.wait_ready()
        load = result.environment["load_average_at_start"]
        emit(
            f"chat stream benchmark: {config.tokens} instant tokens per reply, model {MODEL}, "
            f"{os.cpu_count()} CPUs (load average {load}), Python {platform.python_version()}, "
            f"setup {time.perf_counter() - started:.1f} s"
        )
        emit(LEGEND)
        result.levels = asyncio.run(
            run_levels(config, double, gateway, gateway_one, token, expected, emit)
        )
        emit(format_summary(result.levels, config))
    finally:
        for server in servers:
            server.stop()
        double.stop()
        if config.keep_dir:
            emit(f"kept {work_dir} (database and Daphne logs)")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    result.report = "\n".join(lines)
    return result


# --------------------------------------------------------------------------- reporting

LEGEND = """\
direct  = the Ollama double's own /api/chat (NDJSON), called from this process
gateway = POST /api/chat/stream/ (SSE) through the app in Daphne (SQLite), relaying the same double
TTFT and wall ratios above 1: the gateway is slower; tokens/s ratios below 1: it relays fewer.
At high concurrency compare the aggregate tokens/s: the double interleaves every stream it
serves token by token, while through the gateway streams start staggered (each request's set-up
waits its turn in the app), so per-stream rates are not like for like there. Client timings
include this process's own load (the clients and the double share one interpreter)."""


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_level(level: LevelResult, config: BenchConfig) -> str:
    one = level.gateway_gate_one
    head = ["", "direct", f"gateway (gate {config.gate})", "gw/direct"]
    if one is not None:
        head += ["gateway (gate 1)", "gw1/direct"]
    rows: list[list[str]] = [head]

    def row(name: str, attr: str, digits: int, with_ratio: bool = True) -> None:
        cells = [
            name,
            _fmt(getattr(level.direct, attr), digits),
            _fmt(getattr(level.gateway, attr), digits),
            _fmt_ratio(level.ratios.get(attr)) if with_ratio else "",
        ]
        if one is not None and level.ratios_gate_one is not None:
            cells += [
                _fmt(getattr(one, attr), digits),
                _fmt_ratio(level.ratios_gate_one.get(attr)) if with_ratio else "",
            ]
        rows.append(cells)

    row("TTFT p50 (ms)", "ttft_p50_ms", 2)
    row("TTFT p95 (ms)", "ttft_p95_ms", 2)
    row("tokens/s per stream p50", "stream_tps_p50", 0)
    row("tokens/s aggregate", "aggregate_tps", 0)
    row("  gateway: accepted p50 (ms)", "accepted_p50_ms", 2, with_ratio=False)
    row("  gateway: started p50 (ms)", "started_p50_ms", 2, with_ratio=False)
    row("stream wall p50 (ms)", "total_p50_ms", 1)
    row("streams complete", "completed", 0, with_ratio=False)
    row("Daphne CPU s", "server_cpu_seconds", 2, with_ratio=False)
    row("Daphne CPU % of one core", "server_cpu_percent", 0, with_ratio=False)
    row("Daphne CPU us per token", "server_cpu_us_per_token", 0, with_ratio=False)
    row("client+double CPU s", "client_cpu_seconds", 2, with_ratio=False)
    row("machine CPU busy %", "machine_cpu_percent", 0, with_ratio=False)
    if one is not None:
        rows.append(
            [
                "streams queued (max pos)",
                "",
                "",
                "",
                f"{one.queued_streams} ({one.max_queue_position})",
                "",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    title = (
        f"\n== concurrency {level.concurrency}: {level.requests} streams per target, "
        f"{level.concurrency} in flight"
    )
    out = [title]
    for r in rows:
        out.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(r)
            )
        )
    for summary in (level.direct, level.gateway, one):
        if summary is not None and summary.errors:
            out.append(f"  {summary.label}: {summary.failed} failed, e.g. {summary.errors[0]}")
    return "\n".join(out)


def format_summary(levels: list[LevelResult], config: BenchConfig) -> str:
    out = ["\n== ratios gateway/direct"]
    for level in levels:
        runs = [(f"gate {config.gate}", level.ratios)]
        if level.ratios_gate_one is not None:
            runs.append(("gate 1", level.ratios_gate_one))
        for name, r in runs:
            out.append(
                f"concurrency {level.concurrency:>3} ({name:>7}): "
                f"TTFT p50 {_fmt_ratio(r['ttft_p50_ms'])}, p95 {_fmt_ratio(r['ttft_p95_ms'])}; "
                f"tokens/s per stream {_fmt_ratio(r['stream_tps_p50'])}, "
                f"aggregate {_fmt_ratio(r['aggregate_tps'])}"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.chat_stream",
        description="TTFT and tokens/s of POST /api/chat/stream/ versus the Ollama double direct.",
    )
    parser.add_argument("--concurrency", type=_levels, default=[1, 50], help="e.g. 1,10,50")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (>= 2)")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="streams per level and target (default max(20, 3 x concurrency))",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured sequential requests")
    parser.add_argument(
        "--no-gate-one",
        dest="gate_one",
        action="store_false",
        help="skip the run at the default OLLAMA_MAX_CONCURRENCY=1",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    config = BenchConfig(
        concurrency=args.concurrency,
        tokens=args.tokens,
        requests=args.requests,
        warmup=args.warmup,
        gate_one=args.gate_one,
        keep_dir=args.keep,
    )
    result = run_benchmark(config)
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    failed = sum(
        s.failed
        for level in result.levels
        for s in (level.direct, level.gateway, level.gateway_gate_one)
        if s is not None
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
