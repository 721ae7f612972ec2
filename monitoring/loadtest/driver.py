"""Driving the load test: the configuration, authentication, one ``POST /api/chat/stream/``
read to its end, the concurrency levels one after the other, and :func:`run` (which also prints
the report and writes the files of :mod:`monitoring.loadtest.report`).

For each concurrency level C it sends ``requests`` chats (at least C) through
``POST /api/chat/stream/`` (Server-Sent Events) with C of them in flight at any moment (a closed
loop: each of C workers sends its next request when the previous one ends), after ``warmup``
unmeasured sequential requests that load the model. Every request starts a new conversation with
the same prompt (tagged ``[loadtest C.i]``), so that context does not grow along the run, and
of source ``loadtest`` (``"source": "loadtest"`` in the body), so that the run's conversations
stay out of the account's conversation list and search unless asked for (``?source=loadtest``).

Per request it records, from the ``metrics`` event of the stream (the gateway's own figures):
Ollama's decode speed ``tokens_per_second`` (eval_count / eval_duration), ``eval_count``, the
time to first token and the queue wait at the gateway's gate, ``in_flight_at_start`` (generations
running on that Ollama host when it got its slot, itself included), Ollama's ``load_duration``
(well above zero: the model was (re)loaded), and the GPU/RAM snapshots taken before and after
(GPU memory used and total summed over the GPUs, utilisation averaged over them, and the deltas).
It also times the first ``content`` event on the client (``client_ttft_seconds``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.stats import mean, present
from monitoring.loadtest.verdict import (
    RELOAD_SECONDS,
    LevelSummary,
    fmt,
    hints_for,
    summarize,
    verdict,
)

DEFAULT_PROMPT = (
    "Write a short story of about 150 words about a lighthouse keeper who finds a message "
    "in a bottle."
)
#: Refresh a password-login access token that expires within this many seconds.
REFRESH_MARGIN = 600


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
        self.gpu_utilization_percent_delta = mean(
            present(_number(g.get("utilization_percent_delta")) for g in _gpus(delta.get("gpu")))
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


def _sum(values: Iterable[Any]) -> float | None:
    numbers = present(_number(v) for v in values)
    return round(sum(numbers), 1) if numbers else None


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
        # Kept out of the conversation list (and search) unless asked for: ?source=loadtest.
        "source": "loadtest",
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
                f"warm-up {index}: {warm.eval_count} tokens, {fmt(warm.tokens_per_second)} tok/s, "
                f"load {fmt(warm.load_duration_seconds, 2)} s"
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
                f"aggregate {fmt(level.aggregate_tokens_per_second)} tok/s"
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
    # Imported here rather than at the top: the report imports RequestResult from this module.
    from monitoring.loadtest.report import format_report, write_csv, write_html

    result = asyncio.run(run_async(config, auth, emit))
    result.report = format_report(result)
    emit(result.report)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    result.csv_path = write_csv(result, config.out_dir / f"loadtest-{result.stamp}.csv")
    result.html_path = write_html(result, config.out_dir / f"loadtest-{result.stamp}.html")
    emit(f"wrote {result.csv_path} and {result.html_path}")
    return result
