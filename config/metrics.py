"""Prometheus metrics: what each process counts as it happens.

Counters and histograms are recorded where things happen (a request answered, a generation
ended, a socket opened). With several web processes, set `PROMETHEUS_MULTIPROC_DIR` to a
directory they share, emptied before they start (`make run` does): prometheus-client then keeps
each process's figures in files there and `/metrics` adds them up. Without it each process
counts for itself, which is right for the embedded single process. What is a state rather than
an event (the gate's queues, the latest telemetry) is read when scraped: config/metrics_view.py.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from prometheus_client import Counter, Gauge, Histogram, multiprocess

PREFIX = "ollama_gateway"

HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by view and status.",
    ["view", "method", "status"],
)
GENERATIONS = Counter(
    f"{PREFIX}_generations",
    "Generations ended, by model, Ollama host and outcome.",
    ["model", "host", "outcome"],
)
GENERATED_TOKENS = Counter(
    f"{PREFIX}_generated_tokens",
    "Tokens generated (Ollama's eval_count), by model and host.",
    ["model", "host"],
)
PROMPT_TOKENS = Counter(
    f"{PREFIX}_prompt_tokens",
    "Prompt tokens evaluated (Ollama's prompt_eval_count), by model and host.",
    ["model", "host"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    f"{PREFIX}_time_to_first_token_seconds",
    "From the request to Ollama to its first token, by model.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf")),
)
QUEUE_WAIT = Histogram(
    f"{PREFIX}_queue_wait_seconds",
    "Time a generation waited in the gate's queue for a slot, by Ollama host.",
    ["host"],
    buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf")),
)
EMBEDDINGS = Counter(
    f"{PREFIX}_embeddings",
    "Embedding requests ended, by model, Ollama host and outcome.",
    ["model", "host", "outcome"],
)
WEBSOCKETS = Gauge(
    f"{PREFIX}_websocket_connections",
    "WebSocket connections open, by endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)


def generation_ended(
    *,
    model: str,
    host: str,
    outcome: str,
    eval_count: int | None = None,
    prompt_eval_count: int | None = None,
    time_to_first_token: float | None = None,
    queue_wait: float | None = None,
) -> None:
    GENERATIONS.labels(model, host, outcome).inc()
    if eval_count:
        GENERATED_TOKENS.labels(model, host).inc(eval_count)
    if prompt_eval_count:
        PROMPT_TOKENS.labels(model, host).inc(prompt_eval_count)
    if time_to_first_token is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(time_to_first_token)
    if queue_wait is not None:
        QUEUE_WAIT.labels(host).observe(queue_wait)


def embedding_ended(
    *,
    model: str,
    host: str,
    outcome: str,
    prompt_eval_count: int | None = None,
    queue_wait: float | None = None,
) -> None:
    EMBEDDINGS.labels(model, host, outcome).inc()
    if prompt_eval_count:
        PROMPT_TOKENS.labels(model, host).inc(prompt_eval_count)
    if queue_wait is not None:
        QUEUE_WAIT.labels(host).observe(queue_wait)


def process_ended() -> None:
    """In multiprocess mode, a stopping web process's live gauges (its sockets) stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


def view_label(request: HttpRequest) -> str:
    """The URL pattern's name (never the raw path: one series per view, not per URL)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or match.route or "unnamed"


class RequestMetricsMiddleware:
    """Counts every answered request by view, method and status, sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        self._count(request, response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        self._count(request, response)
        return response

    @staticmethod
    def _count(request: HttpRequest, response: HttpResponseBase) -> None:
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(view_label(request), method, str(response.status_code)).inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class CountedSocket:
    """A consumer mixin: the socket counts in `websocket_connections` from its acceptance to
    its disconnection, however either happens."""

    metrics_endpoint = "unknown"
    _counted = False

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        await super().accept(*args, **kwargs)  # type: ignore[misc]
        if not self._counted:
            self._counted = True
            WEBSOCKETS.labels(self.metrics_endpoint).inc()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self._counted:
            self._counted = False
            WEBSOCKETS.labels(self.metrics_endpoint).dec()
        await super().websocket_disconnect(message)  # type: ignore[misc]
