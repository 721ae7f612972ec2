"""Which conversations a live generation holds: one generation per conversation, and the
per-user count of generations queued or running (`CHAT_MAX_GENERATIONS_PER_USER`).

A generation claims its conversation (`generating_since`, `generating_process`) in the
transaction that saves its user message, before it waits in the gate's queue, and lets go when
its reply is saved; so a claim counts a request from the moment it is accepted, queued or not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from chat import lifecycle
from chat.models import Conversation, Message, WebProcess
from config.compiled_sql import CompiledQuery


def free_to_claim(now: datetime) -> Q:
    """Conversations no live generation holds: none started, its process died, or it is
    older than CHAT_STALE_STREAMING_SECONDS (a holder that never let go)."""
    return _free(*_bounds(now))


def _bounds(now: datetime) -> tuple[datetime, datetime]:
    """(alive_since, stale_before): a process whose last heartbeat is older is dead, a claim
    older than stale_before is stale."""
    dead_after = timedelta(seconds=settings.CHAT_HEARTBEAT_SECONDS * lifecycle.DEAD_AFTER_BEATS)
    stale_after = timedelta(seconds=settings.CHAT_STALE_STREAMING_SECONDS)
    return now - dead_after, now - stale_after


def _free(alive_since: datetime, stale_before: datetime) -> Q:
    alive = WebProcess.objects.filter(heartbeat_at__gte=alive_since).values("pk")
    return (
        Q(generating_since__isnull=True)
        | Q(generating_since__lt=stale_before)
        | (Q(generating_process__isnull=False) & ~Q(generating_process__in=alive))
    )


def _held_by(user_id: int, alive_since: datetime, stale_before: datetime) -> QuerySet[Any]:
    held = ~_free(alive_since, stale_before) | Q(messages__status=Message.Status.STREAMING)
    return Conversation.objects.filter(held, owner_id=user_id).order_by().values("pk").distinct()


# Counted on every chat message, twice with CHAT_MAX_GENERATIONS_PER_USER: compiled once.
_generations = CompiledQuery(
    Conversation,
    _held_by,
    wrap="SELECT COUNT(*) FROM ({}) held",
    user_id=-1,
    alive_since=datetime(1900, 1, 1, tzinfo=UTC),
    stale_before=datetime(1900, 1, 2, tzinfo=UTC),
)


def claimable(conversation_id: UUID | str) -> bool:
    return Conversation.objects.filter(free_to_claim(timezone.now()), pk=conversation_id).exists()


def generations_of(user_id: int, now: datetime | None = None) -> int:
    """The user's generations queued or running: conversations they hold a live claim on, or
    with a reply still `streaming` (until a dead process's replies are swept)."""
    alive_since, stale_before = _bounds(now or timezone.now())
    [(count,)] = _generations.rows(
        user_id=user_id, alive_since=alive_since, stale_before=stale_before
    )
    return int(count)
