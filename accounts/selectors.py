"""Reads about accounts that other apps need."""

from __future__ import annotations

from django.db.models import Max

from accounts.models import MIN_PRIORITY, ApiKey, User


def queue_weight(user_id: int) -> int:
    """The user's turns in a generation queue: their own priority, else the highest of their
    groups' policies, else 1 (core.gate.turns). One query."""
    row = (
        User.objects.filter(pk=user_id)
        .annotate(group_priority=Max("groups__policy__priority"))
        .values_list("priority", "group_priority")
        .first()
    )
    if row is None:
        return MIN_PRIORITY
    own, groups = row
    return own or groups or MIN_PRIORITY


def api_keys_of(user_id: int):
    """The user's keys that are not revoked (expired ones included), newest first."""
    return ApiKey.objects.filter(user_id=user_id, revoked__isnull=True).order_by("-created", "-id")
