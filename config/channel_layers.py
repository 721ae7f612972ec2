"""The channel layers: Channels' in-memory one with a bounded cost per message (embedded), and
channels-redis with receives that survive a Redis restart (full stack)."""

from __future__ import annotations

import asyncio
import logging
import time

import channels_redis.core
import redis.asyncio as aioredis
from channels import layers
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class InMemoryChannelLayer(layers.InMemoryChannelLayer):
    """Channels' in-memory layer scans every channel and group for expired messages on every
    `receive` and `group_send`: a cost per message that grows with the open sockets, so the
    work per streamed token grows with the square of them (at 500 streaming sockets the scan
    took a third of Daphne's CPU). Messages expire after `expiry` seconds (60 by default), so
    one scan per `clean_interval` keeps expiry as exact as it needs to be."""

    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clean_interval = clean_interval
        self._next_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + self.clean_interval
        super()._clean_expired()


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels-redis, with receives that outlive a Redis restart.

    A receive that fails (Redis stopped, a connection reset) raises into the consumer, which
    Channels then closes with 1011: every socket of the process would drop at a Redis blip.
    Here it waits and tries again; sends still fail fast, so that callers can report them.
    Groups live in Redis and do not survive its restart: consumers join theirs again
    (chat.consumers).
    """

    retry_max_delay = 2.0

    def create_pool(self, index):
        # A pool that waits for a free connection: channels-redis' plain pool raises "Too many
        # connections" once a burst of sends exceeds it, and the frames are lost.
        host = dict(self.hosts[index])
        address = host.pop("address")
        return aioredis.BlockingConnectionPool.from_url(address, **host)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 0  # receives that failed and were retried, for tests and logs

    async def receive(self, channel):
        delay = 0.05
        while True:
            try:
                return await super().receive(channel)
            except (RedisError, OSError) as error:
                self.failures += 1
                logger.warning("channel layer receive failed (%s); retrying", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_delay)


# With Redis: how often sockets and the cancel listener join their groups again.
REJOIN_SECONDS = 5.0


async def rejoin(layer, channel: str, groups) -> None:
    """Join `groups` again: a restarted Redis has forgotten them (a no-op on a live one)."""
    for group in list(groups):
        await layer.group_add(group, channel)
