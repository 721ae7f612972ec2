"""API keys on the WebSockets, through the project's ASGI application: /ws/chat/ and
/ws/monitoring/, the key in the `Authorization` header or in the first frame; a `read` key may
watch but not chat; revoking the key or deactivating its account closes its sockets. Also: a
JWT in /ws/monitoring/'s first frame (a front-end client of the live telemetry)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from accounts import services
from chat.models import Conversation
from config.asgi import application
from monitoring import consumers as monitoring_consumers
from tests.support.websocket import Communicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://localhost")
TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    layer = get_channel_layer()
    async_to_sync(layer.flush)()
    yield
    async_to_sync(layer.flush)()


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    yield
    # PostgreSQL refuses to drop the test database while asgiref's thread holds a connection.
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


async def key_of(user, scope: str, **fields):
    return await sync_to_async(services.create_api_key)(user, name=scope, scope=scope, **fields)


def bearer(raw: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {raw}".encode())


async def open_socket(path: str, *headers) -> Communicator:
    communicator = Communicator(application, path, headers=[ORIGIN, *headers])
    connected, code = await communicator.connect()
    assert connected, code
    return communicator


async def frames_until_end(communicator) -> list[dict]:
    frames: list[dict] = []
    while (frame := await communicator.receive_json_from())["type"] not in TERMINAL:
        frames.append(frame)
    return [*frames, frame]


async def closed_with(communicator) -> int:
    # Frames sent before the close (a snapshot, an error) are skipped.
    while (output := await communicator.receive_output())["type"] != "websocket.close":
        assert output["type"] == "websocket.send"
    return output["code"]


# --------------------------------------------------------------------------- /ws/chat/


async def test_chat_with_a_key_in_the_header(alice, ollama):
    _, raw = await key_of(alice, "chat")
    ollama.script(tokens=["Hel", "lo"])
    socket = await open_socket("/ws/chat/", bearer(raw))
    await socket.send_json_to({"type": "chat.send", "message": "Hi"})
    frames = await frames_until_end(socket)
    assert frames[-1]["type"] == "chat.done"
    assert "".join(f["content"] for f in frames if f["type"] == "chat.token") == "Hello"
    assert await Conversation.objects.filter(owner=alice).acount() == 1
    await socket.disconnect()


async def test_chat_with_a_key_in_the_first_frame(alice, ollama):
    _, raw = await key_of(alice, "chat")
    ollama.script(tokens=["ok"])
    socket = await open_socket("/ws/chat/")
    await socket.send_json_to({"type": "auth", "token": raw})
    assert await socket.receive_json_from() == {
        "type": "auth.ok",
        "user": {"id": alice.pk, "email": alice.email},
    }
    await socket.send_json_to({"type": "chat.send", "message": "Hi"})
    assert (await frames_until_end(socket))[-1]["type"] == "chat.done"
    await socket.disconnect()


async def test_a_read_key_may_not_chat_on_the_socket(alice, ollama):
    _, raw = await key_of(alice, "read")
    by_frame = await open_socket("/ws/chat/")
    await by_frame.send_json_to({"type": "auth", "token": raw})
    assert (await by_frame.receive_json_from())["type"] == "auth.ok"
    for socket in (await open_socket("/ws/chat/", bearer(raw)), by_frame):
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_json_from() == {"type": "pong"}
        for frame in (
            {"type": "chat.send", "message": "Hi"},
            {"type": "chat.regenerate", "message": 1},
            {"type": "chat.stop", "conversation": "7d4f6a52-2f8e-4c55-a7f5-1f2d3c4b5a69"},
        ):
            await socket.send_json_to(frame)
            refused = await socket.receive_json_from()
            assert refused["type"] == "chat.error"
            assert refused["code"] == "insufficient_scope"
            assert refused["required_scope"] == "chat"
        # the socket stays open
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_json_from() == {"type": "pong"}
        await socket.disconnect()
    assert not await Conversation.objects.aexists()


async def test_bad_keys_are_refused_with_4401(alice):
    _, raw = await key_of(alice, "chat")
    wrong = raw[:-4] + "zzzz"
    assert await closed_with(await open_socket("/ws/chat/", bearer(wrong))) == 4401
    socket = await open_socket("/ws/chat/")
    await socket.send_json_to({"type": "auth", "token": wrong})
    assert await closed_with(socket) == 4401


async def test_revoking_the_key_closes_its_sockets(alice):
    key, raw = await key_of(alice, "chat")
    _, other = await key_of(alice, "read")
    chat = await open_socket("/ws/chat/", bearer(raw))
    watch = await open_socket("/ws/monitoring/", bearer(raw))
    assert (await watch.receive_json_from())["type"] == "monitoring.snapshot"
    unaffected = await open_socket("/ws/chat/", bearer(other))

    await sync_to_async(services.revoke_api_key)(alice, key.pk)

    frame = await chat.receive_json_from()
    assert (frame["type"], frame["code"]) == ("chat.error", "session_ended")
    assert await closed_with(chat) == 4401
    assert await closed_with(watch) == 4401
    await unaffected.send_json_to({"type": "ping"})
    assert await unaffected.receive_json_from() == {"type": "pong"}
    await unaffected.disconnect()


async def test_a_deactivation_closes_key_sockets(alice):
    _, raw = await key_of(alice, "chat")
    socket = await open_socket("/ws/chat/", bearer(raw))
    alice.is_active = False
    await sync_to_async(alice.save)()
    assert (await socket.receive_json_from())["code"] == "session_ended"
    assert await closed_with(socket) == 4401


async def test_the_key_expiry_closes_its_socket(alice):
    # The socket is closed at the key's expiry, as at an access token's (an event to wait for,
    # not a deadline: on a slow machine the handshake may itself come after it, also a 4401).
    _, raw = await key_of(alice, "chat", expires=timezone.now() + timedelta(seconds=2))
    socket = await open_socket("/ws/chat/", bearer(raw))
    assert await closed_with(socket) == 4401


# --------------------------------------------------------------------------- /ws/monitoring/


@pytest.mark.parametrize("scope", ["read", "chat"])
async def test_monitoring_with_a_key_in_the_header(alice, scope):
    _, raw = await key_of(alice, scope)
    socket = await open_socket("/ws/monitoring/", bearer(raw))
    assert (await socket.receive_json_from())["type"] == "monitoring.snapshot"
    await socket.disconnect()


async def first_frame_auth(token: str, user) -> Communicator:
    socket = await open_socket("/ws/monitoring/")
    await socket.send_json_to({"type": "auth", "token": token})
    assert await socket.receive_json_from() == {
        "type": "auth.ok",
        "user": {"id": user.pk, "email": user.email},
    }
    assert (await socket.receive_json_from())["type"] == "monitoring.snapshot"
    return socket


async def test_monitoring_with_a_key_in_the_first_frame(alice):
    _, raw = await key_of(alice, "read")
    socket = await first_frame_auth(raw, alice)
    await socket.disconnect()


async def test_monitoring_with_a_jwt_in_the_first_frame(alice):
    token = await sync_to_async(lambda: str(AccessToken.for_user(alice)))()
    socket = await first_frame_auth(token, alice)
    await socket.disconnect()


async def test_monitoring_refuses_a_bad_first_frame_and_waits_for_one(alice, monkeypatch):
    socket = await open_socket("/ws/monitoring/")
    # frames before the auth frame are ignored, not fatal
    await socket.send_to(text_data="not json")
    await socket.send_json_to({"type": "now.subscribe"})
    await socket.send_json_to({"type": "auth", "token": "og_nope"})
    assert await socket.receive_output() == {"type": "websocket.close", "code": 4401}

    monkeypatch.setattr(monitoring_consumers, "AUTH_TIMEOUT_SECONDS", 0.1)
    silent = await open_socket("/ws/monitoring/")
    assert await silent.receive_output() == {"type": "websocket.close", "code": 4408}
