"""Waiting on a condition that another process or thread makes true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Until predicate() is true: a safety net, not a timing (it returns at the event)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "the event never came"
        time.sleep(0.02)
    return result
