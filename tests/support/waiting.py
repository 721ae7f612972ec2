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


def hung_up_reply(ollama_double, held, owner):
    """After a client hung up mid-reply: Ollama was hung up on too, and the reply is saved
    `cancelled` (returned). `held`: the double's held generation, released here."""
    from chat.models import Message

    assert ollama_double.wait_until(lambda: ollama_double.last_generation.finished, timeout=20)
    assert ollama_double.last_generation.client_disconnected
    ollama_double.release(held)
    return wait_for(
        lambda: Message.objects.filter(
            conversation__owner=owner, role="assistant", status="cancelled"
        ).first()
    )
