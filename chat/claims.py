"""Which conversations a live generation holds: one generation per conversation, and the
per-user count of generations queued or running (`CHAT_MAX_GENERATIONS_PER_USER`).

A generation claims its conversation (`generating_since`, `generating_process`) in the
transaction that saves its user message, before it waits in the gate's queue, and lets go when
its reply is saved; so a claim counts a request from the moment it is accepted, queued or not.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from chat import lifecycle
from chat.models import Conversation, Message, WebProcess


def free_to_claim(now: datetime) -> Q:
    """Conversations no live generation holds: none started, its process died, or it is
    older than CHAT_STALE_STREAMING_SECONDS (a holder that never let go)."""
    dead_after = timedelta(seconds=settings.CHAT_HEARTBEAT_SECONDS * lifecycle.DEAD_AFTER_BEATS)
    alive = WebProcess.objects.filter(heartbeat_at__gte=now - dead_after).values("pk")
    stale = now - timedelta(seconds=settings.CHAT_STALE_STREAMING_SECONDS)
    return (
        Q(generating_since__isnull=True)
        | Q(generating_since__lt=stale)
        | (Q(generating_process__isnull=False) & ~Q(generating_process__in=alive))
    )


def claimable(conversation_id: UUID | str) -> bool:
    return Conversation.objects.filter(free_to_claim(timezone.now()), pk=conversation_id).exists()


def generations_of(user_id: int, now: datetime | None = None) -> int:
    """The user's generations queued or running: conversations they hold a live claim on, or
    with a reply still `streaming` (until a dead process's replies are swept)."""
    now = now or timezone.now()
    held = ~free_to_claim(now) | Q(messages__status=Message.Status.STREAMING)
    return Conversation.objects.filter(held, owner_id=user_id).distinct().count()
