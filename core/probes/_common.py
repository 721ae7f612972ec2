"""Small helpers shared by the probes (no Django, no third-party imports)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

#: "MB" everywhere in the probes means MiB (2**20 bytes), which is what ``nvidia-smi``
#: and most dashboards call MB.
BYTES_PER_MB = 1024 * 1024


def bytes_to_mb(value: Any) -> float | None:
    """Bytes -> MB (MiB) rounded to 0.1, or None when the value is missing or not a number."""
    number = as_number(value)
    if number is None:
        return None
    return round(number / BYTES_PER_MB, 1)


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and None are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return number


def utc_now_iso() -> str:
    """The current time, UTC, ISO 8601 with offset (``2024-05-01T12:00:00.123456+00:00``)."""
    return datetime.now(UTC).isoformat()


def describe_exception(exc: BaseException) -> str:
    """``TypeName: message`` without ever raising (some ``__str__`` implementations do)."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not escape either
        text = ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
