"""Daily token budgets: how many tokens a user may have used per calendar day.

The day is the calendar day of `settings.TIME_ZONE` (UTC by default): it starts at local
midnight, when the budget resets. A user's tokens of the day are read from the replies of their
conversations created since that midnight, whatever their status (a stopped, failed or
interrupted reply's tokens count too): Ollama's `eval_count` (generated tokens), and with
`CHAT_BUDGET_COUNTS_PROMPT` its `prompt_eval_count`. A reply without a count (stopped before
Ollama's last chunk, or still streaming) counts its text: ceil(characters / 4), the estimate
of chat.context. The budget is the user's own (`User.daily_token_budget`, set in the admin),
else `CHAT_DAILY_TOKEN_BUDGET`; 0 is unlimited.

Deleting replies does not give their tokens back: whatever deletes messages (clearing or
deleting a conversation, the admin) goes through chat.services, which adds the tokens of the
day's replies it deletes, by the same rule (`counted()`), to the user's `UsageCarry` row of the
day, in the deletion's transaction; the day's usage is its replies plus that row.

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
from django.db import IntegrityError, transaction
from django.db.models import (
    Expression,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Length
from django.utils import timezone

from chat.errors import ChatRequestError
from chat.models import Message, UsageCarry

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


def counted() -> Expression:
    """What one reply counts against the budget, as an expression over Message rows (to Sum):
    Ollama's `eval_count`, else ceil(characters / 4); plus its `prompt_eval_count` with
    CHAT_BUDGET_COUNTS_PROMPT. The one rule of both the day's usage and what a deletion
    carries."""
    generated = Coalesce("eval_count", _ESTIMATED_TOKENS)
    if settings.CHAT_BUDGET_COUNTS_PROMPT:
        return ExpressionWrapper(
            generated + Coalesce("prompt_eval_count", 0), output_field=IntegerField()
        )
    return generated


def _replies_of_day(start: datetime, end: datetime) -> Q:
    """The replies whose tokens count for the day [start, end): those created in it."""
    return Q(role=Message.Role.ASSISTANT, created_at__gte=start, created_at__lt=end)


def _carried(user_id: int, day: date) -> Subquery:
    return Subquery(
        UsageCarry.objects.filter(user_id=user_id, day=day).values("tokens")[:1],
        output_field=IntegerField(),
    )


def tokens_used(user_id: int, start: datetime, end: datetime) -> int:
    """The user's tokens of the day [start, end) (from day_bounds): their replies created in it
    plus what deleted ones carried (UsageCarry). One statement, so one snapshot: a deletion
    committed meanwhile is seen either before or after, never half."""
    totals = Message.objects.filter(
        _replies_of_day(start, end), conversation__owner_id=user_id
    ).aggregate(
        used=Coalesce(Sum(counted()), 0) + Coalesce(_carried(user_id, start.date()), Value(0))
    )
    return int(totals["used"] or 0)


def carry_deleted(messages: QuerySet[Message], now: datetime | None = None) -> dict[int, int]:
    """Add the tokens of today's replies among `messages`, about to be deleted, to their owners'
    UsageCarry rows of today; {user id: tokens added}. Call it in the deletion's transaction,
    with the conversations locked, so that two deletions of the same messages carry once.

    Only today's replies: an earlier day's budget no longer matters (nor is it shown), so its
    replies go without a trace. A reply of today deleted a second before midnight counts for
    today, its day, until the reset."""
    start, end = day_bounds(now)
    rows = (
        messages.filter(_replies_of_day(start, end))
        .order_by()  # no default ordering in the GROUP BY
        .values("conversation__owner_id")
        .annotate(tokens=Sum(counted()))
        .values_list("conversation__owner_id", "tokens")
    )
    # In user order: two deletions that span the same users lock their rows in one order.
    carried = {user: int(tokens) for user, tokens in sorted(rows) if tokens}
    for user_id, tokens in carried.items():
        _add(user_id, start.date(), tokens)
    return carried


def _add(user_id: int, day: date, tokens: int) -> None:
    """tokens += n on the (user, day) row, created if missing: an atomic upsert."""
    row = UsageCarry.objects.filter(user_id=user_id, day=day)
    # The increment is done by the database (UPDATE ... SET tokens = tokens + n), under the
    # row's lock: two concurrent deletions both add, neither overwrites the other.
    if row.update(tokens=F("tokens") + tokens):
        return
    try:
        with transaction.atomic():  # a savepoint: a failed INSERT leaves the deletion's intact
            UsageCarry.objects.create(user_id=user_id, day=day, tokens=tokens)
    except IntegrityError:
        # A concurrent deletion created the row first (PostgreSQL made this INSERT wait for
        # its commit): add to it.
        row.update(tokens=F("tokens") + tokens)
        return
    # The user's first deletion of the day: their rows of earlier days no longer matter.
    UsageCarry.objects.filter(user_id=user_id, day__lt=day).delete()


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


#: check()'s `override` when the caller has not read the user's own budget.
UNREAD: Any = object()


def check(user_id: int, now: datetime | None = None, *, override: Any = UNREAD) -> None:
    """Raise ChatRequestError 429 `budget_exhausted` when the user has used today's budget.

    One query for the user's budget (none when the caller read it: `override`, the user's
    `daily_token_budget`, as chat.limits does with the rest of the user's standing); a second
    (the day's tokens) only when there is a budget."""
    if override is UNREAD:
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
