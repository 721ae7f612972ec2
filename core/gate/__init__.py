"""The generation gate: per Ollama host, at most N generations in flight, the rest queued and
served in turns between users (core.gate.turns).

Usage::

    async with gate.reserve(host, user="42", weight=1) as r:  # GateFull at once if full
        async for position in r.positions():  # 1-based, each time it changes; nothing if free
            ...
        ...                                    # the slot is held: stream from Ollama
"""

from __future__ import annotations

from typing import Any

from .base import (
    DEFAULT_RETRY_AFTER,
    Gate,
    GateEntry,
    GateError,
    GateFull,
    GateLost,
    GateSnapshot,
    GateStats,
    Reservation,
)
from .local import LocalGate
from .redis_gate import RedisGate

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "Gate",
    "GateEntry",
    "GateError",
    "GateFull",
    "GateLost",
    "GateSnapshot",
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
    fair: bool = True,
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
            fair=fair,
        )
    return LocalGate(max_concurrency=max_concurrency, max_queue=max_queue, fair=fair)
