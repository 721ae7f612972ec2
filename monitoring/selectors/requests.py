"""Reads of the per-request figures: every assistant reply with Ollama's timings, the gateway's
measurements (time to first token, queue wait, generations in flight) and the GPU/RAM snapshots
taken before and after it (``chat.models.Message``).

Who sees what: staff see every user's replies; everyone else only the replies in their own
conversations. The API enforces that with :func:`visible_replies`, and the ``user`` filter
(staff only) narrows it further.

The throughput figures are computed from the replies that completed (``status=complete``):
a failed, cancelled or interrupted reply has no Ollama timings. Count, average, min and max
are SQL aggregates (exact, whatever the number of rows); the median (p50) is computed in Python
over the window's values, and only while the window holds at most :data:`P50_MAX_ROWS` replies
(beyond that it is ``None`` and ``notes`` says why).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, F, Max, Min, QuerySet, Sum

from chat.models import Message
from core.stats import percentile, present, rounded
from monitoring.expressions import bucket_time, epoch_bucket

#: Most completed replies in a window for which the throughput endpoint computes medians.
P50_MAX_ROWS = 20_000

#: (output name, Message field) of the figures summarised by the throughput endpoint.
FIGURES = (
    ("tokens_per_second", "tokens_per_second"),
    ("time_to_first_token_seconds", "time_to_first_token"),
    ("queue_wait_seconds", "queue_wait"),
)


@dataclass(frozen=True)
class RequestFilters:
    """What the caller asked for; ``user_id`` None means every user the viewer may see."""

    model: str | None = None
    host: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    user_id: int | None = None


def visible_replies(viewer) -> QuerySet[Message]:
    """The assistant replies ``viewer`` may see: all for staff, their own otherwise."""
    replies = Message.objects.filter(role=Message.Role.ASSISTANT)
    if not viewer.is_staff:
        replies = replies.filter(conversation__owner_id=viewer.pk)
    return replies


def _filtered(viewer, filters: RequestFilters) -> QuerySet[Message]:
    replies = visible_replies(viewer)
    if filters.user_id is not None:
        replies = replies.filter(conversation__owner_id=filters.user_id)
    if filters.model:
        replies = replies.filter(model=filters.model)
    if filters.host:
        replies = replies.filter(ollama_host=filters.host)
    if filters.status:
        replies = replies.filter(status=filters.status)
    if filters.since is not None:
        replies = replies.filter(created_at__gte=filters.since)
    if filters.until is not None:
        replies = replies.filter(created_at__lt=filters.until)
    return replies


# --------------------------------------------------------------------------- one row per reply


def request_rows(viewer, filters: RequestFilters) -> QuerySet[Message]:
    """The replies, newest first, without their text (render each with :func:`request_row`)."""
    return (
        _filtered(viewer, filters)
        .annotate(user_id=F("conversation__owner_id"), user_email=F("conversation__owner__email"))
        .defer("content", "options", "error")
        .order_by("-created_at", "-id")
    )


def _seconds(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e9


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _gpu_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, dict)]


def request_row(message: Message) -> dict[str, Any]:
    """The figures of one reply (a row of :func:`request_rows`) as the API returns them.

    ``resources`` is a JSON column written by ``chat.services.generate``; a reply that never
    reached Ollama (or failed before the snapshot) has none, and every figure is then None.
    """
    resources = _mapping(message.resources)
    delta = resources.get("resource_delta")
    delta = delta if isinstance(delta, dict) else None
    return {
        "id": message.pk,
        "conversation": message.conversation_id,
        "user": getattr(message, "user_id", None),
        "user_email": getattr(message, "user_email", None),
        "model": message.model,
        "host": message.ollama_host,
        "status": message.status,
        "error_code": message.error_code,
        "done_reason": message.done_reason,
        "created_at": message.created_at,
        "completed_at": message.completed_at,
        "tokens_per_second": message.tokens_per_second,
        "prompt_tokens_per_second": message.prompt_tokens_per_second,
        "time_to_first_token_seconds": message.time_to_first_token,
        "queue_wait_seconds": message.queue_wait,
        "eval_count": message.eval_count,
        "prompt_eval_count": message.prompt_eval_count,
        "total_duration_seconds": _seconds(message.total_duration),
        "load_duration_seconds": _seconds(message.load_duration),
        "eval_duration_seconds": _seconds(message.eval_duration),
        "in_flight_at_start": message.in_flight_at_start,
        "gpu_usage_before": _gpu_list(resources.get("gpu_usage_before")),
        "gpu_usage_after": _gpu_list(resources.get("gpu_usage_after")),
        "ram_usage_before": _mapping(resources.get("ram_usage_before")) or None,
        "ram_usage_after": _mapping(resources.get("ram_usage_after")) or None,
        "resource_delta": delta,
        "gpu_memory_used_mb_delta": (delta or {}).get("gpu_memory_used_mb_delta"),
        "ram_used_mb_delta": (delta or {}).get("ram_used_mb_delta"),
    }


# --------------------------------------------------------------------------- throughput


def _aggregates() -> dict[str, Any]:
    aggregates: dict[str, Any] = {"requests": Count("id"), "eval_tokens": Sum("eval_count")}
    for name, field in FIGURES:
        aggregates[f"{name}__count"] = Count(field)
        aggregates[f"{name}__avg"] = Avg(field)
        aggregates[f"{name}__min"] = Min(field)
        aggregates[f"{name}__max"] = Max(field)
    return aggregates


_EMPTY_ROW: dict[str, Any] = {
    "requests": 0,
    "eval_tokens": 0,
    **{f"{name}__{stat}": None for name, _f in FIGURES for stat in ("avg", "min", "max")},
    **{f"{name}__count": 0 for name, _f in FIGURES},
}


def _group(row: Mapping[str, Any], values: dict[str, list[float]] | None) -> dict[str, Any]:
    """One group's figures from its aggregate row and (when bounded) its raw values."""
    group: dict[str, Any] = {"requests": row["requests"], "eval_tokens": row["eval_tokens"] or 0}
    for name, _field in FIGURES:
        group[name] = {
            "count": row[f"{name}__count"],
            "avg": rounded(row[f"{name}__avg"]),
            "min": rounded(row[f"{name}__min"]),
            "max": rounded(row[f"{name}__max"]),
            "p50": rounded(percentile(values[name], 0.5)) if values is not None else None,
        }
    return group


def throughput(
    viewer, filters: RequestFilters, *, resolution: int, p50_max_rows: int | None = None
) -> dict[str, Any]:
    """Tokens/s, time to first token and queue wait of the completed replies in the window,
    overall, by model and by concurrency level (``in_flight_at_start``), and per model over
    time in ``resolution``-second buckets (aligned on the epoch, computed in the database)."""
    replies = _filtered(viewer, filters)
    measured = replies.filter(status=Message.Status.COMPLETE).order_by()

    overall = measured.aggregate(**_aggregates())
    by_model_rows = list(measured.values("model").annotate(**_aggregates()).order_by("model"))
    by_level_rows = list(
        measured.values("in_flight_at_start")
        .annotate(**_aggregates())
        .order_by(F("in_flight_at_start").asc(nulls_last=True))
    )
    by_model = {row["model"]: row for row in by_model_rows}
    # Models with only failed (or cancelled...) replies in the window are listed too.
    statuses: dict[str, dict[str, int]] = defaultdict(dict)
    for counted in replies.order_by().values("model", "status").annotate(n=Count("id")):
        statuses[counted["model"]][counted["status"]] = counted["n"]

    # Medians: in Python over the window's values, only while that stays cheap.
    notes: list[str] = []
    total = overall["requests"]
    if p50_max_rows is None:
        p50_max_rows = P50_MAX_ROWS
    medians = total <= p50_max_rows
    by_all: dict[str, list[float]] = defaultdict(list)
    by_model_values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_level_values: dict[int | None, dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    if medians:
        fields = [field for _name, field in FIGURES]
        for model, level, *figures in measured.values_list(
            "model", "in_flight_at_start", *fields
        ).iterator(chunk_size=2000):
            for (name, _field), value in zip(FIGURES, figures, strict=True):
                if value is None:
                    continue
                by_all[name].append(value)
                by_model_values[model][name].append(value)
                by_level_values[level][name].append(value)
    else:
        notes.append(
            f"p50 omitted: {total} completed requests in the window, more than {p50_max_rows}; "
            "narrow the window (or filter by model or user) to get medians."
        )

    def values_of(source: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if not medians:
            return None
        source = source or {}
        return {name: present(source.get(name, [])) for name, _field in FIGURES}

    series_rows: QuerySet[Message, Mapping[str, Any]] = (
        measured.annotate(bucket=epoch_bucket("created_at", resolution))
        .values("model", "bucket")
        .annotate(
            requests=Count("id"),
            eval_tokens=Sum("eval_count"),
            **{name: Avg(field) for name, field in FIGURES},
        )
        .order_by("model", "bucket")
    )
    series: dict[str, dict[str, Any]] = {}
    for row in series_rows:
        entry = series.setdefault(row["model"], {"model": row["model"], "points": []})
        point = {
            "t": bucket_time(row["bucket"]),
            "requests": row["requests"],
            "eval_tokens": row["eval_tokens"] or 0,
        }
        point.update({name: rounded(row[name]) for name, _field in FIGURES})
        entry["points"].append(point)

    return {
        "since": filters.since,
        "until": filters.until,
        "resolution": resolution,
        "user": filters.user_id if filters.user_id is not None else _scope_user(viewer),
        "overall": _group(overall, values_of(by_all)),
        "by_model": [
            {
                "model": model,
                **_group(by_model.get(model) or _EMPTY_ROW, values_of(by_model_values.get(model))),
                "statuses": statuses.get(model, {}),
            }
            for model in sorted(set(by_model) | set(statuses))
        ],
        "by_concurrency": [
            {
                "in_flight_at_start": row["in_flight_at_start"],
                **_group(row, values_of(by_level_values.get(row["in_flight_at_start"]))),
            }
            for row in by_level_rows
        ],
        "series": [series[name] for name in sorted(series)],
        "notes": notes,
    }


def _scope_user(viewer) -> int | None:
    """The user whose replies a window covers: None (everyone) for staff, else the viewer."""
    return None if viewer.is_staff else viewer.pk
