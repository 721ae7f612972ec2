"""`/ws/monitoring/`: live telemetry for the dashboard.

Authenticated like /ws/chat/ (accounts.sockets): the session, an `Authorization: Bearer` header
(a JWT access token or an API key of either scope), or a first frame
``{"type": "auth", "token": ...}`` within 5 seconds (answered ``{"type": "auth.ok", "user":
{...}}``; a bad one closes with 4401, none in time with 4408). Once authenticated the client gets
``{"type": "monitoring.snapshot", "interval": 5.0, "samples": [...]}`` (the latest sample of
each host), then ``{"type": "monitoring.sample", "sample": {...}}`` every time a worker
records one (the shape of ``GET /api/monitoring/latest/``'s hosts).

Who is on the GPU now: after ``{"type": "now.subscribe"}`` the socket gets
``{"type": "monitoring.now", "now": {...}}`` (the shape of ``GET /api/monitoring/now/``, cut
for its user) at once and then whenever that changes (monitoring.now_feed);
``{"type": "now.unsubscribe"}`` stops them. Other client frames are ignored. The socket is
closed with 4401 when its session ends (logout, password change, deactivation) or its access
token expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts import sockets
from config.channel_layers import REJOIN_SECONDS, RedisChannelLayer, rejoin
from config.metrics import CountedSocket
from monitoring import now_feed, services
from monitoring.selectors import now
from monitoring.selectors.samples import latest_payloads
from monitoring.serializers import NowOutput

logger = logging.getLogger(__name__)

#: Seconds a socket without credentials has to send its auth frame.
AUTH_TIMEOUT_SECONDS = 5.0


class MonitoringConsumer(CountedSocket, AsyncJsonWebsocketConsumer):
    metrics_endpoint = "monitoring"

    credential: sockets.Credential | None = None
    ended = False
    user_id: int | None = None
    staff = False
    _now_feed: now_feed.Feed | None = None
    _now_last: Any = None

    async def connect(self):
        self.groups_joined: set[str] = set()
        self._timers: list[asyncio.Task] = []
        shake = await sockets.handshake(self.scope)
        if shake.user is None:
            # Accept first: a close during the handshake reaches browsers as a bare 403 with
            # code 1006, and the page could not tell "log in" from "server down".
            await self.accept()
            if shake.refused:
                await self.close(code=sockets.CLOSE_UNAUTHENTICATED)
            else:  # no credential yet: the first frame may bring one
                self._timers.append(asyncio.create_task(self._require_auth_in_time()))
            return
        await self._authenticated(shake.user, shake.credential, accept=True)

    async def _require_auth_in_time(self) -> None:
        await asyncio.sleep(AUTH_TIMEOUT_SECONDS)
        if self.user_id is None and not self.ended:
            self.ended = True
            await self.close(code=sockets.CLOSE_AUTH_TIMEOUT)

    async def _auth_frame(self, text_data: str | None) -> None:
        """Before authentication only `{"type": "auth", "token": ...}` is read."""
        try:
            frame = json.loads(text_data or "") if len(text_data or "") <= 4096 else None
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") != "auth":
            return
        user, credential = await sockets.user_for_token(frame.get("token"), self.scope)
        if user is None:
            await self._end()
            return
        await self.send_json({"type": "auth.ok", "user": {"id": user.pk, "email": user.email}})
        await self._authenticated(user, credential)

    async def _authenticated(
        self, user: Any, credential: sockets.Credential | None, *, accept: bool = False
    ) -> None:
        self.credential = credential
        self.user_id = int(user.pk)
        self.staff = bool(user.is_staff)
        # The samples, and the user's group: told when the account changes.
        for group in (services.GROUP, sockets.user_group(int(user.pk))):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)
        if accept:
            await self.accept()
        if not await sockets.still_valid(self.credential):
            # Ended between the handshake and joining the group (whose notice it missed):
            # this socket never acts, so nothing else would look again.
            await self._end()
            return
        expires = credential.expires if credential is not None else None
        if expires:
            self._timers.append(asyncio.create_task(self._close_at(expires)))
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
        if self._now_feed is not None:
            self._now_feed.unsubscribe(self)
            self._now_feed = None
        for timer in getattr(self, "_timers", ()):
            timer.cancel()
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Only the now frames can be asked for; anything else is ignored (and a bad frame must
        # not kill the socket).
        if self.user_id is None and not self.ended:
            await self._auth_frame(text_data)
            return
        if self.ended or self.user_id is None or not text_data or len(text_data) > 200:
            return
        try:
            kind = json.loads(text_data).get("type")
        except (ValueError, AttributeError):
            return
        if kind == "now.subscribe" and self._now_feed is None:
            self._now_last = None
            self._now_feed = now_feed.feed()
            self._now_feed.subscribe(self)
        elif kind == "now.unsubscribe" and self._now_feed is not None:
            self._now_feed.unsubscribe(self)
            self._now_feed = None

    async def now_view(self, view: dict[str, Any]) -> None:
        """The feed's latest view: this user's cut of it, when it changed."""
        if self.ended or self.user_id is None:
            return
        mine = now.for_viewer(view, self.user_id, self.staff)
        fingerprint = now.fingerprint(mine)
        if fingerprint == self._now_last:
            return
        self._now_last = fingerprint
        await self.send_json({"type": "monitoring.now", "now": NowOutput(mine).data})

    async def monitoring_sample(self, event):
        if not self.ended:
            await self.send_json({"type": "monitoring.sample", "sample": event["sample"]})

    async def account_changed(self, event):
        if not self.ended and await sockets.ended_by(self.credential, event):
            await self._end()
