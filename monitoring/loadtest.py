"""Load test: real concurrent chats through the gateway, to see how throughput degrades with
concurrency and whether the box is bound by VRAM or by compute.

Run it with ``manage.py loadtest --model M --concurrency 1,2,4,8 --requests 20`` against a
running server (see ``monitoring/management/commands/loadtest.py`` for authentication). This
module is plain Python (httpx and the standard library): it talks to the server over HTTP only.

What it does
------------
For each concurrency level C it sends ``requests`` chats (at least C) through
``POST /api/chat/stream/`` (Server-Sent Events) with C of them in flight at any moment (a closed
loop: each of C workers sends its next request when the previous one ends), after ``warmup``
unmeasured sequential requests that load the model. Every request starts a new conversation with
the same prompt (tagged ``[loadtest C.i]``), so that context does not grow along the run.

Per request it records, from the ``metrics`` event of the stream (the gateway's own figures):
Ollama's decode speed ``tokens_per_second`` (eval_count / eval_duration), ``eval_count``, the
time to first token and the queue wait at the gateway's gate, ``in_flight_at_start`` (generations
running on that Ollama host when it got its slot, itself included), Ollama's ``load_duration``
(well above zero: the model was (re)loaded), and the GPU/RAM snapshots taken before and after
(GPU memory used and total summed over the GPUs, utilisation averaged over them, and the deltas).
It also times the first ``content`` event on the client (``client_ttft_seconds``).

Per level it computes the aggregate tokens/s (the sum of eval_count of the successful requests
divided by the level's wall time, first request sent to last one finished), the median and range
of per-request tokens/s, TTFT and queue-wait medians, the largest ``in_flight_at_start`` seen,
the number of model reloads, and the peak GPU memory as a share of the total.

Outputs: a table on stdout, ``loadtest-<timestamp>.csv`` (one row per request, the level's
aggregate repeated on each row) and ``loadtest-<timestamp>.html`` (self-contained: inline SVG
charts of tokens/s, latency and GPU use against concurrency, the table, the verdict).

The verdict (a heuristic; see :data:`HEURISTIC`)
-------------------------------------------------
Over the levels that had successful requests, in this order:

- **gate-bound**: ``in_flight_at_start`` never rose with concurrency: the gateway's gate
  (``OLLAMA_MAX_CONCURRENCY``, default 1) let one generation run at a time and the rest queued
  at the gateway; the run measured the gate, not the GPU. When the gate only capped the higher
  levels (``in_flight_at_start`` stopped at N < the level), those levels are left out and the
  verdict says so.
- **VRAM-bound**: the model was reloaded (``load_duration`` > 0.5 s) at a level above the first,
  or GPU memory reached 95 % of the total: there is not room for the model and the extra
  context (KV cache) of parallel requests, so Ollama evicts, reloads or spills to the CPU.
- Otherwise it finds the *knee*: the first level that no higher level beats by 25 % in
  aggregate tokens/s.

  - knee at the highest level, **not saturated**: the aggregate kept growing: parallel
    requests are batched and the box has headroom (try higher levels);
  - **compute-bound**: past the knee per-request tokens/s fell below 75 % while the aggregate
    stayed flat: the GPU is saturated, more requests only share it;
  - **serialised by Ollama**: past the knee per-request speed held, the aggregate stayed flat
    and TTFT rose: the extra requests took turns inside Ollama, which runs as many at once as
    the knee's level (``OLLAMA_NUM_PARALLEL``, or too little VRAM for more parallel slots,
    which Ollama then reduces).

GPU figures come from the snapshots the gateway takes on *its own* machine (NVML). With no
NVIDIA GPU or driver there (or with Ollama on another machine) the GPU columns are empty and the
verdict says so: the VRAM judgement then rests on model reloads alone.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from monitoring.stats import mean, percentile, present

DEFAULT_PROMPT = (
    "Write a short story of about 150 words about a lighthouse keeper who finds a message "
    "in a bottle."
)
#: Ollama's load_duration above this (seconds) counts as a model (re)load.
RELOAD_SECONDS = 0.5
#: GPU memory used at or above this share of the total counts as full.
VRAM_FULL_FRACTION = 0.95
#: Per-request tokens/s below this share of the lowest level's counts as a drop.
PER_REQUEST_DROP = 0.75
#: Aggregate tokens/s at or above this multiple of the lowest level's counts as growth.
AGGREGATE_GROWTH = 1.25
#: Refresh a password-login access token that expires within this many seconds.
REFRESH_MARGIN = 600

HEURISTIC = f"""\
How the verdict is reached (levels with successful requests; the "knee" is the level after which
aggregate tokens/s grows by less than {AGGREGATE_GROWTH - 1:.0%}):
- gate-bound: in_flight_at_start never rose with concurrency: requests queued at the gateway's
  gate (OLLAMA_MAX_CONCURRENCY) and the GPU was never asked for more (levels above the gate's
  limit are left out of the rest);
- VRAM-bound: model reloads (load_duration > {RELOAD_SECONDS} s) above the first level, or GPU
  memory at {VRAM_FULL_FRACTION:.0%} of its total or more;
- not saturated: aggregate tokens/s kept growing up to the highest level: there is headroom;
- compute-bound: past the knee, per-request tokens/s fell below {PER_REQUEST_DROP:.0%} while the
  aggregate stayed flat: the GPU is saturated and requests share it;
- serialised by Ollama: past the knee, per-request speed held and the aggregate stayed flat
  while TTFT rose: requests took turns inside Ollama (OLLAMA_NUM_PARALLEL, or too little VRAM
  for more parallel slots).
Per-request tokens/s is Ollama's eval_count / eval_duration (decode speed, waiting excluded);
aggregate tokens/s is all tokens generated in a level / the level's wall time."""


class LoadTestError(Exception):
    """The run cannot start or go on (unreachable server, refused token, every request failing)."""


# --------------------------------------------------------------------------- configuration


@dataclass
class LoadTestConfig:
    url: str
    model: str
    concurrency: Sequence[int] = (1, 2, 4, 8)
    requests: int = 20  # per level; at least the level's concurrency
    prompt: str = DEFAULT_PROMPT
    max_tokens: int | None = 256  # Ollama's num_predict, so that replies have similar lengths
    warmup: int = 1  # unmeasured sequential requests before the first level (load the model)
    timeout: float = 600.0  # seconds per request
    out_dir: Path = Path()
    cleanup: bool = False  # delete the conversations the run created

    def requests_at(self, concurrency: int) -> int:
        return max(self.requests, concurrency)


# --------------------------------------------------------------------------- authentication


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (epoch seconds), read without verifying; None if unreadable."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(data["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class Auth:
    """A fixed bearer token (``--token``, ``LOADTEST_TOKEN`` or one minted on the server)."""

    def __init__(self, access: str) -> None:
        self.access = access

    async def fresh(self, client: httpx.AsyncClient) -> None:
        """Make sure the token outlives the next level, where that is possible."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    def expires_in(self) -> float | None:
        expiry = token_expiry(self.access)
        return None if expiry is None else expiry - time.time()


class PasswordAuth(Auth):
    """Logs in through ``POST /api/auth/token/`` and refreshes before a level when the access
    token would expire soon (the refresh token is rotated by the server)."""

    def __init__(self, email: str, password: str) -> None:
        super().__init__("")
        self.email = email
        self.password = password
        self.refresh: str | None = None

    async def login(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/token/", json={"email": self.email, "password": self.password}
        )
        if response.status_code != 200:
            raise LoadTestError(
                f"Logging in as {self.email} failed: HTTP {response.status_code} "
                f"{_detail(response)}"
            )
        data = response.json()
        self.access, self.refresh = data["access"], data.get("refresh")

    async def fresh(self, client: httpx.AsyncClient) -> None:
        left = self.expires_in()
        if not self.access:
            await self.login(client)
        elif left is not None and left < REFRESH_MARGIN and self.refresh:
            response = await client.post("/api/auth/token/refresh/", json={"refresh": self.refresh})
            if response.status_code != 200:
                await self.login(client)
                return
            data = response.json()
            self.access = data["access"]
            self.refresh = data.get("refresh", self.refresh)


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        code = data.get("code")
        detail = data.get("detail") or json.dumps(data)[:200]
        return f"{code}: {detail}" if code else str(detail)
    return json.dumps(data)[:200]


# --------------------------------------------------------------------------- results


@dataclass
class RequestResult:
    level: int
    index: int
    ok: bool = False
    error: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    conversation: str | None = None
    message: int | None = None
    started_offset_seconds: float = 0.0  # since the level started
    wall_seconds: float = 0.0  # request sent -> stream ended
    client_ttft_seconds: float | None = None  # request sent -> first content event
    # From the metrics event.
    tokens_per_second: float | None = None
    eval_count: int | None = None
    prompt_eval_count: int | None = None
    time_to_first_token_seconds: float | None = None
    queue_wait_seconds: float | None = None
    in_flight_at_start: int | None = None
    load_duration_seconds: float | None = None
    total_duration_seconds: float | None = None
    gpu_count: int = 0
    gpu_memory_used_mb_before: float | None = None
    gpu_memory_used_mb_after: float | None = None
    gpu_memory_total_mb: float | None = None
    gpu_memory_used_mb_delta: float | None = None
    gpu_utilization_percent_before: float | None = None
    gpu_utilization_percent_after: float | None = None
    gpu_utilization_percent_delta: float | None = None
    ram_used_mb_delta: float | None = None

    @property
    def reloaded(self) -> bool:
        return (self.load_duration_seconds or 0.0) > RELOAD_SECONDS

    def take_metrics(self, metrics: dict[str, Any]) -> None:
        self.message = metrics.get("message") if isinstance(metrics.get("message"), int) else None
        self.tokens_per_second = _number(metrics.get("tokens_per_second"))
        self.eval_count = _integer(metrics.get("eval_count"))
        self.prompt_eval_count = _integer(metrics.get("prompt_eval_count"))
        self.time_to_first_token_seconds = _number(metrics.get("time_to_first_token_seconds"))
        self.queue_wait_seconds = _number(metrics.get("queue_wait_seconds"))
        self.in_flight_at_start = _integer(metrics.get("in_flight_at_start"))
        self.load_duration_seconds = _number(metrics.get("load_duration_seconds"))
        self.total_duration_seconds = _number(metrics.get("total_duration_seconds"))
        before = _gpus(metrics.get("gpu_usage_before"))
        after = _gpus(metrics.get("gpu_usage_after"))
        self.gpu_count = max(len(before), len(after))
        self.gpu_memory_used_mb_before = _sum(g.get("memory_used_mb") for g in before)
        self.gpu_memory_used_mb_after = _sum(g.get("memory_used_mb") for g in after)
        self.gpu_memory_total_mb = _sum(g.get("memory_total_mb") for g in after or before)
        self.gpu_utilization_percent_before = mean(
            present(_number(g.get("utilization_percent")) for g in before)
        )
        self.gpu_utilization_percent_after = mean(
            present(_number(g.get("utilization_percent")) for g in after)
        )
        delta = metrics.get("resource_delta")
        delta = delta if isinstance(delta, dict) else {}
        self.gpu_memory_used_mb_delta = _number(delta.get("gpu_memory_used_mb_delta"))
        gpu_deltas = delta.get("gpu") if isinstance(delta.get("gpu"), list) else []
        self.gpu_utilization_percent_delta = mean(
            present(
                _number(g.get("utilization_percent_delta"))
                for g in gpu_deltas
                if isinstance(g, dict)
            )
        )
        self.ram_used_mb_delta = _number(delta.get("ram_used_mb_delta"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _gpus(value: Any) -> list[dict[str, Any]]:
    return [g for g in value if isinstance(g, dict)] if isinstance(value, list) else []


def _sum(values) -> float | None:
    numbers = present(_number(v) for v in values)
    return round(sum(numbers), 1) if numbers else None


@dataclass
class LevelSummary:
    concurrency: int
    requests: int
    ok: int
    failed: int
    wall_seconds: float
    eval_tokens: int
    aggregate_tokens_per_second: float | None
    per_request_tps_p50: float | None
    per_request_tps_min: float | None
    per_request_tps_max: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    client_ttft_p50: float | None
    queue_wait_p50: float | None
    queue_wait_max: float | None
    max_in_flight: int | None
    reloads: int
    gpu_count: int
    gpu_memory_used_mb_max: float | None
    gpu_memory_total_mb: float | None
    gpu_memory_fraction_max: float | None
    gpu_utilization_after_avg: float | None
    gpu_memory_delta_avg: float | None
    errors: list[str] = field(default_factory=list)


def summarize(concurrency: int, results: list[RequestResult], wall: float) -> LevelSummary:
    good = [r for r in results if r.ok]
    rates = present(r.tokens_per_second for r in good)
    tokens = sum(r.eval_count or 0 for r in good)
    totals = present(r.gpu_memory_total_mb for r in good)
    used = present(r.gpu_memory_used_mb_after for r in good)
    fractions = present(
        r.gpu_memory_used_mb_after / r.gpu_memory_total_mb
        for r in good
        if r.gpu_memory_used_mb_after is not None and r.gpu_memory_total_mb
    )
    levels = [r.in_flight_at_start for r in good if r.in_flight_at_start is not None]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        ok=len(good),
        failed=len(results) - len(good),
        wall_seconds=wall,
        eval_tokens=tokens,
        aggregate_tokens_per_second=tokens / wall if good and wall > 0 else None,
        per_request_tps_p50=percentile(rates, 0.5),
        per_request_tps_min=min(rates, default=None),
        per_request_tps_max=max(rates, default=None),
        ttft_p50=percentile(present(r.time_to_first_token_seconds for r in good), 0.5),
        ttft_p95=percentile(present(r.time_to_first_token_seconds for r in good), 0.95),
        client_ttft_p50=percentile(present(r.client_ttft_seconds for r in good), 0.5),
        queue_wait_p50=percentile(present(r.queue_wait_seconds for r in good), 0.5),
        queue_wait_max=max(present(r.queue_wait_seconds for r in good), default=None),
        max_in_flight=max(levels, default=None),
        reloads=sum(1 for r in good if r.reloaded),
        gpu_count=max((r.gpu_count for r in good), default=0),
        gpu_memory_used_mb_max=max(used, default=None),
        gpu_memory_total_mb=max(totals, default=None),
        gpu_memory_fraction_max=max(fractions, default=None),
        gpu_utilization_after_avg=mean(present(r.gpu_utilization_percent_after for r in good)),
        gpu_memory_delta_avg=mean(present(r.gpu_memory_used_mb_delta for r in good)),
        errors=sorted({r.error for r in results if r.error})[:5],
    )


@dataclass
class LoadTestResult:
    config: LoadTestConfig
    started_at: datetime
    levels: list[LevelSummary] = field(default_factory=list)
    requests: list[RequestResult] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    csv_path: Path | None = None
    html_path: Path | None = None
    report: str = ""

    @property
    def stamp(self) -> str:
        return self.started_at.strftime("%Y%m%d-%H%M%S")

    @property
    def failed(self) -> int:
        return sum(level.failed for level in self.levels)


# --------------------------------------------------------------------------- one request


async def chat_stream(
    client: httpx.AsyncClient,
    auth: Auth,
    config: LoadTestConfig,
    level: int,
    index: int,
    level_start: float,
) -> RequestResult:
    """One ``POST /api/chat/stream/``, read to its end."""
    result = RequestResult(level=level, index=index)
    body: dict[str, Any] = {
        "message": f"[loadtest {level}.{index}] {config.prompt}",
        "model": config.model,
    }
    if config.max_tokens is not None:
        body["options"] = {"max_tokens": config.max_tokens}
    sent = time.perf_counter()
    result.started_offset_seconds = sent - level_start
    finished = metrics = False
    try:
        async with client.stream(
            "POST", "/api/chat/stream/", json=body, headers=auth.headers()
        ) as response:
            result.http_status = response.status_code
            if response.status_code != 200:
                await response.aread()
                try:
                    result.error_code = response.json().get("code")
                except (ValueError, AttributeError):
                    result.error_code = None
                result.error = f"HTTP {response.status_code} {_detail(response)}"
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
                    if kind == "content" and result.client_ttft_seconds is None:
                        result.client_ttft_seconds = time.perf_counter() - sent
                    elif kind == "status" and event.get("conversation"):
                        result.conversation = event["conversation"]
                    elif kind == "metrics":
                        metrics = True
                        result.take_metrics(event)
                    elif kind == "error":
                        result.error_code = event.get("code")
                        result.error = f"error event {event.get('code')}: {event.get('detail')}"
    except (httpx.HTTPError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.wall_seconds = time.perf_counter() - sent
    if result.error is None and not finished:
        result.error = "the stream ended without [DONE]"
    if result.error is None and not metrics:
        result.error = "no metrics event"
    result.ok = result.error is None
    return result


# --------------------------------------------------------------------------- running

Emit = Callable[[str], None]


async def run_level(
    client: httpx.AsyncClient, auth: Auth, config: LoadTestConfig, concurrency: int
) -> tuple[list[RequestResult], float]:
    """``requests_at(concurrency)`` chats, ``concurrency`` in flight at a time: (results, wall)."""
    count = config.requests_at(concurrency)
    queue = iter(range(1, count + 1))
    results: list[RequestResult] = []
    start = time.perf_counter()

    async def worker() -> None:
        for index in queue:
            results.append(await chat_stream(client, auth, config, concurrency, index, start))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    results.sort(key=lambda r: r.index)
    return results, time.perf_counter() - start


async def _preflight(client: httpx.AsyncClient, auth: Auth, config: LoadTestConfig) -> str:
    try:
        await auth.fresh(client)
        response = await client.get("/api/auth/me/", headers=auth.headers())
    except httpx.HTTPError as exc:
        raise LoadTestError(f"Cannot reach {config.url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (401, 403):
        raise LoadTestError(
            f"The server refused the token (HTTP {response.status_code} {_detail(response)}). "
            "A token minted locally only works against a server with the same SECRET_KEY "
            "(or JWT_SIGNING_KEY) and database."
        )
    if response.status_code != 200:
        raise LoadTestError(
            f"GET {config.url}/api/auth/me/ answered HTTP {response.status_code}: is --url the "
            "gateway (with https:// behind a TLS proxy)?"
        )
    return str(response.json().get("email", "?"))


def hints_for(results: Sequence[RequestResult]) -> list[str]:
    codes = {r.error_code for r in results if r.error_code}
    hints = []
    if codes & {"rate_limited", "too_many_generations"}:
        hints.append(
            "Requests were refused by the per-user limits (HTTP 429): run the server with "
            "CHAT_MESSAGES_PER_MINUTE=0 and CHAT_MAX_GENERATIONS_PER_USER=0 for the test, then "
            "restore them."
        )
    if "queue_full" in codes:
        hints.append(
            "The gateway's queue was full (HTTP 503): raise OLLAMA_MAX_QUEUE to at least the "
            "highest concurrency level."
        )
    if codes & {"model_not_found"}:
        hints.append("The model is not installed on the Ollama hosts: pull it first.")
    return hints


async def run_async(config: LoadTestConfig, auth: Auth, emit: Emit) -> LoadTestResult:
    result = LoadTestResult(config=config, started_at=datetime.now(UTC))
    top = max(config.concurrency)
    limits = httpx.Limits(max_connections=top + 4, max_keepalive_connections=top + 4)
    timeout = httpx.Timeout(config.timeout, connect=10.0)
    async with httpx.AsyncClient(
        base_url=config.url.rstrip("/"), limits=limits, timeout=timeout
    ) as client:
        email = await _preflight(client, auth, config)
        emit(
            f"load test of {config.model} at {config.url} as {email}: concurrency "
            f"{','.join(map(str, config.concurrency))}, {config.requests} requests per level, "
            f"max_tokens {config.max_tokens or 'unlimited'}"
        )
        created: list[str] = []
        for index in range(1, config.warmup + 1):
            warm = await chat_stream(client, auth, config, 0, index, time.perf_counter())
            created += [warm.conversation] if warm.conversation else []
            if not warm.ok:
                hints = " ".join(hints_for([warm]))
                raise LoadTestError(f"The warm-up request failed: {warm.error}. {hints}".strip())
            emit(
                f"warm-up {index}: {warm.eval_count} tokens, {_f(warm.tokens_per_second)} tok/s, "
                f"load {_f(warm.load_duration_seconds, 2)} s"
            )
        for concurrency in config.concurrency:
            await auth.fresh(client)
            left = auth.expires_in()
            if left is not None and left < 60:
                emit(f"warning: the access token expires in {max(left, 0):.0f} s")
            results, wall = await run_level(client, auth, config, concurrency)
            created += [r.conversation for r in results if r.conversation]
            level = summarize(concurrency, results, wall)
            result.requests += results
            result.levels.append(level)
            emit(
                f"concurrency {concurrency}: {level.ok}/{level.requests} ok in {wall:.1f} s, "
                f"aggregate {_f(level.aggregate_tokens_per_second)} tok/s"
                + (f", e.g. {level.errors[0]}" if level.errors else "")
            )
        if config.cleanup:
            await auth.fresh(client)
            for conversation in dict.fromkeys(created):
                await client.delete(f"/api/conversations/{conversation}/", headers=auth.headers())
            emit(f"deleted the {len(set(created))} conversations of the run")
    result.verdict = verdict(result.levels)
    result.hints = hints_for(result.requests)
    return result


def run(config: LoadTestConfig, auth: Auth, emit: Emit = print) -> LoadTestResult:
    """Run the load test, print the table and the verdict, write the CSV and the HTML chart."""
    result = asyncio.run(run_async(config, auth, emit))
    result.report = format_report(result)
    emit(result.report)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    result.csv_path = write_csv(result, config.out_dir / f"loadtest-{result.stamp}.csv")
    result.html_path = write_html(result, config.out_dir / f"loadtest-{result.stamp}.html")
    emit(f"wrote {result.csv_path} and {result.html_path}")
    return result


# --------------------------------------------------------------------------- the verdict


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _knee(levels: Sequence[LevelSummary]) -> LevelSummary:
    """The level after which aggregate tokens/s stops growing: the first one that no later
    level beats by :data:`AGGREGATE_GROWTH` (the last level when it kept growing)."""
    for i, lv in enumerate(levels):
        later = levels[i + 1 :]
        if all(
            (other.aggregate_tokens_per_second or 0.0)
            < AGGREGATE_GROWTH * (lv.aggregate_tokens_per_second or 0.0)
            for other in later
        ):
            return lv
    return levels[-1]


def verdict(levels: Sequence[LevelSummary]) -> list[str]:
    """A one-line verdict (first) and the lines that support it; see :data:`HEURISTIC`."""
    measured = [
        lv for lv in levels if lv.ok and lv.per_request_tps_p50 and lv.aggregate_tokens_per_second
    ]
    measured.sort(key=lambda lv: lv.concurrency)
    notes: list[str] = []
    has_gpu = any(lv.gpu_count for lv in measured)
    if not has_gpu:
        notes.append(
            "No GPU figures in the metrics: no NVIDIA GPU or driver is visible on the gateway's "
            "machine (the snapshots are taken where the gateway runs, not on a remote Ollama "
            "host), so the VRAM judgement rests on model reloads alone."
        )
    if len(measured) < 2:
        return [
            "Verdict: not enough data: at least two concurrency levels with successful "
            "requests are needed.",
            *notes,
        ]
    base, top = measured[0], measured[-1]

    def ttft(a: LevelSummary, b: LevelSummary) -> str:
        return (
            f"TTFT p50 {_f(a.ttft_p50, 2)} -> {_f(b.ttft_p50, 2)} s, queue wait p50 "
            f"{_f(a.queue_wait_p50, 2)} -> {_f(b.queue_wait_p50, 2)} s"
        )

    # The gateway's gate: in_flight_at_start is what it admitted at once.
    cap = max((lv.max_in_flight or 1) for lv in measured)
    if cap <= (base.max_in_flight or 1):
        return [
            f"Verdict: gate-bound, not a GPU limit: the gateway never ran more than {cap} "
            f"generation(s) at once, so higher concurrency only queued at its gate "
            f"({ttft(base, top)}). Set OLLAMA_MAX_CONCURRENCY (and OLLAMA_NUM_PARALLEL on the "
            f"Ollama server) to at least {top.concurrency} to measure the hardware.",
            *notes,
        ]
    if cap < top.concurrency:
        notes.insert(
            0,
            f"The gateway's gate admitted at most {cap} generations at once "
            "(OLLAMA_MAX_CONCURRENCY): the levels above it queued at the gateway and are left "
            "out of the verdict.",
        )
        measured = [lv for lv in measured if lv.concurrency <= cap] or measured[:1]
        top = measured[-1]
        if len(measured) < 2:
            return ["Verdict: not enough data below the gate's limit.", *notes]

    reloads = [lv for lv in measured[1:] if lv.reloads]
    full = [
        lv
        for lv in measured
        if lv.gpu_memory_fraction_max is not None
        and lv.gpu_memory_fraction_max >= VRAM_FULL_FRACTION
    ]
    peak = max(
        (lv.gpu_memory_fraction_max for lv in measured if lv.gpu_memory_fraction_max is not None),
        default=None,
    )

    def rates(a: LevelSummary, b: LevelSummary) -> tuple[float, float, str]:
        per = _ratio(b.per_request_tps_p50, a.per_request_tps_p50) or 0.0
        agg = _ratio(b.aggregate_tokens_per_second, a.aggregate_tokens_per_second) or 0.0
        text = (
            f"from concurrency {a.concurrency} to {b.concurrency}: per-request tokens/s "
            f"{_f(a.per_request_tps_p50)} -> {_f(b.per_request_tps_p50)} (x{per:.2f}), "
            f"aggregate {_f(a.aggregate_tokens_per_second)} -> "
            f"{_f(b.aggregate_tokens_per_second)} (x{agg:.2f})"
        )
        return per, agg, text

    knee = _knee(measured)
    if reloads or full:
        why = []
        if reloads:
            why.append(
                f"the model was reloaded (load_duration > {RELOAD_SECONDS} s) at concurrency "
                + ", ".join(f"{lv.concurrency} ({lv.reloads}x)" for lv in reloads)
            )
        if full:
            why.append(
                "GPU memory reached "
                + ", ".join(
                    f"{lv.gpu_memory_fraction_max:.0%} at concurrency {lv.concurrency}"
                    for lv in full
                )
            )
        head = (
            f"Verdict: VRAM-bound: {'; '.join(why)}. There is not room for the model and the "
            "context of parallel requests: use a smaller model or quantisation, a shorter "
            f"num_ctx, or fewer parallel slots ({rates(base, top)[2]})."
        )
    elif knee is top:
        per, _agg, text = rates(base, top)
        head = f"Verdict: not saturated: {text}. Parallel requests are batched; there is headroom"
        head += (
            ", though each request is slowing: saturation is near."
            if per < PER_REQUEST_DROP
            else ": try higher concurrency levels."
        )
    else:
        per, _agg, text = rates(knee, top)
        where = (
            "from the first level"
            if knee is base
            else f"at concurrency {knee.concurrency} (aggregate "
            f"x{_ratio(knee.aggregate_tokens_per_second, base.aggregate_tokens_per_second):.2f} "
            f"over concurrency {base.concurrency})"
        )
        if per < PER_REQUEST_DROP:
            head = (
                f"Verdict: compute-bound {where}: {text}. The GPU is saturated: more "
                "concurrent requests only share it (each gets slower, the total stays flat)."
            )
        else:
            head = (
                f"Verdict: serialised by Ollama {where}: {text}; {ttft(knee, top)}. Each "
                "request kept its speed but the extra ones took turns inside Ollama: "
                f"it runs {knee.concurrency} generation(s) of this model at once "
                "(OLLAMA_NUM_PARALLEL, or too little VRAM for more parallel slots, which "
                "Ollama then reduces)."
            )
    lines = [head]
    if peak is not None and not full:
        lines.append(f"GPU memory peaked at {peak:.0%} of the total.")
    return lines + notes


# --------------------------------------------------------------------------- reporting


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


TABLE_HEAD = [
    "conc.",
    "ok",
    "wall s",
    "agg. tok/s",
    "tok/s p50 (min-max)",
    "TTFT p50/p95 s",
    "queue p50/max s",
    "in flight",
    "reloads",
    "GPU mem MB (%)",
    "GPU util %",
    "GPU delta MB",
]


def table_rows(levels: Sequence[LevelSummary]) -> list[list[str]]:
    rows = []
    for lv in levels:
        gpu_mem = "-"
        if lv.gpu_memory_used_mb_max is not None:
            share = (
                f" ({lv.gpu_memory_fraction_max:.0%})"
                if lv.gpu_memory_fraction_max is not None
                else ""
            )
            gpu_mem = f"{lv.gpu_memory_used_mb_max:,.0f}{share}"
        rows.append(
            [
                str(lv.concurrency),
                f"{lv.ok}/{lv.requests}",
                _f(lv.wall_seconds, 2),
                _f(lv.aggregate_tokens_per_second),
                f"{_f(lv.per_request_tps_p50)} ({_f(lv.per_request_tps_min)}-"
                f"{_f(lv.per_request_tps_max)})",
                f"{_f(lv.ttft_p50, 3)}/{_f(lv.ttft_p95, 3)}",
                f"{_f(lv.queue_wait_p50, 3)}/{_f(lv.queue_wait_max, 3)}",
                "-" if lv.max_in_flight is None else str(lv.max_in_flight),
                str(lv.reloads),
                gpu_mem,
                _f(lv.gpu_utilization_after_avg, 0),
                _f(lv.gpu_memory_delta_avg),
            ]
        )
    return rows


def format_table(levels: Sequence[LevelSummary]) -> str:
    rows = [TABLE_HEAD, *table_rows(levels)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEAD))]
    return "\n".join("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows)


def format_report(result: LoadTestResult) -> str:
    lines = ["", format_table(result.levels), ""]
    lines += result.verdict
    for lv in result.levels:
        if lv.errors:
            lines.append(f"concurrency {lv.concurrency}: {lv.failed} failed, e.g. {lv.errors[0]}")
    lines += result.hints
    lines += ["", HEURISTIC]
    return "\n".join(lines)


CSV_COLUMNS = [f.name for f in fields(RequestResult)]
LEVEL_COLUMNS = ["level_aggregate_tokens_per_second", "level_wall_seconds"]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def write_csv(result: LoadTestResult, path: Path) -> Path:
    by_level = {lv.concurrency: lv for lv in result.levels}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["run", "model", *CSV_COLUMNS, *LEVEL_COLUMNS])
        writer.writeheader()
        for request in result.requests:
            level = by_level[request.level]
            row = {name: _cell(value) for name, value in asdict(request).items()}
            row.update(
                run=result.stamp,
                model=result.config.model,
                level_aggregate_tokens_per_second=_cell(level.aggregate_tokens_per_second),
                level_wall_seconds=_cell(level.wall_seconds),
            )
            writer.writerow(row)
    return path


# ---- the HTML chart: inline SVG, no external assets

COLORS = ["#2f6feb", "#d9480f", "#2b8a3e", "#9c36b5"]
W, H = 520, 260
ML, MR, MT, MB = 60, 16, 16, 40


def _nice_max(value: float) -> float:
    """A round axis top a little above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    target = value * 1.1
    magnitude = 10 ** math.floor(math.log10(target))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if target <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def svg_chart(
    title: str,
    unit: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    dots: Sequence[tuple[int, float]] = (),
    fixed_max: float | None = None,
) -> str:
    """A line chart against the concurrency levels (evenly spaced), with optional dots (one per
    request at its level)."""
    values = [v for _label, vs in series for v in vs if v is not None] + [v for _i, v in dots]
    y_max = fixed_max or _nice_max(max(values, default=0.0))
    plot_w, plot_h = W - ML - MR, H - MT - MB
    n = max(len(x_labels), 1)

    def x(i: float) -> float:
        return ML + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return MT + plot_h - min(v, y_max) / y_max * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{html.escape(title)}">'
    ]
    for k in range(5):
        v = y_max * k / 4
        out.append(
            f'<line x1="{ML}" x2="{W - MR}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{ML - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_f(v, 1 if v < 10 else 0)}'
            "</text>"
        )
    for i, label in enumerate(x_labels):
        out.append(
            f'<text x="{x(i):.1f}" y="{H - MB + 16}" text-anchor="middle">{html.escape(label)}'
            "</text>"
        )
    out.append(
        f'<text x="{ML + plot_w / 2:.1f}" y="{H - 6}" text-anchor="middle">concurrency</text>'
        f'<text x="12" y="{MT + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {MT + plot_h / 2:.1f})">{html.escape(unit)}</text>'
    )
    for i, v in dots:
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" class="dot"/>')
    for s, (_label, vs) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        path = ""
        pen = "M"
        for i, v in enumerate(vs):
            if v is None:
                pen = "M"
                continue
            path += f"{pen}{x(i):.1f} {y(v):.1f} "
            pen = "L"
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}"/>')
        if path:
            out.append(f'<path d="{path.strip()}" stroke="{color}" class="line"/>')
    out.append("</svg>")
    legend = "".join(
        f'<li><span style="background:{COLORS[s % len(COLORS)]}"></span>{html.escape(label)}</li>'
        for s, (label, _vs) in enumerate(series)
    )
    if dots:
        legend += '<li><span class="dotkey"></span>each request</li>'
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(out)}"
        f'<ul class="legend">{legend}</ul></figure>'
    )


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1140px;
       color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.4rem; } .muted { color: #656d76; }
.verdict { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 8px;
           padding: .8rem 1rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 8px; padding: .6rem; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
svg text { font-size: 11px; fill: #656d76; }
svg .grid { stroke: #eaeef2; } svg .line { fill: none; stroke-width: 2; }
svg .dot { fill: #8c959f; fill-opacity: .55; }
.legend { list-style: none; display: flex; gap: 1rem; padding: 0; margin: .3rem 0 0;
          font-size: .85rem; }
.legend span { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
               margin-right: .3rem; vertical-align: -1px; }
.legend .dotkey { background: #8c959f; border-radius: 50%; }
table { border-collapse: collapse; font-size: .85rem; margin: 1rem 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .5rem; text-align: right; }
th { background: #f6f8fa; } pre { white-space: pre-wrap; font-size: .85rem; }
"""


def render_html(result: LoadTestResult) -> str:
    levels = result.levels
    labels = [str(lv.concurrency) for lv in levels]
    position = {lv.concurrency: i for i, lv in enumerate(levels)}
    good = [r for r in result.requests if r.ok]
    charts = [
        svg_chart(
            "Tokens/s: per request and aggregate",
            "tokens/s",
            labels,
            [
                ("per request, median", [lv.per_request_tps_p50 for lv in levels]),
                (
                    "aggregate (all tokens / wall time)",
                    [lv.aggregate_tokens_per_second for lv in levels],
                ),
            ],
            dots=[
                (position[r.level], r.tokens_per_second)
                for r in good
                if r.tokens_per_second is not None
            ],
        ),
        svg_chart(
            "Latency: time to first token and queue wait",
            "seconds",
            labels,
            [
                ("TTFT median", [lv.ttft_p50 for lv in levels]),
                ("TTFT p95", [lv.ttft_p95 for lv in levels]),
                ("queue wait median", [lv.queue_wait_p50 for lv in levels]),
            ],
        ),
    ]
    if any(lv.gpu_count for lv in levels):
        charts.append(
            svg_chart(
                "GPU: memory used (peak, % of total) and utilisation after each request",
                "%",
                labels,
                [
                    (
                        "memory used, peak %",
                        [
                            None
                            if lv.gpu_memory_fraction_max is None
                            else lv.gpu_memory_fraction_max * 100
                            for lv in levels
                        ],
                    ),
                    (
                        "utilisation after, average %",
                        [lv.gpu_utilization_after_avg for lv in levels],
                    ),
                ],
                fixed_max=100.0,
            )
        )
    else:
        charts.append(
            '<figure><figcaption>GPU</figcaption><p class="muted">No GPU figures: no NVIDIA GPU '
            "or driver visible on the gateway's machine.</p></figure>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEAD)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(levels)
    )
    config = result.config
    verdict = "".join(f"<p>{html.escape(line)}</p>" for line in result.verdict + result.hints)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Load test {html.escape(config.model)} {result.stamp}</title>
<style>{STYLE}</style></head>
<body>
<h1>Load test: {html.escape(config.model)}</h1>
<p class="muted">{html.escape(config.url)} · started {result.started_at:%Y-%m-%d %H:%M:%S} UTC ·
concurrency {html.escape(",".join(labels))} · {config.requests} requests per level ·
max_tokens {config.max_tokens or "unlimited"} · {len(result.requests)} requests,
{result.failed} failed</p>
<div class="verdict">{verdict}</div>
<div class="charts">{"".join(charts)}</div>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<pre>{html.escape(HEURISTIC)}</pre>
</body></html>
"""


def write_html(result: LoadTestResult, path: Path) -> Path:
    path.write_text(render_html(result), encoding="utf-8")
    return path
