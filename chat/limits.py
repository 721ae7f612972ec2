"""Per-user limits on chat: messages per minute and generations queued or running at once."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache

from accounts.models import MIN_PRIORITY
from accounts.selectors import standing
from chat import budgets, claims
from chat.errors import ChatRequestError
from config import database

WINDOW_SECONDS = 60
EXEMPT_PERMISSION = "chat.chat_without_limits"


@dataclass(frozen=True)
class SlidingWindow:
    """A sliding one-period window estimated from two fixed windows' counters.

    A plain fixed window lets a user send twice the limit across a window boundary; the
    previous window's count, weighted by how much of it still overlaps the sliding window,
    closes that gap with two counters and atomic increments (no list of timestamps).
    """

    limit: int
    period: float = WINDOW_SECONDS

    def estimate(self, previous: int, current: int, elapsed: float) -> float:
        return previous * (1 - elapsed / self.period) + current

    def allows(self, previous: int, current: int, elapsed: float) -> bool:
        """Whether one more event (beyond `current`) fits at `elapsed` into this window."""
        return self.estimate(previous, current + 1, elapsed) <= self.limit

    def retry_after(self, previous: int, current: int, elapsed: float) -> int:
        """Whole seconds until one more event fits, at least 1."""
        if current + 1 <= self.limit and previous:
            # Later in this window, as the previous window's weight fades.
            fits_at = self.period * (1 - (self.limit - current - 1) / previous)
        elif current + 1 <= self.limit:
            fits_at = elapsed
        else:
            # In the next window, where this window's count is the one fading.
            fits_at = self.period + self.period * max(0.0, 1 - (self.limit - 1) / current)
        return max(1, math.ceil(fits_at - elapsed))


async def check(user_id: int) -> int:
    """Raise ChatRequestError (429) when the user may not start another generation now; else
    the user's turns in the gate's queue (accounts.selectors.queue_weight), read in the same
    statement as their budget.

    Users with the `chat_without_limits` permission (and active superusers) are exempt. The
    permission is looked up only for a refusal, so that a message within the limits costs no
    extra queries."""
    return await database.run(check_now, user_id)


def check_now(user_id: int) -> int:
    """`check()` for sync code: one hop to a database thread does every read."""
    found = standing(user_id)
    weight = found.weight if found is not None else MIN_PRIORITY
    try:
        _check_limits(user_id, found.daily_token_budget if found is not None else None)
    except ChatRequestError:
        if _exempt(user_id):
            return weight
        raise
    return weight


def _check_limits(user_id: int, own_budget: int | None) -> None:
    # First: a refused message must not count against the rate.
    budgets.check(user_id, override=own_budget)
    per_minute = settings.CHAT_MESSAGES_PER_MINUTE
    if per_minute:
        _count_message(user_id, SlidingWindow(per_minute))
    _check_generations(user_id)


def check_generations_now(user_id: int) -> None:
    """The limit on generations queued or running, checked again where a generation claims
    its conversation (in that transaction, with the user's row locked): two requests that
    passed the first check at once cannot both be accepted beyond the limit."""
    try:
        _check_generations(user_id)
    except ChatRequestError:
        if _exempt(user_id):
            return
        raise


def _check_generations(user_id: int) -> None:
    limit = settings.CHAT_MAX_GENERATIONS_PER_USER
    if not limit:
        return
    current = claims.generations_of(user_id)
    if current >= limit:
        raise ChatRequestError(
            "too_many_generations",
            f"You already have {current} replies queued or being generated (the limit is "
            f"{limit}); wait for one to finish or stop it.",
            429,
            retry_after=5,
        )


def _exempt(user_id: int) -> bool:
    user = get_user_model().objects.filter(pk=user_id).first()
    return user is not None and user.has_perm(EXEMPT_PERMISSION)


def _count_message(user_id: int, window: SlidingWindow) -> None:
    now = time.time()
    index, elapsed = divmod(now, window.period)
    key = f"chat:rate:{user_id}:{int(index)}"
    # The counters live in the shared cache (Redis in the full stack), so the limit holds
    # across processes; increment first so that concurrent requests see each other.
    cache.add(key, 0, timeout=int(window.period * 2) + 5)
    current = cache.incr(key)
    previous = cache.get(f"chat:rate:{user_id}:{int(index) - 1}", 0)
    if window.estimate(previous, current, elapsed) <= window.limit:
        return
    # A refused message is not counted: retrying too early must not push the wait further.
    cache.decr(key)
    retry_after = window.retry_after(previous, current - 1, elapsed)
    raise ChatRequestError(
        "rate_limited",
        f"You can send {window.limit} messages a minute; try again in {retry_after} s.",
        429,
        retry_after=retry_after,
    )
