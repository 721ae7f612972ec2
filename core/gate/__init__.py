"""The generation gate: per Ollama host, at most N generations in flight, the rest queued.

Usage::

    async with gate.reserve(host) as r:      # GateFull at once if the queue is full
        async for position in r.positions():  # 1-based, each time it changes; nothing if free
            ...
        ...                                    # the slot is held: stream from Ollama
"""

from __future__ import annotations

from typing import Any

from .base import DEFAULT_RETRY_AFTER, Gate, GateError, GateFull, GateLost, GateStats, Reservation
from .local import LocalGate
from .redis_gate import RedisGate

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "Gate",
    "GateError",
    "GateFull",
    "GateLost",
    "GateStats",
    "LocalGate",
    "RedisGate",
    "Reservation",
    "build_gate",
]


def build_gate(
    redis_url: str | None,
    max_concurrency: int = 1,
    max_queue: int = 32,
    *,
    lease_seconds: float = 30.0,
    key_prefix: str = "gate",
    client_options: dict[str, Any] | None = None,
) -> Gate:
    """A :class:`RedisGate` shared by all processes if ``redis_url`` is set, else a
    :class:`LocalGate` for this process."""
    if redis_url:
        return RedisGate(
            redis_url,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            lease_seconds=lease_seconds,
            key_prefix=key_prefix,
            client_options=client_options,
        )
    return LocalGate(max_concurrency=max_concurrency, max_queue=max_queue)
