"""config.compiled_sql: a hot statement compiled once gives what the ORM gives, on every
database; a marker it cannot place makes it use the ORM every time (issue 16)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone

from chat import claims
from chat.models import Conversation, Message, WebProcess
from config.compiled_sql import _ORM, CompiledQuery


def orm_generations(user_id: int, now: datetime) -> int:
    """The count as the ORM writes it, compiled afresh."""
    held = ~claims.free_to_claim(now) | Q(messages__status=Message.Status.STREAMING)
    return Conversation.objects.filter(held, owner_id=user_id).distinct().count()


@pytest.mark.django_db
def test_the_generations_count_matches_the_orm_in_every_state(make_user, settings):
    settings.CHAT_STALE_STREAMING_SECONDS = 600
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    now = timezone.now()
    alive = WebProcess.objects.create(
        id=uuid.uuid4(), hostname="a", pid=1, started_at=now, heartbeat_at=now
    )
    dead = WebProcess.objects.create(
        id=uuid.uuid4(), hostname="b", pid=2, started_at=now, heartbeat_at=now - timedelta(hours=1)
    )
    states: list[dict[str, Any]] = [
        {},  # free
        {"generating_since": now, "generating_process": alive.pk},  # held
        {"generating_since": now, "generating_process": dead.pk},  # its process died
        {"generating_since": now - timedelta(hours=1), "generating_process": alive.pk},  # stale
        {"generating_since": now},  # held, by no process row
    ]
    seen = []
    for owner in (alice, bob):
        for fields in states:
            Conversation.objects.create(owner=owner, **fields)
            seen.append((claims.generations_of(owner.pk, now), orm_generations(owner.pk, now)))
    streaming = Conversation.objects.create(owner=alice)
    Message.objects.create(
        conversation=streaming, role="assistant", content="", status=Message.Status.STREAMING
    )
    seen.append((claims.generations_of(alice.pk, now), orm_generations(alice.pk, now)))
    later = now + timedelta(hours=2)  # everything stale and every process dead by then
    seen.append((claims.generations_of(alice.pk, later), orm_generations(alice.pk, later)))
    assert [compiled for compiled, _ in seen] == [orm for _, orm in seen]
    assert [compiled for compiled, _ in seen] == [0, 1, 1, 1, 2, 0, 1, 1, 1, 2, 3, 1]
    assert claims._generations._by_alias["default"] is not _ORM  # the compiled statement ran


@pytest.mark.django_db
def test_the_statement_is_built_and_compiled_once(make_user):
    user = make_user()
    built = []

    def build(user_id):
        built.append(user_id)
        return Conversation.objects.filter(owner_id=user_id).order_by().values("pk")

    query = CompiledQuery(Conversation, build, wrap="SELECT COUNT(*) FROM ({}) c", user_id=-1)
    for _ in range(3):
        Conversation.objects.create(owner=user)
        query.rows(user_id=user.pk)
    assert [query.rows(user_id=user.pk)[0][0], query.rows(user_id=user.pk + 1)[0][0]] == [3, 0]
    assert built == [-1]  # only with the markers, once


@pytest.mark.django_db
def test_a_marker_it_cannot_place_runs_the_orm_each_time(make_user):
    user = make_user()
    Conversation.objects.create(owner=user)
    built = []

    def build(user_id, since):
        built.append(user_id)
        # the same value twice: its two places cannot be told apart from each other's markers
        return (
            Conversation.objects.filter(owner_id=user_id, created_at__gte=since)
            .filter(Q(owner_id=user_id) | Q(pk__isnull=True))
            .order_by()
            .values("pk")
        )

    query = CompiledQuery(
        Conversation,
        build,
        wrap="SELECT COUNT(*) FROM ({}) c",
        user_id=-1,
        since=datetime(1900, 1, 1, tzinfo=UTC),
    )
    since = timezone.now() - timedelta(days=1)
    assert query.rows(user_id=user.pk, since=since)[0][0] == 1
    assert query.rows(user_id=user.pk + 1, since=since)[0][0] == 0
    assert query._by_alias["default"] is _ORM
    assert built == [-1, user.pk, user.pk + 1]
