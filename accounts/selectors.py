"""Reads about accounts that other apps need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Max, QuerySet

from accounts.models import MIN_PRIORITY, ApiKey, User
from config.compiled_sql import CompiledQuery


@dataclass(frozen=True)
class Standing:
    """What a chat request reads of its user before anything else: their own daily token
    budget (None: the server's, chat.budgets) and their turns in the gate's queue."""

    daily_token_budget: int | None
    weight: int


def _standing_query(user_id: int) -> QuerySet[Any]:
    return (
        User.objects.filter(pk=user_id)
        .annotate(group_priority=Max("groups__policy__priority"))
        .values_list("daily_token_budget", "priority", "group_priority")
        .order_by()[:1]
    )


# Compiling it (three joins and a GROUP BY) costs ten times running it, on every message.
_standing = CompiledQuery(User, _standing_query, user_id=-1)


def standing(user_id: int) -> Standing | None:
    """The user's Standing in one statement (issue 16: one read of the user row per message,
    not one for the budget and one for the weight); None if there is no such user."""
    rows = _standing.rows(user_id=user_id)
    return _of(rows[0]) if rows else None


def _of(row: tuple[Any, ...]) -> Standing:
    budget, own, groups = row
    return Standing(budget, own or groups or MIN_PRIORITY)


def queue_weight(user_id: int) -> int:
    """The user's turns in a generation queue: their own priority, else the highest of their
    groups' policies, else 1 (core.gate.turns). One query."""
    found = standing(user_id)
    return found.weight if found is not None else MIN_PRIORITY


def api_keys_of(user_id: int):
    """The user's keys that are not revoked (expired ones included), newest first."""
    return ApiKey.objects.filter(user_id=user_id, revoked__isnull=True).order_by("-created", "-id")
