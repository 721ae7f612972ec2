"""`/ws/monitoring/`: live telemetry for the dashboard.

Authenticated like every socket (accounts.sockets: the session, or a bearer header). On
connect the client gets
``{"type": "monitoring.snapshot", "interval": 5.0, "samples": [...]}`` (the latest sample of
each host), then ``{"type": "monitoring.sample", "sample": {...}}`` every time a worker
records one (the shape of ``GET /api/monitoring/latest/``'s hosts). Client frames are ignored.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts import sockets
from monitoring import services
from monitoring.selectors.samples import latest_payloads


class MonitoringConsumer(AsyncJsonWebsocketConsumer):
    joined = False

    async def connect(self):
        if (await sockets.handshake(self.scope)).user is None:
            # Accept first: a close during the handshake reaches browsers as a bare 403 with
            # code 1006, and the page could not tell "log in" from "server down".
            await self.accept()
            await self.close(code=sockets.CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(services.GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        latest = await database_sync_to_async(latest_payloads)()
        await self.send_json(
            {
                "type": "monitoring.snapshot",
                "interval": settings.TELEMETRY_INTERVAL,
                "samples": latest,
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
