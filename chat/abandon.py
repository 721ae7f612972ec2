"""`CHAT_CANCEL_ABANDONED`: a WebSocket generation that nobody follows any more gives its slot
up to the users waiting for one.

A WebSocket generation is detached from its socket (chat.runs): closing the tab does not stop
it. With `CHAT_CANCEL_ABANDONED` = N seconds (0, the default: never), a generation holding a
slot is stopped once every socket following it has been gone for N seconds while other users
wait on its host; its reply is kept, `cancelled` with the code `abandoned`.

Who follows, across processes: each socket renews a lease in the cache (Redis in the full
stack) for every conversation whose reply it is following, every `TOUCH_SECONDS`; the run's
process reads it every `CHECK_SECONDS`. A lease not renewed for `GONE_AFTER` seconds means
every socket has gone (they went `GONE_AFTER` after its last renewal at the latest).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from chat import cancels, hosts

logger = logging.getLogger(__name__)

TOUCH_SECONDS = 2.0
GONE_AFTER = 2 * TOUCH_SECONDS + 1.0
CHECK_SECONDS = 1.0
DETAIL = (
    "Stopped: every window following this reply had closed and other users were waiting "
    "(CHAT_CANCEL_ABANDONED). What was generated is kept."
)


def clock() -> float:
    """Unix time (shared by the machines, unlike a monotonic clock); tests replace it."""
    return time.time()


def enabled() -> bool:
    return settings.CHAT_CANCEL_ABANDONED > 0


def _key(conversation_id: str) -> str:
    return f"chat.followed.{conversation_id}"


def touch(conversation_ids: Iterable[str]) -> None:
    """A socket follows these conversations now (sync: the cache; run it off the loop)."""
    now = clock()
    values = {_key(c): now for c in conversation_ids}
    if values:
        cache.set_many(values, timeout=int(GONE_AFTER * 4) + 1)


async def atouch(conversation_ids: Iterable[str]) -> None:
    ids = list(conversation_ids)
    if not ids:
        return
    try:
        await asyncio.to_thread(touch, ids)
    except Exception as exc:  # the cache is away: the watcher sees nobody, and waits for N s
        logger.info("could not renew a follow lease: %s", exc)


async def last_seen(conversation_id: str) -> float | None:
    """When a socket last renewed its lease on the conversation (None: no lease)."""
    seen = await asyncio.to_thread(cache.get, _key(conversation_id))
    return float(seen) if isinstance(seen, int | float) else None


def gone_since(last_seen: float | None, first_missed: float) -> float:
    """When the last socket went: its lease's end, or, with no lease at all (expired long ago,
    or lost with the cache), when the watcher first missed it."""
    return last_seen + GONE_AFTER if last_seen is not None else first_missed


async def others_waiting(host: str, user_id: int) -> bool:
    """Another user waits for a slot on this host (the gate's queue)."""
    snapshot = await hosts.get_gate().snapshot(host)
    return any(entry.user != str(user_id) for entry in snapshot.waiting)


async def watch(run: Any) -> None:
    """Beside a run (chat.runs) while it lasts: stop it once it is abandoned (see above)."""
    conversation_id = run.conversation_id
    limit = settings.CHAT_CANCEL_ABANDONED
    missed_at: float | None = None
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        if run.message_id is None:  # still queued: it holds no slot
            continue
        now = clock()
        try:
            seen = await last_seen(conversation_id)
        except Exception as exc:  # the cache is away: nothing is known, nothing is done
            logger.info("could not read a follow lease: %s", exc)
            continue
        if seen is not None and now - seen < GONE_AFTER:
            missed_at = None
            continue
        if missed_at is None:
            missed_at = now
        since = gone_since(seen, missed_at)
        if now - since < limit:
            continue
        try:
            waiting = await others_waiting(run.plan.host, run.plan.user_id)
        except Exception as exc:  # the gate is away: next time
            logger.info("could not read the queue: %s", exc)
            continue
        if waiting:
            logger.info("stopping the abandoned generation of conversation %s", conversation_id)
            await cancels.cancel(conversation_id, cancels.Stop(cancels.ABANDONED, DETAIL))
            return
