"""Benchmark: chat over `/ws/chat/` versus the same Ollama double called directly.

    .venv/bin/python -m tests.bench.ws_stream [--concurrency 1,100,500] [--tokens 100]
                                              [--idle 500] [--json out.json]

It sets everything up itself, like `tests.bench.chat_stream` (whose helpers it reuses): a
throwaway SQLite database, a user and its JWT, the Ollama test double and ONE Daphne process
with a wide gate (`OLLAMA_MAX_CONCURRENCY=512`, a queue that never fills) and the per-user
limits off (one bench user sends everything). The double runs as its own process by default
(`python -m tests.ollama_double`, `--double process`) so that it does not share this
interpreter with hundreds of clients; `--double thread` runs it inside this process instead.
Its reply is `--tokens` tokens (" w0", " w1", ...), each `--token-delay` seconds apart.

At each concurrency level C, in rounds of C at once (enough rounds for `--samples` sockets):
- gateway: C WebSockets are opened and authenticated (`Authorization: Bearer`, not timed), then
  each sends one `chat.send` at the same moment and reads until `chat.done`;
- direct: C concurrent streaming `POST /api/chat` to the double with httpx (NDJSON), each
  stream with its own client and connection, like separate clients (one httpx pool with hundreds
  of connections spends more CPU on its bookkeeping than on the streams).

With `--idle N` (default 500), first: Daphne's resident memory (psutil, its PID) before and
after opening N idle authenticated sockets (each answers a `ping` first, so its consumer is set
up) and after they are closed, twice (the second time tells memory kept for reuse from a leak).
This runs after the warm-up, before the levels: a process that has just served 500 generations
has free memory it would reuse for the sockets, which would hide their cost.

Definitions, per socket or stream, timed on the client with `time.perf_counter()`:
- TTFT: from sending `chat.send` (direct: the request) to the first `chat.token` frame (direct:
  the first NDJSON chunk with content);
- tokens/s per socket: the tokens after the first frame / (last frame - first frame): the rate
  at which tokens are relayed once they flow (TTFT excluded). The gateway coalesces tokens
  (~30 ms), so a frame carries several: they are counted from the reply's known tokenization and
  the total is checked against `eval_count` in `chat.done`'s metrics. None for a socket whose
  reply came in one frame (counted as "single-frame sockets");
- aggregate tokens/s: all tokens of a round (`eval_count`) / the round's wall time, from the
  sends to the last `chat.done`;
- a socket is complete when its frames' offsets are contiguous (no gap, no overlap), the text is
  exactly the reply, and `chat.done` reports all the tokens.
Nothing here asserts on time: figures are printed (and written with `--json`). `--profile DIR`
profiles Daphne's event loop during each level's gateway rounds (cProfile: slower figures).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import io
import itertools
import json
import math
import os
import platform
import pstats
import resource
import secrets
import shutil
import signal
import ssl
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
from websockets.asyncio.client import ClientConnection, connect

from tests.bench.chat_stream import (
    MODEL,
    BenchDaphne,
    StreamResult,
    _fmt,
    _fmt_ratio,
    _levels,
    _load_average,
    _ms,
    app_environment,
    direct_stream,
    percentile,
    prepare_database,
    ratio,
)
from tests.ollama_double import OllamaDouble
from tests.support.live import BASE_DIR, free_port

GATE = 512
# Daphne (Twisted) listens with a backlog of 50: open sockets a few dozen at a time.
CONNECT_CONCURRENCY = 32


# --------------------------------------------------------------------------- configuration


@dataclass
class WsBenchConfig:
    concurrency: Sequence[int] = (1, 100, 500)
    tokens: int = 100
    token_delay: float = 0.005  # seconds per token at the double: 200 tokens/s, a fast GPU
    idle: int = 500  # idle sockets for the memory figure; 0 skips it
    samples: int = 20  # at least this many sockets (streams) measured per level and target
    warmup: int = 3  # sequential unmeasured conversations per target before anything else
    double: str = "process"  # "process": the double in its own process; "thread": in this one
    gate: int = GATE
    timeout: float = 120.0  # seconds a socket may wait for its next frame
    settle: float = 1.0  # seconds to wait before reading Daphne's memory
    profile_dir: Path | None = None  # profile Daphne's event loop per level (slows it down)
    keep_dir: bool = False
    verbose: bool = True

    def rounds_at(self, concurrency: int) -> int:
        return max(1, math.ceil(self.samples / concurrency))


# --------------------------------------------------------------------------- results


@dataclass
class Sample:
    """One generation, through the gateway (a socket) or direct (an HTTP stream)."""

    ok: bool
    tokens: int  # gateway: eval_count of chat.done; direct: content chunks
    chars: int
    frames: int  # frames with content
    ttft: float | None
    tokens_per_second: float | None
    total: float  # send -> done
    error: str | None = None
    connect: float | None = None  # gateway: opening the socket (before the send)
    accepted: float | None = None  # gateway: send -> chat.accepted
    started: float | None = None  # gateway: send -> chat.started
    server_ttft: float | None = None  # gateway: the app's own TTFT (metrics)


@dataclass
class Summary:
    label: str
    sockets: int
    completed: int
    failed: int
    errors: list[str]
    tokens_received: int
    wall_seconds: float  # summed over the rounds
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_max_ms: float | None
    stream_tps_p50: float | None
    stream_tps_p5: float | None  # the slowest 5 %
    aggregate_tps: float | None
    total_p50_ms: float | None
    total_p95_ms: float | None
    frames_p50: float | None
    single_frame: int  # complete sockets whose reply came in one frame
    connect_p50_ms: float | None
    connect_p95_ms: float | None
    accepted_p50_ms: float | None
    started_p50_ms: float | None
    server_ttft_p50_ms: float | None
    server_cpu_seconds: float | None  # Daphne during the measured rounds
    server_cpu_percent: float | None  # of one core
    server_cpu_us_per_token: float | None
    server_rss_mb: float | None  # Daphne's RSS after the level
    double_cpu_seconds: float | None  # the double's process (None when in this process)
    client_cpu_seconds: float  # this process
    machine_cpu_percent: float | None  # all CPUs (100 = all busy)


@dataclass
class Level:
    concurrency: int
    rounds: int
    direct: Summary
    gateway: Summary
    ratios: dict[str, float | None]  # gateway / direct


@dataclass
class IdleResult:
    sockets: int
    opened: int
    errors: list[str]
    open_seconds: float
    rss_before_mb: float
    rss_open_mb: float
    rss_closed_mb: float
    fds_before: int | None
    fds_open: int | None
    total_mb: float
    kb_per_socket: float | None
    uss_before_mb: float | None = None
    uss_open_mb: float | None = None
    uss_kb_per_socket: float | None = None
    rss_reopen_mb: float | None = None  # the same number opened again after closing them
    rss_reclosed_mb: float | None = None


@dataclass
class WsBenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    levels: list[Level] = field(default_factory=list)
    idle: IdleResult | None = None
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def failures(self) -> int:
        failed = sum(s.failed for level in self.levels for s in (level.direct, level.gateway))
        if self.idle is not None:
            failed += self.idle.sockets - self.idle.opened
        return failed


RATIO_FIELDS = (
    "ttft_p50_ms",
    "ttft_p95_ms",
    "stream_tps_p50",
    "stream_tps_p5",
    "aggregate_tps",
    "total_p50_ms",
    "total_p95_ms",
)


def ratios(gateway: Summary, direct: Summary) -> dict[str, float | None]:
    return {name: ratio(getattr(gateway, name), getattr(direct, name)) for name in RATIO_FIELDS}


# --------------------------------------------------------------------------- the reply


def reply_tokens(count: int) -> list[str]:
    """The double's reply: tokenize() of the joined text gives back exactly these tokens."""
    return [f" w{i}" for i in range(count)]


class Reply:
    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.text = "".join(tokens)
        self.ends = list(itertools.accumulate(len(t) for t in tokens))

    def tokens_within(self, chars: int) -> int:
        """How many whole tokens the first `chars` characters of the reply hold."""
        return bisect.bisect_right(self.ends, chars)


# --------------------------------------------------------------------------- one socket


class SocketCheck:
    """The frames one socket receives for its generation, checked as they come.

    Offsets must be contiguous: each `chat.token` starts where the text so far ends (a larger
    offset is a gap, a smaller one an overlap or a duplicate); frames of another conversation
    or reply are errors too.
    """

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.start = time.perf_counter()
        self.parts: list[str] = []
        self.length = 0
        self.first: float | None = None
        self.last: float | None = None
        self.first_chars = 0
        self.frames = 0
        self.conversation: str | None = None
        self.message: int | None = None
        self.accepted: float | None = None
        self.started: float | None = None
        self.metrics: dict[str, Any] | None = None
        self.error: str | None = None
        self.finished = False

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error

    def _same(self, frame: dict[str, Any]) -> bool:
        conversation = frame.get("conversation")
        if self.conversation is None:
            self.conversation = conversation
        elif conversation is not None and conversation != self.conversation:
            self._fail(f"a frame of another conversation: {frame.get('type')}")
            return False
        message = frame.get("message")
        if self.message is not None and message is not None and message != self.message:
            self._fail(f"a frame of another reply: {frame.get('type')}")
            return False
        return True

    def frame(self, frame: dict[str, Any]) -> None:
        """Take one frame; sets `finished` on the last one (done or error)."""
        now = time.perf_counter()
        kind = frame.get("type")
        if kind in {"chat.error", "chat.cancelled"}:
            self._fail(f"{kind}: {frame.get('code')}: {frame.get('detail')}")
            self.finished = True
            return
        if not self._same(frame):
            return
        if kind == "chat.accepted":
            self.accepted = now - self.start
        elif kind == "chat.started":
            self.started = now - self.start
            self.message = frame.get("message")
        elif kind == "chat.token":
            content, offset = frame.get("content"), frame.get("offset")
            if not isinstance(content, str) or not isinstance(offset, int):
                self._fail(f"a malformed chat.token frame: {frame!r:.200}")
                return
            if offset != self.length:
                what = "a gap" if offset > self.length else "an overlap"
                self._fail(f"{what}: offset {offset} after {self.length} characters")
            if self.first is None:
                self.first = now
                self.first_chars = len(content)
            self.last = now
            self.frames += 1
            self.parts.append(content)
            self.length = max(self.length, offset + len(content))
        elif kind == "chat.done":
            self.metrics = frame.get("metrics") or {}
            self.finished = True
        elif kind not in {"chat.queued", "pong"}:
            self._fail(f"an unexpected frame: {kind!r}")

    def result(self, connect_seconds: float | None) -> Sample:
        end = time.perf_counter()
        text = "".join(self.parts)
        eval_count = (self.metrics or {}).get("eval_count")
        if self.error is None and not self.finished:
            self._fail("the socket ended without chat.done")
        if self.error is None and text != self.reply.text:
            self._fail(f"wrong text: {len(text)} of {len(self.reply.text)} characters")
        if self.error is None and eval_count != len(self.reply.tokens):
            self._fail(f"eval_count {eval_count}, expected {len(self.reply.tokens)}")
        tokens = eval_count if isinstance(eval_count, int) else self.reply.tokens_within(len(text))
        rate = None
        if self.first is not None and self.last is not None and self.frames > 1:
            after_first = tokens - self.reply.tokens_within(self.first_chars)
            rate = after_first / max(self.last - self.first, 1e-9)
        server_ttft = (self.metrics or {}).get("time_to_first_token_seconds")
        return Sample(
            ok=self.error is None,
            tokens=tokens if self.error is None else self.reply.tokens_within(len(text)),
            chars=len(text),
            frames=self.frames,
            ttft=None if self.first is None else self.first - self.start,
            tokens_per_second=rate,
            total=end - self.start,
            error=self.error,
            connect=connect_seconds,
            accepted=self.accepted,
            started=self.started,
            server_ttft=server_ttft if isinstance(server_ttft, int | float) else None,
        )


async def open_socket(uri: str, headers: dict[str, str], timeout: float) -> ClientConnection:
    return await connect(
        uri,
        additional_headers=headers,
        open_timeout=timeout,
        close_timeout=5,
        ping_interval=None,  # no keepalive traffic during the measurement
        max_queue=None,  # frames are read as fast as they come; never push back on the server
    )


async def open_sockets(
    uri: str, headers: dict[str, str], count: int, timeout: float, *, ping: bool = False
) -> tuple[list[tuple[ClientConnection, float]], list[str]]:
    """`count` sockets, at most CONNECT_CONCURRENCY handshakes at a time: (socket, seconds)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> tuple[ClientConnection, float]:
        async with gate:
            start = time.perf_counter()
            ws = await open_socket(uri, headers, timeout)
            try:
                if ping:  # the consumer answers: it is connected and authenticated
                    await ws.send('{"type": "ping"}')
                    answer = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    if answer.get("type") != "pong":
                        raise RuntimeError(f"ping answered with {answer!r:.200}")
            except BaseException:
                await ws.close()
                raise
            return ws, time.perf_counter() - start

    outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    sockets = [o for o in outcomes if not isinstance(o, BaseException)]
    errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    return sockets, errors


async def close_sockets(sockets: Sequence[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def converse(
    ws: ClientConnection, index: int, reply: Reply, timeout: float, connect_seconds: float
) -> Sample:
    """One `chat.send` on an open socket, read until `chat.done` (or an error)."""
    check = SocketCheck(reply)
    body = {"type": "chat.send", "message": f"Benchmark prompt {index}", "model": MODEL}
    try:
        check.start = time.perf_counter()
        await ws.send(json.dumps(body))
        while not check.finished:
            raw = await asyncio.wait_for(ws.recv(), timeout)
            try:
                frame = json.loads(raw)
            except ValueError:
                check._fail(f"a frame that is not JSON: {raw!r:.200}")
                break
            check.frame(frame)
    except TimeoutError:
        check._fail(f"no frame for {timeout:.0f} s")
    except Exception as exc:  # the socket closed, or anything else: a failed socket
        check._fail(f"{type(exc).__name__}: {exc}")
    return check.result(connect_seconds)


def from_stream(result: StreamResult, reply: Reply) -> Sample:
    """A direct stream of chat_stream (one chunk per token) as a Sample."""
    return Sample(
        ok=result.ok,
        tokens=result.tokens,
        chars=len(reply.text) if result.ok else 0,
        frames=result.tokens,
        ttft=result.ttft,
        tokens_per_second=result.tokens_per_second,
        total=result.total,
        error=result.error,
    )


# --------------------------------------------------------------------------- summaries


def _p(values: Sequence[float | None], q: float) -> float | None:
    return percentile([v for v in values if v is not None], q)


def summarize(
    label: str,
    samples: list[Sample],
    wall: float,
    *,
    server_cpu: float | None = None,
    server_rss: float | None = None,
    double_cpu: float | None = None,
    client_cpu: float = 0.0,
    machine_cpu: float | None = None,
) -> Summary:
    good = [s for s in samples if s.ok]
    received = sum(s.tokens for s in samples)
    return Summary(
        label=label,
        sockets=len(samples),
        completed=len(good),
        failed=len(samples) - len(good),
        errors=sorted({s.error for s in samples if s.error})[:5],
        tokens_received=received,
        wall_seconds=wall,
        ttft_p50_ms=_ms(_p([s.ttft for s in good], 0.50)),
        ttft_p95_ms=_ms(_p([s.ttft for s in good], 0.95)),
        ttft_max_ms=_ms(max((s.ttft for s in good if s.ttft is not None), default=None)),
        stream_tps_p50=_p([s.tokens_per_second for s in good], 0.50),
        stream_tps_p5=_p([s.tokens_per_second for s in good], 0.05),
        aggregate_tps=received / wall if wall > 0 else None,
        total_p50_ms=_ms(_p([s.total for s in good], 0.50)),
        total_p95_ms=_ms(_p([s.total for s in good], 0.95)),
        frames_p50=_p([float(s.frames) for s in good], 0.50),
        single_frame=sum(1 for s in good if s.frames == 1),
        connect_p50_ms=_ms(_p([s.connect for s in samples], 0.50)),
        connect_p95_ms=_ms(_p([s.connect for s in samples], 0.95)),
        accepted_p50_ms=_ms(_p([s.accepted for s in good], 0.50)),
        started_p50_ms=_ms(_p([s.started for s in good], 0.50)),
        server_ttft_p50_ms=_ms(_p([s.server_ttft for s in good], 0.50)),
        server_cpu_seconds=server_cpu,
        server_cpu_percent=server_cpu / wall * 100 if server_cpu is not None and wall > 0 else None,
        server_cpu_us_per_token=(
            server_cpu / received * 1e6 if server_cpu is not None and received else None
        ),
        server_rss_mb=server_rss,
        double_cpu_seconds=double_cpu,
        client_cpu_seconds=client_cpu,
        machine_cpu_percent=machine_cpu,
    )


# --------------------------------------------------------------------------- processes


def raise_open_files_limit(needed: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE toward `needed` (up to the hard limit) before the
    servers are spawned: they inherit it. Returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class DoubleProcess:
    """`python -m tests.ollama_double` in a subprocess, with a fixed reply."""

    def __init__(self, reply: str, token_delay: float, parallel: int, queue: int, log_dir: Path):
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "tests.ollama_double",
            "--port",
            str(self.port),
            f"--reply={reply}",  # "=": the reply starts with a space
            "--token-delay",
            str(token_delay),
            "--num-parallel",
            str(parallel),
            "--max-queue",
            str(queue),
        ]
        self.log_path = log_dir / f"ollama-double-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Ollama double exited:\n{self._log()}")
            try:
                if httpx.get(f"{self.url}/api/version", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the Ollama double did not answer in {timeout} s:\n{self._log()}")

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class DoubleThread:
    """The double inside this process (its own thread and loop)."""

    def __init__(self, tokens: list[str], token_delay: float, parallel: int, queue: int):
        self.double = OllamaDouble(token_delay=token_delay, num_parallel=parallel, max_queue=queue)
        self.tokens = tokens

    @property
    def url(self) -> str:
        return self.double.url

    def launch(self) -> None:
        self.double.start()
        self.double.script(tokens=self.tokens, times=None)

    def wait_ready(self, timeout: float = 30.0) -> None:
        pass

    def cpu_seconds(self) -> float | None:
        return None  # counted in this process's CPU

    def stop(self) -> None:
        self.double.stop()


# Daphne under cProfile: SIGUSR1 starts a profile of its main thread (the event loop, where
# the consumers, the runs and the upstream streams run; not the database thread), SIGUSR2
# stops it and writes it to the next `<prefix>-<n>.prof`.
_PROFILED_DAPHNE = """
import cProfile, itertools, signal, sys
prefix = sys.argv.pop(1)
numbers = itertools.count(1)
profile = None
def start(signum, frame):
    global profile
    profile = cProfile.Profile()
    profile.enable()
def stop(signum, frame):
    global profile
    if profile is not None:
        profile.disable()
        path = f"{prefix}-{next(numbers)}.prof"
        profile.dump_stats(path + ".tmp")
        import os
        os.replace(path + ".tmp", path)
        profile = None
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.argv[0] = "daphne"
from daphne.cli import CommandLineInterface
CommandLineInterface.entrypoint()
"""


class ProfiledDaphne(BenchDaphne):
    """BenchDaphne with its event loop profiled on demand (`--profile`)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, prefix: Path) -> None:
        super().__init__(name, env, log_dir)
        self.prefix = prefix
        self.dumps = 0

    def launch(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _PROFILED_DAPHNE,
                    str(self.prefix),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "config.asgi:application",
                ],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def profile_start(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

    async def profile_stop(self, timeout: float = 60.0) -> Path | None:
        assert self.process is not None
        self.dumps += 1
        path = Path(f"{self.prefix}-{self.dumps}.prof")
        self.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)
        return path


def profile_top(path: Path, limit: int = 15) -> str:
    """The functions of a Daphne profile that took the most time themselves."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = stats.total_tt  # type: ignore[attr-defined]  # set by Stats, not in typeshed
    return "\n".join(
        [f"  Daphne event loop profile ({total:.1f} s profiled): {path}"]
        + [f"  {line.strip()[:160]}" for line in lines[start:] if line.strip()]
    )


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _uss_mb(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_full_info().uss / 2**20
    except (psutil.Error, AttributeError):
        return None


def _fds(pid: int) -> int | None:
    try:
        return psutil.Process(pid).num_fds()
    except (psutil.Error, AttributeError):
        return None


# --------------------------------------------------------------------------- measuring


@dataclass
class Usage:
    """CPU used during the timed windows of a level (sends -> last done), summed."""

    wall: float = 0.0
    server_cpu: float | None = 0.0
    double_cpu: float | None = 0.0
    client_cpu: float = 0.0
    machine_busy: float = 0.0  # CPU seconds of the whole machine, all CPUs
    machine_total: float = 0.0

    @property
    def machine_percent(self) -> float | None:
        return self.machine_busy / self.machine_total * 100 if self.machine_total else None


class Meter:
    """Snapshot at the start of a timed window; `add_to` adds the window to a Usage."""

    def __init__(self, server_pid: int, double: DoubleProcess | DoubleThread) -> None:
        self.server_pid, self.double = server_pid, double
        self.server = _cpu_seconds(server_pid)
        self.double_cpu = double.cpu_seconds()
        self.client = time.process_time()
        self.machine = psutil.cpu_times()
        self.start = time.perf_counter()

    def add_to(self, usage: Usage) -> float:
        wall = time.perf_counter() - self.start
        usage.wall += wall
        usage.client_cpu += time.process_time() - self.client
        server = _cpu_seconds(self.server_pid)
        if usage.server_cpu is not None and server is not None and self.server is not None:
            usage.server_cpu += server - self.server
        else:
            usage.server_cpu = None
        double = self.double.cpu_seconds()
        if usage.double_cpu is not None and double is not None and self.double_cpu is not None:
            usage.double_cpu += double - self.double_cpu
        else:
            usage.double_cpu = None
        machine = psutil.cpu_times()
        idle = ("idle", "iowait")
        total = sum(machine) - sum(self.machine)
        usage.machine_total += total
        usage.machine_busy += total - sum(
            getattr(machine, n, 0.0) - getattr(self.machine, n, 0.0) for n in idle
        )
        return wall


RoundFn = Callable[[int, Usage], Awaitable[list[Sample]]]


@dataclass
class Bench:
    config: WsBenchConfig
    reply: Reply
    daphne: BenchDaphne
    double: DoubleProcess | DoubleThread
    token: str
    direct_clients: list[httpx.AsyncClient] = field(default_factory=list)
    index: itertools.count = field(default_factory=lambda: itertools.count())
    # One TLS context for every direct client: httpx builds one per client otherwise (slow),
    # though the double speaks plain HTTP.
    ssl_context: ssl.SSLContext = field(default_factory=ssl.create_default_context)

    @property
    def ws_uri(self) -> str:
        return self.daphne.url.replace("http://", "ws://") + "/ws/chat/"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def daphne_pid(self) -> int:
        assert self.daphne.process is not None
        return self.daphne.process.pid

    def meter(self) -> Meter:
        return Meter(self.daphne_pid, self.double)

    async def gateway_round(self, concurrency: int, usage: Usage) -> list[Sample]:
        """Open `concurrency` sockets, then send on all at once; timed from the sends."""
        timeout = self.config.timeout
        opened, errors = await open_sockets(self.ws_uri, self.headers, concurrency, timeout)
        try:
            meter = self.meter()
            samples = list(
                await asyncio.gather(
                    *(
                        converse(ws, next(self.index), self.reply, timeout, seconds)
                        for ws, seconds in opened
                    )
                )
            )
            meter.add_to(usage)
        finally:
            await close_sockets([ws for ws, _ in opened])
        samples += [
            Sample(False, 0, 0, 0, None, None, 0.0, error=f"could not connect: {e}") for e in errors
        ]
        return samples

    def direct_clients_for(self, concurrency: int) -> list[httpx.AsyncClient]:
        """A client per concurrent stream, with its own connection, as separate clients have.

        One shared httpx pool with hundreds of connections costs the client far more CPU than
        the streams (httpcore's pool bookkeeping grows with the square of its connections) and
        would make the baseline slower than the double."""
        while len(self.direct_clients) < concurrency:
            self.direct_clients.append(
                httpx.AsyncClient(
                    base_url=self.double.url,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=httpx.Timeout(self.config.timeout, connect=10.0),
                    verify=self.ssl_context,
                )
            )
        return self.direct_clients[:concurrency]

    async def close_direct_clients(self) -> None:
        clients, self.direct_clients = self.direct_clients, []
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    async def direct_round(self, concurrency: int, usage: Usage) -> list[Sample]:
        clients = self.direct_clients_for(concurrency)
        meter = self.meter()
        results = await asyncio.gather(
            *(direct_stream(client, next(self.index), self.reply.text) for client in clients)
        )
        meter.add_to(usage)
        return [from_stream(r, self.reply) for r in results]

    async def measure(
        self, label: str, round_fn: RoundFn, concurrency: int, rounds: int, *, server: bool
    ) -> Summary:
        usage = Usage()
        samples: list[Sample] = []
        for _ in range(rounds):
            samples += await round_fn(concurrency, usage)
        return summarize(
            label,
            samples,
            usage.wall,
            server_cpu=usage.server_cpu if server else None,
            server_rss=_rss_mb(self.daphne_pid) if server else None,
            double_cpu=usage.double_cpu,
            client_cpu=usage.client_cpu,
            machine_cpu=usage.machine_percent,
        )

    async def warm_up(self) -> None:
        """Imports, URL routing, pools and the double's model "load" on every hop."""
        for _ in range(self.config.warmup):
            for name, round_fn in (("direct", self.direct_round), ("gateway", self.gateway_round)):
                samples = await round_fn(1, Usage())
                if not samples[0].ok:
                    raise RuntimeError(f"warm-up ({name}) failed: {samples[0].error}")

    async def idle_sockets(self, count: int) -> IdleResult:
        """Daphne's memory with `count` idle sockets open, twice: the second time shows
        whether closed sockets leave memory behind that is not reused."""
        pid = self.daphne_pid
        settle = self.config.settle
        await asyncio.sleep(settle)  # let the warm-up's generations finish saving
        rss_before, uss_before, fds_before = _rss_mb(pid), _uss_mb(pid), _fds(pid)
        cycles: list[tuple[float, float, float | None, int | None, float]] = []
        errors: list[str] = []
        opened_first = 0
        for cycle in range(2):
            start = time.perf_counter()
            opened, failed = await open_sockets(
                self.ws_uri, self.headers, count, self.config.timeout, ping=True
            )
            open_seconds = time.perf_counter() - start
            errors += failed
            if cycle == 0:
                opened_first = len(opened)
            try:
                await asyncio.sleep(settle)
                rss_open, uss_open, fds_open = _rss_mb(pid), _uss_mb(pid), _fds(pid)
            finally:
                await close_sockets([ws for ws, _ in opened])
            await asyncio.sleep(settle)  # Daphne runs the consumers' disconnect
            cycles.append((rss_open, _rss_mb(pid), uss_open, fds_open, open_seconds))
        (rss_open, rss_closed, uss_open, fds_open, open_seconds), second = cycles
        total = rss_open - rss_before
        uss_per = None
        if uss_before is not None and uss_open is not None and opened_first:
            uss_per = (uss_open - uss_before) * 1024 / opened_first
        return IdleResult(
            sockets=count,
            opened=opened_first,
            errors=sorted(set(errors))[:5],
            open_seconds=open_seconds,
            rss_before_mb=rss_before,
            rss_open_mb=rss_open,
            rss_closed_mb=rss_closed,
            fds_before=fds_before,
            fds_open=fds_open,
            total_mb=total,
            kb_per_socket=total * 1024 / opened_first if opened_first else None,
            uss_before_mb=uss_before,
            uss_open_mb=uss_open,
            uss_kb_per_socket=uss_per,
            rss_reopen_mb=second[0],
            rss_reclosed_mb=second[1],
        )

    async def run(self, emit: Callable[[str], None]) -> tuple[list[Level], IdleResult | None]:
        await self.warm_up()
        idle = None
        if self.config.idle > 0:
            idle = await self.idle_sockets(self.config.idle)
            emit(format_idle(idle))
        levels = []
        for concurrency in self.config.concurrency:
            rounds = self.config.rounds_at(concurrency)
            direct = await self.measure(
                "direct", self.direct_round, concurrency, rounds, server=False
            )
            await self.close_direct_clients()
            profiled = self.daphne if isinstance(self.daphne, ProfiledDaphne) else None
            if profiled is not None:
                profiled.profile_start()
            gateway = await self.measure(
                "gateway (WebSocket)", self.gateway_round, concurrency, rounds, server=True
            )
            profile = await profiled.profile_stop() if profiled is not None else None
            level = Level(concurrency, rounds, direct, gateway, ratios(gateway, direct))
            levels.append(level)
            emit(format_level(level))
            if profile is not None:
                emit(profile_top(profile))
        return levels, idle


async def _run_async(
    config: WsBenchConfig,
    reply: Reply,
    daphne: BenchDaphne,
    double: DoubleProcess | DoubleThread,
    token: str,
    emit: Callable[[str], None],
) -> tuple[list[Level], IdleResult | None]:
    bench = Bench(config, reply, daphne, double, token)
    try:
        return await bench.run(emit)
    finally:
        await bench.close_direct_clients()


def run_benchmark(config: WsBenchConfig) -> WsBenchResult:
    """Set everything up, measure, tear down; the figures and the printed report."""
    if not config.concurrency or min(config.concurrency) < 1:
        raise ValueError("concurrency levels must be positive")
    if config.tokens < 2:
        raise ValueError("at least 2 tokens per reply are needed for a rate")
    if config.double not in {"process", "thread"}:
        raise ValueError('double is "process" or "thread"')
    lines: list[str] = []

    def emit(text: str) -> None:
        lines.append(text)
        if config.verbose:
            print(text, flush=True)

    top = max(config.concurrency)
    # This process: the sockets, the direct streams (and the double's, in a thread); Daphne:
    # a socket per client and an upstream connection per generation. Raised before spawning.
    soft, hard = raise_open_files_limit(4 * max(top, config.idle) + 1024)
    reply = Reply(reply_tokens(config.tokens))
    work_dir = Path(tempfile.mkdtemp(prefix="bench-ws-stream-"))
    secret_key = secrets.token_urlsafe(64)
    parallel, queue = top + config.gate, 4 * top + 64
    double: DoubleProcess | DoubleThread
    if config.double == "process":
        double = DoubleProcess(reply.text, config.token_delay, parallel, queue, work_dir)
    else:
        double = DoubleThread(reply.tokens, config.token_delay, parallel, queue)
    result = WsBenchResult(
        config={
            "concurrency": list(config.concurrency),
            "tokens": config.tokens,
            "token_delay": config.token_delay,
            "idle": config.idle,
            "samples": config.samples,
            "rounds": {c: config.rounds_at(c) for c in config.concurrency},
            "warmup": config.warmup,
            "gate": config.gate,
            "double": config.double,
        },
        environment={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "database": "sqlite (temporary file)",
            "channel_layer": "in-memory",
            "model": MODEL,
            "open_files_limit": [soft, hard],
            "load_average_at_start": _load_average(),
        },
    )
    daphne: BenchDaphne | None = None
    started = time.perf_counter()
    try:
        double.launch()
        env = app_environment(
            work_dir,
            secret_key,
            OLLAMA_URL=double.url,
            OLLAMA_DEFAULT_MODEL=MODEL,
            OLLAMA_MAX_CONCURRENCY=str(config.gate),
            OLLAMA_MAX_QUEUE=str(queue),
            # One benchmark user sends far more than a person would.
            CHAT_MESSAGES_PER_MINUTE="0",
            CHAT_MAX_GENERATIONS_PER_USER="0",
        )
        if config.profile_dir is not None:
            config.profile_dir.mkdir(parents=True, exist_ok=True)
            prefix = config.profile_dir / f"daphne-{time.strftime('%Y%m%d-%H%M%S')}"
            daphne = ProfiledDaphne("bench-daphne-ws", env, work_dir, prefix)
        else:
            daphne = BenchDaphne("bench-daphne-ws", env, work_dir)
        daphne.launch()
        # Daphne answers /health without the database: migrate while the servers start.
        token = prepare_database(work_dir, secret_key)
        double.wait_ready()
        daphne.wait_ready()
        load = result.environment["load_average_at_start"]
        where = "its own process" if config.double == "process" else "a thread of the bench process"
        emit(
            f"WebSocket chat benchmark: {config.tokens} tokens per reply, "
            f"{config.token_delay * 1000:g} ms apart, model {MODEL}; the double in {where}; "
            f"one Daphne (gate {config.gate}, SQLite, in-memory channel layer); "
            f"{os.cpu_count()} CPUs (load average {load}), Python {platform.python_version()}, "
            f"open files {soft}; setup {time.perf_counter() - started:.1f} s"
        )
        emit(LEGEND)
        result.levels, result.idle = asyncio.run(
            _run_async(config, reply, daphne, double, token, emit)
        )
        emit(format_summary(result))
        emit(f"total {time.perf_counter() - started:.1f} s")
    finally:
        if daphne is not None:
            daphne.stop()
        double.stop()
        if config.keep_dir:
            emit(f"kept {work_dir} (database and logs)")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    result.report = "\n".join(lines)
    return result


# --------------------------------------------------------------------------- reporting

LEGEND = """\
direct  = POST /api/chat on the double (NDJSON, a chunk per token), httpx, a client per stream
gateway = /ws/chat/: chat.send on an open, authenticated socket, relayed by Daphne from the double
TTFT ratios above 1: the gateway adds latency; tokens/s ratios below 1: it relays fewer.
Each level: rounds of C sockets (streams) sent at the same moment; sockets are opened before."""


def format_level(level: Level) -> str:
    rows: list[list[str]] = [["", "direct", "gateway (WS)", "gw/direct"]]

    def row(name: str, attr: str, digits: int, with_ratio: bool = True) -> None:
        rows.append(
            [
                name,
                _fmt(getattr(level.direct, attr), digits),
                _fmt(getattr(level.gateway, attr), digits),
                _fmt_ratio(level.ratios.get(attr)) if with_ratio else "",
            ]
        )

    d, g = level.direct, level.gateway
    row("TTFT p50 (ms)", "ttft_p50_ms", 2)
    row("TTFT p95 (ms)", "ttft_p95_ms", 2)
    row("tokens/s per socket p50", "stream_tps_p50", 1)
    row("tokens/s per socket p5 (slowest)", "stream_tps_p5", 1)
    row("tokens/s aggregate", "aggregate_tps", 0)
    row("send -> done p50 (ms)", "total_p50_ms", 1)
    row("send -> done p95 (ms)", "total_p95_ms", 1)
    row("  gateway: accepted p50 (ms)", "accepted_p50_ms", 2, with_ratio=False)
    row("  gateway: started p50 (ms)", "started_p50_ms", 2, with_ratio=False)
    row("  gateway: app's own TTFT p50 (ms)", "server_ttft_p50_ms", 2, with_ratio=False)
    row("  gateway: connect p50 (ms)", "connect_p50_ms", 1, with_ratio=False)
    row("  gateway: connect p95 (ms)", "connect_p95_ms", 1, with_ratio=False)
    row("frames with tokens per socket p50", "frames_p50", 0, with_ratio=False)
    rows.append(
        ["sockets complete", f"{d.completed}/{d.sockets}", f"{g.completed}/{g.sockets}", ""]
    )
    rows.append(["single-frame sockets", str(d.single_frame), str(g.single_frame), ""])
    row("Daphne CPU s", "server_cpu_seconds", 2, with_ratio=False)
    row("Daphne CPU % of one core", "server_cpu_percent", 0, with_ratio=False)
    row("Daphne CPU us per token", "server_cpu_us_per_token", 0, with_ratio=False)
    row("Daphne RSS after (MB)", "server_rss_mb", 1, with_ratio=False)
    row("double CPU s", "double_cpu_seconds", 2, with_ratio=False)
    row("bench process CPU s", "client_cpu_seconds", 2, with_ratio=False)
    row("machine CPU busy %", "machine_cpu_percent", 0, with_ratio=False)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [
        f"\n== concurrency {level.concurrency}: {level.rounds} round(s) of "
        f"{level.concurrency} at once per target"
    ]
    for r in rows:
        out.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(r)
            )
        )
    for summary in (d, g):
        if summary.errors:
            out.append(f"  {summary.label}: {summary.failed} failed, e.g. {summary.errors[0]}")
    return "\n".join(out)


def format_idle(idle: IdleResult) -> str:
    out = [
        f"\n== {idle.sockets} idle sockets on the Daphne process "
        f"(authenticated by header, each answered a ping)",
        f"opened {idle.opened}/{idle.sockets} in {idle.open_seconds:.2f} s; "
        f"open files {idle.fds_before} -> {idle.fds_open}",
        f"RSS before {idle.rss_before_mb:.1f} MB, with the sockets open {idle.rss_open_mb:.1f} MB: "
        f"+{idle.total_mb:.2f} MB, {_fmt(idle.kb_per_socket)} KB per socket"
        + (
            f" (USS {_fmt(idle.uss_kb_per_socket)} KB per socket)"
            if idle.uss_kb_per_socket is not None
            else ""
        ),
        f"RSS after closing them {idle.rss_closed_mb:.1f} MB "
        f"({idle.rss_closed_mb - idle.rss_before_mb:+.2f} MB against before)",
    ]
    if idle.rss_reopen_mb is not None and idle.rss_reclosed_mb is not None:
        kept = idle.rss_reclosed_mb - idle.rss_closed_mb
        out.append(
            f"opened and closed again: RSS {idle.rss_reopen_mb:.1f} MB open, "
            f"{idle.rss_reclosed_mb:.1f} MB closed ({kept:+.2f} MB against the first close; "
            f"near 0: what a close leaves is reused, not leaked)"
        )
    if idle.errors:
        out.append(f"  {idle.sockets - idle.opened} failed, e.g. {idle.errors[0]}")
    return "\n".join(out)


def format_summary(result: WsBenchResult) -> str:
    out = ["\n== ratios gateway/direct"]
    for level in result.levels:
        r = level.ratios
        out.append(
            f"concurrency {level.concurrency:>3}: TTFT p50 {_fmt_ratio(r['ttft_p50_ms'])}, "
            f"p95 {_fmt_ratio(r['ttft_p95_ms'])}; tokens/s per socket p50 "
            f"{_fmt_ratio(r['stream_tps_p50'])}, p5 {_fmt_ratio(r['stream_tps_p5'])}; "
            f"aggregate {_fmt_ratio(r['aggregate_tps'])}"
        )
    if result.idle is not None:
        out.append(
            f"idle sockets: {_fmt(result.idle.kb_per_socket)} KB of Daphne RSS per socket "
            f"({result.idle.total_mb:.1f} MB for {result.idle.opened})"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.ws_stream",
        description="TTFT and tokens/s of /ws/chat/ versus the Ollama double direct, and the "
        "memory of idle sockets.",
    )
    parser.add_argument("--concurrency", type=_levels, default=[1, 100, 500], help="e.g. 1,100")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply (>= 2)")
    parser.add_argument(
        "--token-delay", type=float, default=0.005, help="seconds per token at the double"
    )
    parser.add_argument("--idle", type=int, default=500, help="idle sockets (0: skip)")
    parser.add_argument(
        "--samples", type=int, default=20, help="sockets measured per level at least (rounds)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured sequential chats")
    parser.add_argument(
        "--double",
        choices=("process", "thread"),
        default="process",
        help="run the Ollama double in its own process (default) or in a thread of this one",
    )
    parser.add_argument("--settle", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile Daphne's event loop during each level (cProfile, slower) into DIR",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    config = WsBenchConfig(
        settle=args.settle,
        profile_dir=args.profile,
        concurrency=args.concurrency,
        tokens=args.tokens,
        token_delay=args.token_delay,
        idle=args.idle,
        samples=args.samples,
        warmup=args.warmup,
        double=args.double,
        keep_dir=args.keep,
    )
    result = run_benchmark(config)
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
