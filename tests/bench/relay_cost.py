"""Benchmark: what relaying a token costs the gateway, against a bare proxy, in one run.

    .venv/bin/python -m tests.bench.relay_cost [--streams 1,50,200] [--ws-streams 500]
                                               [--modes embedded,redis] [--tokens 200]
                                               [--json out.json] [--markdown out.md]

Issue 16. Everything is set up here, in a throwaway directory, and measured side by side:
- direct: the Ollama test double (`python -m tests.ollama_double`, its own process), streaming
  `--tokens` instant tokens (token_delay=0), called straight;
- peer: tests/bench/bare_proxy.py, ~60 lines of Starlette and httpx relaying /api/chat, no
  auth, no database, served by Daphne as its own process: the least a Python relay costs;
- sse: `POST /api/chat/stream/` through the app in Daphne;
- ws: `chat.send` on `/ws/chat/` (sockets opened and authenticated before the timed window);
- ollama: the authenticated Ollama-compatible proxy `POST /ollama/api/chat`;
each gateway target in every `--modes`: `embedded` (in-memory channel layer, local gate) and
`redis` (REDIS_URL: channels-redis and the Redis gate, on a redis-server started for the run
unless `--redis-url` names one). The app uses a SQLite file in both modes.

Levels: `--streams` (default 1,50,200): at 1, `--sequential` streams one after the other
(default 10); at C > 1, one round of C streams sent at once. `--ws-streams` (default 500) adds a
WebSocket-only level. Direct and the peer do not depend on the mode: measured once.

Figures, per target and level:
- TTFT p50/p95: request sent -> first content (client clock);
- tokens/s: all tokens received / the level's wall time (aggregate);
- CPU us per token: user+system CPU of the serving process (from /proc/<pid>/stat, its child
  processes included) over the timed window / the tokens relayed. For direct, the serving
  process is the double. This is the robust figure on a busy machine;
- ratios to direct and to the peer.
A markdown table of all of it is printed at the end (paste it into docs/performance.md), then
each goal of issue 16, met or not, from this run's figures. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.bench.chat_stream import (
    MODEL,
    BenchDaphne,
    _levels,
    _load_average,
    app_environment,
    percentile,
    prepare_database,
    ratio,
)
from tests.bench.ws_stream import (
    DoubleProcess,
    Reply,
    SocketCheck,
    close_sockets,
    open_sockets,
    raise_open_files_limit,
    reply_tokens,
)
from tests.support.live import BASE_DIR, daphne_command, free_port

TARGETS = ("direct", "peer", "sse", "ws", "ollama")
GATEWAY_TARGETS = ("sse", "ws", "ollama")
TIMEOUT = 120.0
REDIS_ARGS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
# Raw (collapsed) stacks of the threads holding the GIL, without pausing the process.
PY_SPY_ARGS = ("-f", "raw", "-r", "1000", "-g", "--nonblocking")


# --------------------------------------------------------------------------- configuration


@dataclass
class RelayConfig:
    streams: Sequence[int] = (1, 50, 200)
    ws_streams: int = 500  # a WebSocket-only level; 0: none
    modes: Sequence[str] = ("embedded", "redis")
    targets: Sequence[str] = TARGETS
    tokens: int = 200
    sequential: int = 10  # streams measured one after another at level 1
    warmup: int = 3  # unmeasured sequential streams per target and mode
    warm_round: int = 20  # then one unmeasured round of this many at once (0: none)
    redis_url: str | None = None  # None: start a redis-server for the run
    profile_dir: Path | None = None  # py-spy the serving process of each gateway window
    app_env: dict[str, str] = field(default_factory=dict)  # more settings for the app
    keep_dir: bool = False
    verbose: bool = True


# --------------------------------------------------------------------------- results


@dataclass
class Stream:
    ok: bool
    tokens: int
    ttft: float | None
    error: str | None = None


@dataclass
class Row:
    mode: str  # "-" for direct and the peer
    target: str
    streams: int
    requests: int
    completed: int
    tokens: int
    wall: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    aggregate_tps: float | None
    cpu_seconds: float | None  # the serving process
    cpu_us_per_token: float | None
    double_cpu_us_per_token: float | None
    errors: list[str] = field(default_factory=list)
    # Filled once every row of the run is there.
    cpu_vs_direct: float | None = None
    cpu_vs_peer: float | None = None
    ttft_vs_peer: float | None = None
    tps_vs_peer: float | None = None


@dataclass
class RelayResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    markdown: str = ""
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def failures(self) -> int:
        return sum(r.requests - r.completed for r in self.rows)


# --------------------------------------------------------------------------- CPU from /proc


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu(pid: int | None) -> float | None:
    """The CPU seconds of a process and of its live children (and of its waited-for ones:
    cutime + cstime)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(OSError):
                    total += _proc_cpu(child.pid)
        return total
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- one stream


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def ndjson_stream(
    session: aiohttp.ClientSession,
    url: str,
    index: int,
    reply: Reply,
    headers: dict[str, str] | None = None,
) -> Stream:
    """Ollama's /api/chat (direct, the peer or the /ollama proxy): a chunk per token."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Benchmark prompt {index}"}],
        "stream": True,
    }
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    done = False
    try:
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                text = await response.text()
                return Stream(False, 0, None, f"HTTP {response.status}: {text[:200]}")
            async for line in response.content:
                if not line.strip():
                    continue
                chunk = _decode(line)
                if chunk is None:
                    return Stream(False, len(parts), None, f"not JSON: {line[:100]!r}")
                if "error" in chunk:
                    return Stream(False, len(parts), None, f"stream error: {chunk['error']}")
                content = (chunk.get("message") or {}).get("content")
                if content:
                    if first is None:
                        first = time.perf_counter()
                    parts.append(content)
                if chunk.get("done"):
                    done = True
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Stream(False, len(parts), None, f"{type(exc).__name__}: {exc}")
    ttft = None if first is None else first - start
    if not done:
        return Stream(False, len(parts), ttft, "no final chunk")
    if "".join(parts) != reply.text:
        return Stream(False, len(parts), ttft, f"wrong text: {len(parts)} tokens")
    return Stream(True, len(parts), ttft)


async def sse_stream(
    session: aiohttp.ClientSession, url: str, index: int, reply: Reply, headers: dict[str, str]
) -> Stream:
    """POST /api/chat/stream/: tokens may be merged into one event; eval_count counts them."""
    body = {"message": f"Benchmark prompt {index}", "model": MODEL}
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    count: int | None = None
    finished = False
    try:
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                text = await response.text()
                return Stream(False, 0, None, f"HTTP {response.status}: {text[:200]}")
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    finished = True
                    continue
                event = _decode(data)
                kind = event.get("type") if event else None
                if kind == "content":
                    if first is None:
                        first = time.perf_counter()
                    parts.append(event["content"])  # type: ignore[index]
                elif kind == "metrics":
                    count = event.get("eval_count")  # type: ignore[union-attr]
                elif kind == "error":
                    return Stream(False, 0, None, f"error event: {event!r:.200}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Stream(False, 0, None, f"{type(exc).__name__}: {exc}")
    ttft = None if first is None else first - start
    text = "".join(parts)
    if not finished or count is None:
        return Stream(False, reply.tokens_within(len(text)), ttft, "no metrics or [DONE]")
    if text != reply.text or count != len(reply.tokens):
        return Stream(False, reply.tokens_within(len(text)), ttft, f"wrong text ({count})")
    return Stream(True, count, ttft)


async def ws_converse(ws: Any, index: int, reply: Reply) -> Stream:
    """One chat.send on an open socket; offsets, text and eval_count checked (SocketCheck)."""
    check = SocketCheck(reply)
    body = {"type": "chat.send", "message": f"Benchmark prompt {index}", "model": MODEL}
    try:
        check.start = time.perf_counter()
        await ws.send(json.dumps(body))
        while not check.finished:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            check.frame(frame)
    except TimeoutError:
        check._fail(f"no frame for {TIMEOUT:.0f} s")
    except Exception as exc:
        check._fail(f"{type(exc).__name__}: {exc}")
    sample = check.result(None)
    return Stream(sample.ok, sample.tokens, sample.ttft, sample.error)


# --------------------------------------------------------------------------- processes


class PeerDaphne(BenchDaphne):
    """tests/bench/bare_proxy.py under Daphne, relaying to the double."""

    def launch(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                daphne_command(self.port, "tests.bench.bare_proxy:app"),
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


class RedisServer:
    """A throwaway redis-server on a free port, nothing saved."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def launch(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: use --redis-url or --modes embedded")
        self.process = subprocess.Popen(
            [binary, *REDIS_ARGS, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _pid(server: BenchDaphne | DoubleProcess) -> int | None:
    return server.process.pid if server.process is not None else None


# --------------------------------------------------------------------------- measuring


StreamFn = Callable[[int], Awaitable[Stream]]


@dataclass
class Window:
    streams: list[Stream]
    wall: float
    cpu: float | None
    double_cpu: float | None


class Runner:
    def __init__(self, config: RelayConfig, reply: Reply, double: DoubleProcess, token: str):
        self.config = config
        self.reply = reply
        self.double = double
        self.headers = {"Authorization": f"Bearer {token}"}
        self.index = 0
        self.label: str | None = None  # names the profile of the window being measured
        self.session: aiohttp.ClientSession | None = None

    def next_index(self) -> int:
        self.index += 1
        return self.index

    async def __aenter__(self) -> Runner:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=TIMEOUT, sock_connect=10),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    def http_fn(self, target: str, url: str) -> StreamFn:
        assert self.session is not None
        session, reply, headers = self.session, self.reply, self.headers
        if target == "sse":
            return lambda i: sse_stream(session, url + "/api/chat/stream/", i, reply, headers)
        if target == "ollama":
            return lambda i: ndjson_stream(session, url + "/ollama/api/chat", i, reply, headers)
        return lambda i: ndjson_stream(session, url + "/api/chat", i, reply)

    async def timed(self, pid: int | None, run: Callable[[], Awaitable[list[Stream]]]) -> Window:
        spy = self.spy(pid)
        cpu_before, double_before = process_cpu(pid), process_cpu(_pid(self.double))
        start = time.perf_counter()
        streams = await run()
        wall = time.perf_counter() - start
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 60)
        cpu_after, double_after = process_cpu(pid), process_cpu(_pid(self.double))
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        dcpu = (
            None if double_before is None or double_after is None else double_after - double_before
        )
        return Window(streams, wall, cpu, dcpu)

    def spy(self, pid: int | None) -> subprocess.Popen | None:
        """py-spy on the serving process during the window (`--profile`): a raw (collapsed)
        profile per window, summarized by `profile_summary`."""
        if self.config.profile_dir is None or pid is None or self.label is None:
            return None
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        path = self.config.profile_dir / f"{self.label}.txt"
        spy = subprocess.Popen(
            [binary, "record", *PY_SPY_ARGS, "-p", str(pid), "-o", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached before the window opens
        return spy

    async def http_level(self, fn: StreamFn, pid: int | None, streams: int) -> Window:
        if streams == 1:

            async def sequential() -> list[Stream]:
                return [await fn(self.next_index()) for _ in range(self.config.sequential)]

            return await self.timed(pid, sequential)

        async def together() -> list[Stream]:
            return list(await asyncio.gather(*(fn(self.next_index()) for _ in range(streams))))

        return await self.timed(pid, together)

    async def ws_level(self, url: str, pid: int | None, streams: int) -> Window:
        uri = url.replace("http://", "ws://") + "/ws/chat/"
        count = self.config.sequential if streams == 1 else streams
        opened, errors = await open_sockets(uri, self.headers, streams, TIMEOUT)
        try:
            sockets = [ws for ws, _ in opened]

            async def run() -> list[Stream]:
                if streams == 1:
                    return (
                        [
                            await ws_converse(sockets[0], self.next_index(), self.reply)
                            for _ in range(count)
                        ]
                        if sockets
                        else []
                    )
                return list(
                    await asyncio.gather(
                        *(ws_converse(ws, self.next_index(), self.reply) for ws in sockets)
                    )
                )

            window = await self.timed(pid, run)
        finally:
            await close_sockets([ws for ws, _ in opened])
        window.streams += [Stream(False, 0, None, f"could not connect: {e}") for e in errors]
        return window

    async def warm(self, target: str, url: str) -> None:
        """Imports, pools and routes on every hop; the first round at a width opens them."""
        for _ in range(self.config.warmup):
            window = await self.level(target, url, None, 1, sequential=1)
            bad = [s.error for s in window.streams if not s.ok]
            if bad:
                raise RuntimeError(f"warm-up of {target} at {url} failed: {bad[0]}")
        if self.config.warm_round > 1:
            await self.level(target, url, None, self.config.warm_round)

    async def level(
        self, target: str, url: str, pid: int | None, streams: int, *, sequential: int = 0
    ) -> Window:
        saved = self.config.sequential
        if sequential:
            self.config.sequential = sequential
        try:
            if target == "ws":
                return await self.ws_level(url, pid, streams)
            return await self.http_level(self.http_fn(target, url), pid, streams)
        finally:
            self.config.sequential = saved


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def make_row(mode: str, target: str, streams: int, window: Window) -> Row:
    good = [s for s in window.streams if s.ok]
    tokens = sum(s.tokens for s in window.streams)
    ttfts = [s.ttft for s in good if s.ttft is not None]
    per_token = window.cpu / tokens * 1e6 if window.cpu is not None and tokens else None
    double = window.double_cpu / tokens * 1e6 if window.double_cpu is not None and tokens else None
    if target == "direct":  # the serving process is the double
        per_token, window.cpu = double, window.double_cpu
    return Row(
        mode=mode,
        target=target,
        streams=streams,
        requests=len(window.streams),
        completed=len(good),
        tokens=tokens,
        wall=window.wall,
        ttft_p50_ms=_ms(percentile(ttfts, 0.5)),
        ttft_p95_ms=_ms(percentile(ttfts, 0.95)),
        aggregate_tps=tokens / window.wall if window.wall > 0 else None,
        cpu_seconds=window.cpu,
        cpu_us_per_token=per_token,
        double_cpu_us_per_token=double,
        errors=sorted({s.error for s in window.streams if s.error})[:3],
    )


def add_ratios(rows: list[Row]) -> None:
    base = {(r.target, r.streams): r for r in rows if r.target in ("direct", "peer")}
    for row in rows:
        direct, peer = base.get(("direct", row.streams)), base.get(("peer", row.streams))
        if direct is not None:
            row.cpu_vs_direct = ratio(row.cpu_us_per_token, direct.cpu_us_per_token)
        if peer is not None:
            row.cpu_vs_peer = ratio(row.cpu_us_per_token, peer.cpu_us_per_token)
            row.ttft_vs_peer = ratio(row.ttft_p50_ms, peer.ttft_p50_ms)
            row.tps_vs_peer = ratio(row.aggregate_tps, peer.aggregate_tps)


# --------------------------------------------------------------------------- goals


def check_goals(rows: list[Row], config: RelayConfig) -> list[dict[str, Any]]:
    """Issue 16's goals against this run's rows: (goal, met, figures)."""
    by = {(r.mode, r.target, r.streams): r for r in rows}
    goals: list[dict[str, Any]] = []

    def goal(name: str, met: bool | None, detail: str) -> None:
        goals.append({"goal": name, "met": met, "detail": detail})

    for mode, limit in (("embedded", 1.0), ("redis", 1.5)):
        if mode not in config.modes:
            continue
        cells, ok = [], True
        for target in ("sse", "ws"):
            for streams in config.streams:
                row = by.get((mode, target, streams))
                if row is None or row.cpu_vs_peer is None:
                    continue
                ok = ok and row.cpu_vs_peer <= limit
                cells.append(f"{target}@{streams} {row.cpu_vs_peer:.2f}x")
        goal(
            f"CPU/token over SSE and WebSocket <= {limit:g}x the peer's ({mode})",
            ok if cells else None,
            ", ".join(cells) or "not measured",
        )
    peer1, direct1 = by.get(("-", "peer", 1)), by.get(("-", "direct", 1))
    for mode in config.modes:
        cells, ok50, ok95 = [], True, True
        for target in GATEWAY_TARGETS:
            row = by.get((mode, target, 1))
            if row is None or row.ttft_p50_ms is None or peer1 is None or direct1 is None:
                continue
            ok50 = ok50 and row.ttft_p50_ms <= (peer1.ttft_p50_ms or 0)
            ok95 = (
                ok95
                and row.ttft_p95_ms is not None
                and row.ttft_p95_ms <= ((direct1.ttft_p95_ms or 0) + 15)
            )
            cells.append(f"{target} p50 {row.ttft_p50_ms:.1f} p95 {row.ttft_p95_ms or 0:.1f} ms")
        if peer1 is not None and direct1 is not None and cells:
            goal(
                f"TTFT p50 at 1 stream <= the peer's ({peer1.ttft_p50_ms or 0:.1f} ms) ({mode})",
                ok50,
                "; ".join(cells),
            )
            goal(
                f"TTFT p95 at 1 stream <= direct + 15 ms ({(direct1.ttft_p95_ms or 0) + 15:.1f} ms)"
                f" ({mode})",
                ok95,
                "; ".join(cells),
            )
    top = max(config.streams)
    for mode in config.modes:
        cells, ok = [], True
        for target in GATEWAY_TARGETS:
            row = by.get((mode, target, top))
            if row is None or row.tps_vs_peer is None:
                continue
            ok = ok and row.tps_vs_peer >= 1.0
            cells.append(f"{target} {row.tps_vs_peer:.2f}x")
        if cells:
            goal(
                f"aggregate tokens/s at {top} streams >= the peer's ({mode})", ok, ", ".join(cells)
            )
    if config.ws_streams:
        for mode in config.modes:
            row = by.get((mode, "ws", config.ws_streams))
            if row is not None:
                expected = config.ws_streams * config.tokens
                goal(
                    f"{config.ws_streams} WebSocket streams on one Daphne, no token lost ({mode})",
                    row.completed == row.requests and row.tokens == expected,
                    f"{row.completed}/{row.requests} complete, {row.tokens}/{expected} tokens",
                )
    return goals


# --------------------------------------------------------------------------- reporting


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


LABELS = {
    "direct": "direct (double)",
    "peer": "bare proxy",
    "sse": "SSE",
    "ws": "WebSocket",
    "ollama": "/ollama proxy",
}


def markdown_table(rows: list[Row]) -> str:
    head = (
        "| mode | target | streams | complete | TTFT p50 ms | TTFT p95 ms | tokens/s | "
        "CPU µs/token | xdirect | xpeer | TTFT xpeer | tokens/s xpeer |"
    )
    out = [head, "|" + "---|" * 12]
    for r in rows:
        out.append(
            f"| {r.mode} | {LABELS.get(r.target, r.target)} | {r.streams} | "
            f"{r.completed}/{r.requests} | {_f(r.ttft_p50_ms)} | {_f(r.ttft_p95_ms)} | "
            f"{_f(r.aggregate_tps, 0)} | {_f(r.cpu_us_per_token, 0)} | {_x(r.cpu_vs_direct)} | "
            f"{_x(r.cpu_vs_peer)} | {_x(r.ttft_vs_peer)} | {_x(r.tps_vs_peer)} |"
        )
    return "\n".join(out)


def goals_table(goals: list[dict[str, Any]]) -> str:
    out = ["| goal | met | this run |", "|---|---|---|"]
    for g in goals:
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        out.append(f"| {g['goal']} | {met} | {g['detail']} |")
    return "\n".join(out)


def row_line(r: Row) -> str:
    line = (
        f"{r.mode:>8} {LABELS.get(r.target, r.target):>15} x{r.streams:<4} "
        f"{r.completed}/{r.requests} ok  TTFT p50 {_f(r.ttft_p50_ms)} p95 {_f(r.ttft_p95_ms)} ms"
        f"  {_f(r.aggregate_tps, 0)} tok/s  CPU {_f(r.cpu_us_per_token, 0)} us/token"
    )
    if r.errors:
        line += f"  ERRORS: {r.errors[0]}"
    return line


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("django", "daphne", "channels", "channels_redis", "httpx", "twisted"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def profile_summary(path: Path, limit: int = 25) -> str:
    """A py-spy raw profile: the functions with the most samples on top of the stack (self)
    and anywhere in it (total), in % of the samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")"
            for f in stack.split(";")
        ]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    out = [f"{path.name}: {samples} samples", "  self%  function"]
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {count / samples * 100:5.1f}  {name}")
    out.append("  total%  function")
    for name, count in sorted(total.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {count / samples * 100:5.1f}  {name}")
    return "\n".join(out)


# --------------------------------------------------------------------------- the run


async def run_all(
    config: RelayConfig,
    reply: Reply,
    double: DoubleProcess,
    peer: BenchDaphne | None,
    apps: dict[str, BenchDaphne],
    token: str,
    emit: Callable[[str], None],
) -> list[Row]:
    rows: list[Row] = []
    async with Runner(config, reply, double, token) as runner:
        plan: list[tuple[str, str, str, int | None]] = []  # mode, target, url, pid
        if "direct" in config.targets:
            plan.append(("-", "direct", double.url, None))
        if peer is not None:
            plan.append(("-", "peer", peer.url, _pid(peer)))
        for mode, app in apps.items():
            for target in GATEWAY_TARGETS:
                if target in config.targets:
                    plan.append((mode, target, app.url, _pid(app)))
        for mode, target, url, pid in plan:
            await runner.warm(target, url)
            levels = list(config.streams)
            if target == "ws" and config.ws_streams and config.ws_streams not in levels:
                levels.append(config.ws_streams)
            for streams in levels:
                runner.label = f"{mode}-{target}-{streams}"
                window = await runner.level(target, url, pid, streams)
                runner.label = None
                row = make_row(mode, target, streams, window)
                rows.append(row)
                emit(row_line(row))
    add_ratios(rows)
    return rows


def run_benchmark(config: RelayConfig) -> RelayResult:
    if not config.streams or min(config.streams) < 1:
        raise ValueError("stream levels must be positive")
    if config.tokens < 2:
        raise ValueError("at least 2 tokens per reply")
    unknown = set(config.modes) - {"embedded", "redis"}
    if unknown:
        raise ValueError(f"unknown modes: {sorted(unknown)}")
    lines: list[str] = []

    def emit(text: str) -> None:
        lines.append(text)
        if config.verbose:
            print(text, flush=True)

    top = max([*config.streams, config.ws_streams if "ws" in config.targets else 0])
    soft, _hard = raise_open_files_limit(8 * top + 1024)
    reply = Reply(reply_tokens(config.tokens))
    work_dir = Path(tempfile.mkdtemp(prefix="bench-relay-cost-"))
    secret_key = secrets.token_urlsafe(64)
    double = DoubleProcess(reply.text, 0.0, 2 * top + 64, 8 * top + 64, work_dir)
    result = RelayResult(
        config={
            "streams": list(config.streams),
            "ws_streams": config.ws_streams,
            "modes": list(config.modes),
            "targets": list(config.targets),
            "tokens": config.tokens,
            "sequential": config.sequential,
            "warmup": config.warmup,
            "warm_round": config.warm_round,
            "app_env": config.app_env,
        },
        environment={
            **machine(),
            "load_average_at_start": _load_average(),
            "open_files": soft,
            "database": "sqlite (temporary file)",
        },
    )
    if config.profile_dir is not None:
        config.profile_dir.mkdir(parents=True, exist_ok=True)
    servers: list[BenchDaphne] = []
    redis: RedisServer | None = None
    started = time.perf_counter()
    try:
        double.launch()
        common = {
            "OLLAMA_URL": double.url,
            "OLLAMA_DEFAULT_MODEL": MODEL,
            "OLLAMA_MAX_CONCURRENCY": str(top + 64),
            "OLLAMA_MAX_QUEUE": str(4 * top + 64),
            "CHAT_MESSAGES_PER_MINUTE": "0",
            "CHAT_MAX_GENERATIONS_PER_USER": "0",
        }
        peer = None
        if "peer" in config.targets:
            peer = PeerDaphne(
                "bench-bare-proxy",
                {**app_environment(work_dir, secret_key), "BARE_PROXY_UPSTREAM": double.url},
                work_dir,
            )
            servers.append(peer)
        apps: dict[str, BenchDaphne] = {}
        if any(t in config.targets for t in GATEWAY_TARGETS):
            for mode in config.modes:
                extra = {**common, **config.app_env}
                if mode == "redis":
                    if config.redis_url is None:
                        redis = RedisServer()
                        redis.launch()
                        extra["REDIS_URL"] = redis.url
                    else:
                        extra["REDIS_URL"] = config.redis_url
                apps[mode] = BenchDaphne(
                    f"bench-app-{mode}", app_environment(work_dir, secret_key, **extra), work_dir
                )
                servers.append(apps[mode])
        for server in servers:
            server.launch()
        token = prepare_database(work_dir, secret_key)
        double.wait_ready()
        for server in servers:
            server.wait_ready()
        env = result.environment
        emit(
            f"relay cost benchmark: {config.tokens} instant tokens per reply; {env['cpu']}, "
            f"{env['cores']} cores, load average {env['load_average_at_start']}; Python "
            f"{env['python']}, Django {env.get('django')}, Daphne {env.get('daphne')}; "
            f"setup {time.perf_counter() - started:.1f} s"
        )
        result.rows = asyncio.run(run_all(config, reply, double, peer, apps, token, emit))
        result.goals = check_goals(result.rows, config)
        result.environment["load_average_at_end"] = _load_average()
        result.markdown = (
            f"{markdown_table(result.rows)}\n\n{goals_table(result.goals)}\n\n"
            f"Machine: {env['cpu']}, {env['cores']} cores; load average "
            f"{env['load_average_at_start']} at the start, {env['load_average_at_end']} at the "
            f"end; Python {env['python']}, Django {env.get('django')}, Daphne "
            f"{env.get('daphne')}, Twisted {env.get('twisted')}; {config.tokens} tokens per reply; "
            f"total {time.perf_counter() - started:.0f} s."
        )
        emit("\n" + result.markdown)
    finally:
        for server in servers:
            server.stop()
        double.stop()
        if redis is not None:
            redis.stop()
        if config.keep_dir:
            emit(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    result.report = "\n".join(lines)
    return result


# --------------------------------------------------------------------------- command line


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.relay_cost",
        description="CPU per relayed token, TTFT and tokens/s: direct, a bare proxy, and the "
        "gateway's SSE, WebSocket and /ollama transports.",
    )
    parser.add_argument("--streams", type=_levels, default=[1, 50, 200])
    parser.add_argument(
        "--ws-streams", type=int, default=500, help="WebSocket-only level (0: none)"
    )
    parser.add_argument(
        "--modes", type=_names(("embedded", "redis")), default=["embedded", "redis"]
    )
    parser.add_argument("--targets", type=_names(TARGETS), default=list(TARGETS))
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=10, help="streams at level 1")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--warm-round", type=int, default=20)
    parser.add_argument("--redis-url", default=None, help="default: a redis-server for the run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="py-spy each window into DIR"
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the app's Daphnes, e.g. OLLAMA_HTTP_CLIENT=aiohttp (repeatable)",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    app_env = dict(item.split("=", 1) for item in args.app_env if "=" in item)
    config = RelayConfig(
        streams=args.streams,
        ws_streams=args.ws_streams,
        modes=args.modes,
        targets=args.targets,
        tokens=args.tokens,
        sequential=args.sequential,
        warmup=args.warmup,
        warm_round=args.warm_round,
        redis_url=args.redis_url,
        profile_dir=args.profile,
        app_env=app_env,
        keep_dir=args.keep,
    )
    result = run_benchmark(config)
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(result.markdown + "\n")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
