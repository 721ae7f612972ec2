"""How long a place in a host's queue is likely to wait, from that model's recent replies on
that host (the figures every reply already records)."""

from __future__ import annotations

import math
import time

from chat.models import Message
from config import database

#: Replies averaged, newest first.
RECENT = 20
#: Seconds an average is reused: a queue's positions change often, the figures slowly.
CACHE_SECONDS = 30.0

_averages: dict[tuple[str, str], tuple[float, float | None]] = {}


def average_generation_seconds(host: str, model: str) -> float | None:
    """Mean of Ollama's `total_duration` over the model's last complete replies on the host."""
    durations = list(
        Message.objects.filter(
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
            ollama_host=host,
            model=model,
            total_duration__isnull=False,
        )
        .order_by("-id")
        .values_list("total_duration", flat=True)[:RECENT]
    )
    known = [d for d in durations if d is not None]
    if not known:
        return None
    return sum(known) / len(known) / 1e9


def wait_for(position: int, concurrency: int, average: float | None) -> float | None:
    """A slot frees every `average / concurrency` seconds on average, and each one moves the
    queue up by one: the `position`-th waiter's turn comes after `position` of them."""
    if average is None:
        return None
    return math.ceil(position * average / max(1, concurrency) * 10) / 10


async def estimated_wait(host: str, model: str, position: int, concurrency: int) -> float | None:
    """Seconds, or None when the model has no history on the host."""
    key = (host, model)
    cached = _averages.get(key)
    now = time.monotonic()
    if cached is None or now - cached[0] > CACHE_SECONDS:
        cached = (now, await database.run(average_generation_seconds, host, model))
        _averages[key] = cached
    return wait_for(position, concurrency, cached[1])


def forget() -> None:
    _averages.clear()
