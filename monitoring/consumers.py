"""`/ws/monitoring/`: live telemetry for the dashboard.

Authenticated like every socket (accounts.sockets: the session, or a bearer header). On
connect the client gets
``{"type": "monitoring.snapshot", "interval": 5.0, "samples": [...]}`` (the latest sample of
each host), then ``{"type": "monitoring.sample", "sample": {...}}`` every time a worker
records one (the shape of ``GET /api/monitoring/latest/``'s hosts). Client frames are ignored.
The socket is closed with 4401 when its session ends (logout, password change, deactivation)
or its access token expires.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts import sockets
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin
from monitoring import services
from monitoring.selectors.samples import latest_payloads

logger = logging.getLogger(__name__)


class MonitoringConsumer(AsyncJsonWebsocketConsumer):
    credential: sockets.Credential | None = None
    ended = False

    async def connect(self):
        self.groups_joined: set[str] = set()
        self._timers: list[asyncio.Task] = []
        shake = await sockets.handshake(self.scope)
        if shake.user is None:
            # Accept first: a close during the handshake reaches browsers as a bare 403 with
            # code 1006, and the page could not tell "log in" from "server down".
            await self.accept()
            await self.close(code=sockets.CLOSE_UNAUTHENTICATED)
            return
        self.credential = shake.credential
        # The samples, and the user's group: told when the account changes.
        for group in (services.GROUP, sockets.user_group(int(shake.user.pk))):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)
        await self.accept()
        if not await sockets.still_valid(self.credential):
            # Ended between the handshake and joining the group (whose notice it missed):
            # this socket never acts, so nothing else would look again.
            await self._end()
            return
        if shake.expires:
            self._timers.append(asyncio.create_task(self._close_at(shake.expires)))
        if isinstance(self.channel_layer, RedisChannelLayer):
            self._timers.append(asyncio.create_task(self._keep_joined()))
        latest = await database_sync_to_async(latest_payloads)()
        await self.send_json(
            {
                "type": "monitoring.snapshot",
                "interval": settings.TELEMETRY_INTERVAL,
                "samples": latest,
            }
        )

    async def _close_at(self, expires: int) -> None:
        await asyncio.sleep(max(0.0, expires - time.time()))
        await self._end()

    async def _keep_joined(self) -> None:
        # With Redis: a restarted Redis forgot the groups.
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await rejoin(self.channel_layer, self.channel_name, self.groups_joined)
            except Exception as exc:  # Redis is still away: next round
                logger.info("monitoring socket upkeep failed: %s", exc)

    async def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        await self.close(code=sockets.CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code):
        for timer in getattr(self, "_timers", ()):
            timer.cancel()
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        return  # nothing to ask: this socket only pushes (and must not die on a bad frame)

    async def monitoring_sample(self, event):
        if not self.ended:
            await self.send_json({"type": "monitoring.sample", "sample": event["sample"]})

    async def account_changed(self, event):
        if not self.ended and await sockets.ended_by(self.credential, event):
            await self._end()
