"""`/ws/monitoring/`: live telemetry for the dashboard.

Session-authenticated (the AuthMiddlewareStack in config/asgi.py). On connect the client gets
``{"type": "monitoring.snapshot", "interval": 5.0, "samples": [...]}`` (the latest sample of each
host), then ``{"type": "monitoring.sample", "sample": {...}}`` every time a worker records one
(the shape of ``GET /api/monitoring/latest/``'s hosts). Client frames are ignored.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from monitoring import services

#: Application close code for "not logged in" (4000-4999 are the application's; 4401 echoes
#: HTTP 401 so the client knows retrying without logging in is pointless).
CLOSE_UNAUTHENTICATED = 4401


class MonitoringConsumer(AsyncJsonWebsocketConsumer):
    joined = False

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first: a close during the handshake reaches browsers as a bare 403 with
            # code 1006, and the page could not tell "log in" from "server down".
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(services.GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        samples = await database_sync_to_async(services.latest_payloads)()
        await self.send_json(
            {
                "type": "monitoring.snapshot",
                "interval": settings.TELEMETRY_INTERVAL,
                "samples": samples,
            }
        )

    async def disconnect(self, code):
        if self.joined:
            await self.channel_layer.group_discard(services.GROUP, self.channel_name)
            self.joined = False

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        return  # nothing to ask: this socket only pushes (and must not die on a bad frame)

    async def monitoring_sample(self, event):
        await self.send_json({"type": "monitoring.sample", "sample": event["sample"]})
