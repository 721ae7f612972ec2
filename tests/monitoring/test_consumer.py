"""/ws/monitoring/ through the project's real ASGI stack (origin check, session auth, routing)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

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


async def test_a_socket_without_credentials_that_sends_no_auth_frame_is_closed_with_4408(
    channel_layer, monkeypatch
):
    # Like /ws/chat/: a client without cookie or header may authenticate with its first frame
    # (tests/accounts/test_api_key_sockets.py); one that does not is closed once its time is up.
    from monitoring import consumers

    monkeypatch.setattr(consumers, "AUTH_TIMEOUT_SECONDS", 0.1)
    socket = communicator()
    connected, _ = await socket.connect(timeout=5)
    assert connected  # accepted so that the browser sees the close code, then closed
    closing = await socket.receive_output(timeout=5)
    assert closing == {"type": "websocket.close", "code": 4408}
    assert not channel_layer.groups.get(services.GROUP)


async def test_a_stale_session_cookie_is_unauthenticated(channel_layer):
    socket = communicator((b"cookie", b"sessionid=not-a-session"))
    await socket.connect(timeout=5)
    closing = await socket.receive_output(timeout=5)
    assert closing["code"] == 4401


# ------------------------------------------------------------------ sessions that end

NEW_PASSWORD = "a brand new passphrase 42"


def logged_in(user) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(*headers) -> Communicator:
    socket = communicator(*headers)
    connected, _ = await socket.connect(timeout=5)
    assert connected
    assert (await socket.receive_json_from())["type"] == "monitoring.snapshot"
    return socket


async def closed_4401(socket) -> None:
    assert await socket.receive_output() == {"type": "websocket.close", "code": 4401}


def bearer_header(user) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())


async def test_a_password_change_closes_the_open_sockets(user, password, channel_layer):
    _, cookie = await sync_to_async(logged_in)(user)
    by_session = await open_socket((b"cookie", cookie))
    by_token = await open_socket(await sync_to_async(bearer_header)(user))
    browser, _ = await sync_to_async(logged_in)(user)

    response = await sync_to_async(browser.post)(
        "/accounts/password/",
        {"old_password": password, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302

    await closed_4401(by_session)
    await closed_4401(by_token)
    for socket in (by_session, by_token):
        await socket.disconnect()  # what the browser answers to the close
    assert not channel_layer.groups.get(services.GROUP)
    assert not channel_layer.groups.get(f"accounts.user.{user.pk}")


async def test_a_logout_closes_the_sockets_of_that_session(user, channel_layer):
    browser, cookie = await sync_to_async(logged_in)(user)
    socket = await open_socket((b"cookie", cookie))

    response = await sync_to_async(browser.post)("/accounts/logout/")
    assert response.status_code == 302

    await closed_4401(socket)


async def test_a_deactivation_closes_the_open_sockets(user, channel_layer):
    _, cookie = await sync_to_async(logged_in)(user)
    socket = await open_socket((b"cookie", cookie))

    user.is_active = False
    await sync_to_async(user.save)()

    await closed_4401(socket)


@pytest.fixture
async def redis_layer(settings):
    """The channel layer of the full stack (REDIS_URL): channels-redis on the real Redis."""
    import os
    import uuid

    from channels.layers import get_channel_layer

    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.channel_layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": url, **settings.REDIS_POOL_OPTIONS}],
                "prefix": f"test-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    layer = get_channel_layer()
    yield layer
    await layer.flush()


@pytest.mark.redis
async def test_a_deactivation_closes_the_open_sockets_over_redis(user, redis_layer):
    from config.channel_layers import RedisChannelLayer

    assert isinstance(redis_layer, RedisChannelLayer)
    _, cookie = await sync_to_async(logged_in)(user)
    socket = await open_socket((b"cookie", cookie))

    user.is_active = False
    await sync_to_async(user.save)()

    await closed_4401(socket)


async def test_the_token_expiry_closes_a_bearer_socket(user, channel_layer):
    def short_token() -> str:
        token = AccessToken.for_user(user)
        token.set_exp(lifetime=timedelta(seconds=1))
        return str(token)

    header = (b"authorization", f"Bearer {await sync_to_async(short_token)()}".encode())
    socket = communicator(header)
    assert (await socket.connect())[0]
    # The snapshot first (unless the machine is so slow the token expired already), then the
    # close.
    while (output := await socket.receive_output())["type"] != "websocket.close":
        assert output["type"] == "websocket.send"
    assert output["code"] == 4401
