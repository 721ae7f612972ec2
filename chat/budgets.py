"""Daily token budgets: how many tokens a user may have used per calendar day.

The day is the calendar day of `settings.TIME_ZONE` (UTC by default): it starts at local
midnight, when the budget resets. A user's tokens of the day are read from the replies of their
conversations created since that midnight, whatever their status (a stopped, failed or
interrupted reply's tokens count too): Ollama's `eval_count` (generated tokens), and with
`CHAT_BUDGET_COUNTS_PROMPT` its `prompt_eval_count`. A reply without a count (stopped before
Ollama's last chunk, or still streaming) counts its text: ceil(characters / 4), the estimate
of chat.context. The budget is the user's own (`User.daily_token_budget`, set in the admin),
else `CHAT_DAILY_TOKEN_BUDGET`; 0 is unlimited.

`check()` runs in chat.limits before anything is saved or queued, on every transport; users
with the `chat.chat_without_limits` permission (and superusers) are exempt there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import ExpressionWrapper, IntegerField, Sum
from django.db.models.functions import Coalesce, Length
from django.utils import timezone

from chat.errors import ChatRequestError
from chat.models import Message

#: ceil(characters / 4), chat.context's estimate, for a reply Ollama did not count.
_ESTIMATED_TOKENS = ExpressionWrapper((Length("content") + 3) / 4, output_field=IntegerField())


@dataclass(frozen=True)
class Usage:
    """A user's tokens of one day against their budget (None: unlimited)."""

    day: date
    tokens: int
    budget: int | None
    resets_at: datetime

    @property
    def fraction(self) -> float | None:
        if not self.budget:
            return None
        return round(self.tokens / self.budget, 4)


def day_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The start of `now`'s calendar day in TIME_ZONE and the start of the next (the reset)."""
    zone = timezone.get_default_timezone()
    local = timezone.localtime(now or timezone.now(), zone)
    start = datetime.combine(local.date(), time.min, tzinfo=zone)
    # Midnight of the next calendar date, not start + 24 h: a day of a DST change is 23 or 25 h.
    return start, datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=zone)


def tokens_used(user_id: int, start: datetime, end: datetime) -> int:
    """The tokens of the user's replies created in [start, end): one aggregate query."""
    totals = Message.objects.filter(
        conversation__owner_id=user_id,
        role=Message.Role.ASSISTANT,
        created_at__gte=start,
        created_at__lt=end,
    ).aggregate(
        generated=Sum(Coalesce("eval_count", _ESTIMATED_TOKENS)),
        prompt=Sum("prompt_eval_count"),
    )
    used = totals["generated"] or 0
    if settings.CHAT_BUDGET_COUNTS_PROMPT:
        used += totals["prompt"] or 0
    return int(used)


def effective_budget(override: int | None) -> int | None:
    """A user's own budget, else the server's; None when unlimited (0)."""
    budget = settings.CHAT_DAILY_TOKEN_BUDGET if override is None else override
    return budget or None


def usage_of(user: Any, now: datetime | None = None) -> Usage:
    """Today's usage of `user` (a User) for `GET /api/auth/me/`. A user exempt from the limits
    has no budget (unlimited)."""
    from chat.limits import EXEMPT_PERMISSION  # imported here: chat.limits imports this module

    now = now or timezone.now()
    start, end = day_bounds(now)
    budget = effective_budget(user.daily_token_budget)
    if budget is not None and user.has_perm(EXEMPT_PERMISSION):
        budget = None
    return Usage(
        day=start.date(), tokens=tokens_used(user.pk, start, end), budget=budget, resets_at=end
    )


def check(user_id: int, now: datetime | None = None) -> None:
    """Raise ChatRequestError 429 `budget_exhausted` when the user has used today's budget.

    One query for the user's budget; a second (the day's tokens) only when there is one."""
    override = (
        get_user_model()
        .objects.filter(pk=user_id)
        .values_list("daily_token_budget", flat=True)
        .first()
    )
    budget = effective_budget(override)
    if budget is None:
        return
    now = now or timezone.now()
    start, end = day_bounds(now)
    used = tokens_used(user_id, start, end)
    if used < budget:
        return
    wait = max(1, math.ceil((end.astimezone(UTC) - now.astimezone(UTC)).total_seconds()))
    raise ChatRequestError(
        "budget_exhausted",
        f"You have used {used:,} tokens today, your daily budget is {budget:,}. It resets at "
        f"{end:%H:%M} ({settings.TIME_ZONE}), in {_duration(wait)}.",
        429,
        retry_after=wait,
        extra={"resets_at": isoformat(end), "used": used, "budget": budget},
    )


def isoformat(moment: datetime) -> str:
    """ISO 8601 in TIME_ZONE, as DRF writes a datetime (`Z` for UTC)."""
    text = timezone.localtime(moment, timezone.get_default_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = math.ceil(rest / 60)
    if minutes == 60:
        hours, minutes = hours + 1, 0
    if not hours:
        return f"{max(1, minutes)} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
