"""The WebSocket origin check (config/websocket_security.py): scheme, host and port.

Before the fix the check compared the Origin's host name with ALLOWED_HOSTS only, so a page
on another port or scheme of the same host (http://127.0.0.1:9999) could open a socket with
the user's session cookie on /ws/chat/ and /ws/monitoring/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from config.asgi import application
from config.websocket_security import origin_allowed
from tests.support.live import DaphneServer, bearer
from tests.support.websocket import Communicator

SITE = "127.0.0.1:8000"


def scope(*, host: str | None = SITE, scheme: str = "ws", **headers: str) -> dict:
    raw = [] if host is None else [(b"host", host.encode())]
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": raw}


# -- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "handshake"),
    [
        ("http://127.0.0.1:8000", scope()),
        ("http://localhost", scope(host="localhost")),
        ("http://[::1]:8000", scope(host="[::1]:8000")),
        ("https://127.0.0.1:8000", scope(scheme="wss")),
        (None, scope()),  # a native client: no Origin
        (None, scope(host=None)),
    ],
)
def test_the_sites_own_origin_is_allowed(origin, handshake):
    assert origin_allowed(handshake, origin)


@pytest.mark.parametrize(
    ("origin", "handshake"),
    [
        ("http://127.0.0.1:9999", scope()),  # another port of the same host
        ("http://127.0.0.1", scope()),  # port 80 is another port too
        ("http://localhost:8000", scope()),  # another host name for the same machine
        ("https://127.0.0.1:8000", scope()),  # another scheme
        ("http://127.0.0.1:8000", scope(scheme="wss")),
        ("https://evil.example", scope()),
        ("null", scope()),  # sandboxed frames, file: pages
        ("", scope()),
        ("http://127.0.0.1:8000/", scope()),  # an Origin is no URL
        # DNS rebinding: a foreign name pointing at this server is no allowed host.
        ("http://evil.example:8000", scope(host="evil.example:8000")),
    ],
)
def test_any_other_origin_is_refused(origin, handshake):
    assert not origin_allowed(handshake, origin)


def test_behind_a_tls_proxy_the_forwarded_scheme_counts_when_trusted(settings):
    handshake = scope(host="localhost", x_forwarded_proto="https")
    assert not origin_allowed(handshake, "https://localhost")
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(handshake, "https://localhost")
    assert not origin_allowed(handshake, "http://localhost")
    # A header spelled with underscores is not the trusted one.
    spoofed = {"type": "websocket", "scheme": "ws", "headers": [
        (b"host", b"localhost"), (b"x_forwarded_proto", b"https")
    ]}  # fmt: skip
    assert not origin_allowed(spoofed, "https://localhost")


def test_csrf_trusted_origins_are_allowed_exactly(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    internal = scope(host="localhost:8000")  # what a proxy may pass on as Host
    assert origin_allowed(internal, "https://chat.example.com")
    assert origin_allowed(internal, "https://a.example.org")
    assert origin_allowed(internal, "https://example.org")
    assert not origin_allowed(internal, "http://chat.example.com")
    assert not origin_allowed(internal, "https://chat.example.com:8443")
    assert not origin_allowed(internal, "https://evil.example.com")
    assert not origin_allowed(internal, "http://a.example.org")
    assert not origin_allowed(internal, "https://a.example.org.evil")


def test_without_host_only_the_host_name_can_be_checked():
    # Browsers always send Host: a handshake without one is some other client.
    assert origin_allowed(scope(host=None), "http://localhost:8000")
    assert not origin_allowed(scope(host=None), "https://evil.example")
    assert not origin_allowed(scope(host=None), "http://[::1")  # no URL at all


# -- through the app's ASGI stack, with a session cookie --------------------------------------


@pytest.fixture
async def session_cookie(transactional_db, ollama) -> AsyncIterator[bytes]:
    from accounts.models import User

    user = await sync_to_async(User.objects.create_user)("origin@example.com", "pw-1234567890")
    client = Client()
    await sync_to_async(client.force_login)(user)
    yield f"sessionid={client.cookies['sessionid'].value}".encode()
    # channels' AuthMiddleware may leave a connection open in asgiref's sync thread.
    await sync_to_async(connections.close_all)()


@pytest.mark.parametrize("path", ["/ws/chat/", "/ws/monitoring/"])
@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (b"http://127.0.0.1:8000", True),
        (b"http://127.0.0.1:9999", False),
        (b"https://127.0.0.1:8000", False),
    ],
)
async def test_sockets_with_the_session_cookie(session_cookie, path, origin, accepted):
    communicator = Communicator(
        application,
        path,
        headers=[(b"host", SITE.encode()), (b"origin", origin), (b"cookie", session_cookie)],
    )
    connected, _ = await communicator.connect()
    assert connected is accepted
    await communicator.disconnect()


async def test_two_origin_headers_are_refused(session_cookie):
    headers = [(b"host", SITE.encode()), (b"origin", b"http://127.0.0.1:8000")]
    communicator = Communicator(
        application,
        "/ws/chat/",
        headers=[*headers, (b"origin", b"http://127.0.0.1:9999"), (b"cookie", session_cookie)],
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


# -- through a real Daphne ---------------------------------------------------------------------


@pytest.mark.integration
def test_a_real_daphne_compares_the_port(daphne: DaphneServer, user):
    url = daphne.url.replace("http://", "ws://") + "/ws/chat/"
    own = Origin(f"http://127.0.0.1:{daphne.port}")
    other = Origin(
        f"http://127.0.0.1:{daphne.port + 1 if daphne.port < 65535 else daphne.port - 1}"
    )
    with connect(url, origin=own, additional_headers=bearer(user), open_timeout=30) as socket:
        socket.send('{"type": "ping"}')
        assert '"pong"' in str(socket.recv(timeout=30))
    for origin in (other, Origin(f"https://127.0.0.1:{daphne.port}")):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=origin, additional_headers=bearer(user), open_timeout=30)
        assert refused.value.response.status_code == 403
