"""/ws/monitoring/ through the project's real ASGI stack (origin check, session auth, routing)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone

from config.asgi import application
from monitoring import services
from monitoring.services import record_sample
from tests.support.websocket import Communicator

from .conftest import make_sample

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    yield
    # The session lookup of channels' AuthMiddleware can leave a connection open in asgiref's
    # sync thread, and PostgreSQL then refuses to drop the test database at the end of the run.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(*headers) -> Communicator:
    return Communicator(application, "/ws/monitoring/", headers=[ORIGIN, *headers])


async def test_authenticated_socket_gets_snapshot_then_pushed_samples(
    session_cookie, probes, channel_layer, settings
):
    settings.TELEMETRY_INTERVAL = 5.0
    older = await database_sync_to_async(make_sample)(
        "box-a", timezone.now() - timedelta(seconds=3), ram_used_mb=42.0
    )
    socket = communicator((b"cookie", session_cookie))
    connected, _ = await socket.connect(timeout=5)
    assert connected

    hello = await socket.receive_json_from(timeout=5)
    assert hello["type"] == "monitoring.snapshot"
    assert hello["interval"] == 5.0
    assert [(s["id"], s["ram_used_mb"]) for s in hello["samples"]] == [(older.pk, 42.0)]

    # The real path: the sampling service stores a sample, then publishes it after the commit.
    outcome = await database_sync_to_async(record_sample)(probes=probes, host="box-a")
    pushed = await socket.receive_json_from(timeout=5)
    assert pushed["type"] == "monitoring.sample"
    assert pushed["sample"]["id"] == outcome.sample.pk
    assert pushed["sample"]["host"] == "box-a"
    assert [g["name"] for g in pushed["sample"]["gpus"]] == [
        "NVIDIA GeForce RTX 4090",
        "NVIDIA A100-SXM4-80GB",
    ]

    # Client frames, even garbage, are ignored rather than killing the socket.
    await socket.send_to(text_data="not json")
    assert await socket.receive_nothing(timeout=0.2)

    await socket.disconnect()
    assert not channel_layer.groups.get(services.GROUP)


async def test_unauthenticated_socket_is_closed_with_4401(channel_layer):
    socket = communicator()
    connected, _ = await socket.connect(timeout=5)
    assert connected  # accepted so that the browser sees the close code, then closed
    closing = await socket.receive_output(timeout=5)
    assert closing == {"type": "websocket.close", "code": 4401}
    assert not channel_layer.groups.get(services.GROUP)


async def test_a_stale_session_cookie_is_unauthenticated(channel_layer):
    socket = communicator((b"cookie", b"sessionid=not-a-session"))
    await socket.connect(timeout=5)
    closing = await socket.receive_output(timeout=5)
    assert closing["code"] == 4401
