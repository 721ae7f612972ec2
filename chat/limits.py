"""Per-user limits on chat: messages per minute and generations running at once."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from chat.errors import ChatRequestError
from chat.models import Message


async def check(user_id: int) -> None:
    """Raise ChatRequestError (429) when the user may not start another generation now."""
    per_minute = settings.CHAT_MESSAGES_PER_MINUTE
    if per_minute:
        window = int(time.time() // 60)
        key = f"chat:rate:{user_id}:{window}"
        # A fixed one-minute window in the shared cache (Redis in the full stack).
        await cache.aadd(key, 0, timeout=120)
        count = await cache.aincr(key)
        if count > per_minute:
            retry_after = 60 - int(time.time() % 60)
            raise ChatRequestError(
                "rate_limited",
                f"You can send {per_minute} messages a minute; try again in {retry_after} s.",
                429,
                retry_after=retry_after,
            )
    concurrent = settings.CHAT_MAX_GENERATIONS_PER_USER
    if concurrent:
        running = await Message.objects.filter(
            conversation__owner_id=user_id, status=Message.Status.STREAMING
        ).acount()
        if running >= concurrent:
            raise ChatRequestError(
                "too_many_generations",
                f"You already have {running} replies being generated; wait for one to finish "
                "or stop it.",
                429,
                retry_after=5,
            )
