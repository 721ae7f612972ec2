"""Who is on the GPU now: per Ollama host, the generations holding a slot of the gate and the
queue in its order of service, with the replies' progress from the database.

The gate (chat.hosts.get_gate(): per process, or shared by every process with Redis) knows who
holds and who waits: each reservation carries its user's id and its conversation's id
(chat.services.generate()). The database adds the rest: the user's email, the model, and the
reply's tokens so far (`streamed_tokens`, written with each flush of the streaming reply, so
no write per token), from which tokens/s is the count over the time since the slot was taken,
as of that flush.

`full()` is everyone's view (staff's); `for_viewer()` cuts it down for one user: staff see
everything, anyone else their own entries and how many of other users' run and wait, without
who they are.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from chat import estimates, hosts
from chat.models import Conversation, Message
from config import database
from core.gate.base import GateEntry, GateSnapshot

logger = logging.getLogger(__name__)


def _uuid(label: str) -> UUID | None:
    try:
        return UUID(label)
    except ValueError:
        return None


def _user_id(key: str) -> int | None:
    return int(key) if key.isdigit() else None


def _rows(conversation_ids: list[UUID], user_ids: list[int]) -> dict[str, Any]:
    """What the database adds to the gate's entries, in three queries."""
    latest_model = Subquery(
        Message.objects.filter(conversation=OuterRef("pk")).order_by("-id").values("model")[:1]
    )
    conversations = {
        str(row["pk"]): row
        for row in Conversation.objects.filter(pk__in=conversation_ids)
        .annotate(latest_model=latest_model)
        .values("pk", "owner_id", "model", "latest_model")
    }
    streaming = {
        str(row["conversation_id"]): row
        for row in Message.objects.filter(
            conversation_id__in=conversation_ids,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
        )
        .order_by("id")
        .values("conversation_id", "pk", "model", "streamed_tokens", "updated_at")
    }
    owners = {row["owner_id"] for row in conversations.values()}
    emails = dict(
        get_user_model().objects.filter(pk__in={*user_ids, *owners}).values_list("pk", "email")
    )
    return {"conversations": conversations, "streaming": streaming, "emails": emails}


async def _estimate(snapshot: GateSnapshot, model: str, position: int | None) -> float | None:
    if not model or position is None:
        return None
    try:
        return await estimates.estimated_wait(
            snapshot.host, model, position, snapshot.max_concurrency
        )
    except Exception:  # an estimate is a nicety: never the reason the view fails
        logger.warning("could not estimate a queue wait", exc_info=True)
        return None


def _moment(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


async def full() -> dict[str, Any]:
    """Every host's running generations and queue, with every user's identity."""
    gate = hosts.get_gate()
    snapshots: list[GateSnapshot] = list(
        await asyncio.gather(*(gate.snapshot(host) for host in hosts.hosts()))
    )
    entries = [e for s in snapshots for e in (*s.holding, *s.waiting)]
    rows: dict[str, Any] = {"conversations": {}, "streaming": {}, "emails": {}}
    if entries:
        conversation_ids = [u for u in {_uuid(e.label) for e in entries} if u is not None]
        user_ids = [u for u in {_user_id(e.user) for e in entries} if u is not None]
        rows = await database.run(_rows, conversation_ids, user_ids)
    now = timezone.now()
    result = []
    for snapshot in snapshots:
        running = [_running(entry, rows, now) for entry in snapshot.holding]
        queue = [_queued(entry, rows, now) for entry in snapshot.waiting]
        for item, entry in zip(queue, snapshot.waiting, strict=True):
            item["estimated_wait_seconds"] = await _estimate(
                snapshot, item["model"], entry.position
            )
        result.append(
            {
                "host": snapshot.host,
                "max_concurrency": snapshot.max_concurrency,
                "max_queue": snapshot.max_queue,
                "running": running,
                "queue": queue,
            }
        )
    return {"at": now, "hosts": result}


def _who(entry: GateEntry, rows: dict[str, Any]) -> tuple[str | None, int | None, str]:
    conversation = rows["conversations"].get(entry.label)
    user_id = _user_id(entry.user)
    if user_id is None and conversation is not None:
        user_id = conversation["owner_id"]
    email = rows["emails"].get(user_id, "") if user_id is not None else ""
    # A new conversation's row comes a moment after its place in the queue: its id is known.
    return (entry.label if _uuid(entry.label) is not None else None), user_id, email


def _running(entry: GateEntry, rows: dict[str, Any], now: datetime) -> dict[str, Any]:
    conversation_id, user_id, email = _who(entry, rows)
    reply = rows["streaming"].get(entry.label)
    conversation = rows["conversations"].get(entry.label) or {}
    since = _moment(entry.since)
    tokens = int(reply["streamed_tokens"]) if reply else 0
    rate = None
    if reply and tokens:
        # As of the reply's last flush, which wrote the count.
        elapsed = (reply["updated_at"] - since).total_seconds()
        rate = round(tokens / elapsed, 2) if elapsed > 0 else None
    return {
        "conversation": conversation_id,
        "message": reply["pk"] if reply else None,
        "user": user_id,
        "user_email": email,
        "model": (reply["model"] if reply else "") or conversation.get("latest_model") or "",
        "since": since,
        "seconds": round(max(0.0, (now - since).total_seconds()), 1),
        "tokens": tokens,
        "tokens_per_second": rate,
    }


def _queued(entry: GateEntry, rows: dict[str, Any], now: datetime) -> dict[str, Any]:
    conversation_id, user_id, email = _who(entry, rows)
    conversation = rows["conversations"].get(entry.label) or {}
    since = _moment(entry.since)
    return {
        "conversation": conversation_id,
        "user": user_id,
        "user_email": email,
        "model": conversation.get("latest_model") or conversation.get("model") or "",
        "since": since,
        "waiting_seconds": round(max(0.0, (now - since).total_seconds()), 1),
        "position": entry.position,
        "estimated_wait_seconds": None,
    }


def for_viewer(view: dict[str, Any], user_id: int, staff: bool) -> dict[str, Any]:
    """`full()` as one user may see it (see the module's docstring)."""
    hosts_out = []
    for host in view["hosts"]:
        if staff:
            running, queue = host["running"], host["queue"]
        else:
            running = [r for r in host["running"] if r["user"] == user_id]
            queue = [q for q in host["queue"] if q["user"] == user_id]
        hosts_out.append(
            {
                **host,
                "running": running,
                "queue": queue,
                "others_running": len(host["running"]) - len(running),
                "others_queued": len(host["queue"]) - len(queue),
            }
        )
    return {"at": view["at"], "staff": staff, "hosts": hosts_out}


def busy(view: dict[str, Any]) -> bool:
    return any(host["running"] or host["queue"] for host in view["hosts"])


def fingerprint(view: dict[str, Any]) -> Any:
    """What a viewer would see change: everything but the clock (the page counts the seconds
    from `since` itself)."""
    return [
        (
            host["host"],
            host.get("others_running"),
            host.get("others_queued"),
            [
                (r["conversation"], r["message"], r["user"], r["model"], r["tokens"])
                for r in host["running"]
            ],
            [
                (
                    q["conversation"],
                    q["user"],
                    q["model"],
                    q["position"],
                    q["estimated_wait_seconds"],
                )
                for q in host["queue"]
            ],
        )
        for host in view["hosts"]
    ]
