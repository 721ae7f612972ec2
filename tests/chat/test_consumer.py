"""/ws/chat/ through the project's ASGI application, with Channels' WebsocketCommunicator."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from chat import consumers
from chat.models import Conversation, Message
from config.asgi import application
from tests.support.websocket import Communicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


@pytest.fixture
async def bob(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("bob@example.com", "pw-1234567890")


def token_for(user, lifetime=None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


async def connect(user=None, *, headers=None, token=None):
    headers = list(headers or [])
    if user is not None:
        headers.append((b"authorization", f"Bearer {token or token_for(user)}".encode()))
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    assert connected, code
    return communicator


async def frames_until_end(communicator, timeout=10) -> list[dict]:
    frames: list[dict] = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in TERMINAL:
            return frames


def text_of(frames) -> str:
    text = ""
    for frame in frames:
        if frame["type"] == "chat.token":
            assert frame["offset"] == len(text), "no character lost or doubled"
            text += frame["content"]
    return text


async def test_send_streams_the_reply(alice, ollama):
    ollama.script(tokens=["Hel", "lo", " the", "re"], token_delay=0.05)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
    frames = await frames_until_end(communicator)
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["chat.accepted", "chat.started"]
    assert kinds[-1] == "chat.done"
    assert text_of(frames) == "Hello there"
    done = frames[-1]
    assert done["metrics"]["eval_count"] == 4
    assert done["metrics"]["tokens_per_second"] > 0
    reply = await Message.objects.aget(pk=done["message"])
    assert (reply.status, reply.content) == ("complete", "Hello there")
    await communicator.disconnect()


async def test_fast_tokens_are_coalesced_into_fewer_frames(alice, ollama):
    ollama.script(tokens=["x"] * 300)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "go"})
    frames = await frames_until_end(communicator)
    tokens = [f for f in frames if f["type"] == "chat.token"]
    assert text_of(frames) == "x" * 300
    assert len(tokens) < 300
    await communicator.disconnect()


async def test_first_frame_auth(alice, ollama):
    communicator = await connect()
    await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
    refused = await communicator.receive_json_from()
    assert refused["code"] == "auth_required"
    await communicator.send_json_to({"type": "auth", "token": token_for(alice)})
    assert (await communicator.receive_json_from())["type"] == "auth.ok"
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from()) == {"type": "pong"}
    await communicator.disconnect()


async def test_bad_first_frame_token_closes_4401(ollama):
    communicator = await connect()
    await communicator.send_json_to({"type": "auth", "token": "not.a.token"})
    assert (await communicator.receive_output(timeout=5))["code"] == 4401


async def test_no_auth_in_time_closes_4408(ollama, monkeypatch):
    monkeypatch.setattr(consumers, "AUTH_TIMEOUT_SECONDS", 0.2)
    communicator = await connect()
    assert (await communicator.receive_output(timeout=5))["code"] == 4408


async def closed_at_once(headers) -> int:
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected  # accepted, then closed with a code a browser can read
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return output["code"]


async def test_invalid_and_expired_bearer_headers_are_refused(alice):
    for header in (b"Bearer nope", f"Bearer {token_for(alice, -timedelta(seconds=5))}".encode()):
        assert await closed_at_once([(b"authorization", header)]) == 4401


async def test_token_expiry_closes_an_open_socket(alice):
    communicator = await connect(alice, token=token_for(alice, timedelta(seconds=1)))
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "token_expired"
    assert (await communicator.receive_output(timeout=5))["code"] == 4401


async def test_session_cookie_auth(alice, ollama):
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = await connect(headers=[(b"cookie", cookie)])
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from())["type"] == "pong"
    await communicator.disconnect()


async def test_foreign_origin_is_refused(alice):
    communicator = Communicator(
        application,
        "/ws/chat/",
        headers=[
            (b"origin", b"https://evil.example"),
            (b"authorization", f"Bearer {token_for(alice)}".encode()),
        ],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    allowed = Communicator(
        application,
        "/ws/chat/",
        headers=[
            (b"origin", b"http://localhost:8000"),
            (b"authorization", f"Bearer {token_for(alice)}".encode()),
        ],
    )
    assert (await allowed.connect(timeout=5))[0]
    await allowed.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_frame"),
        ([1, 2], "invalid_frame"),
        ({"kind": "chat.send"}, "invalid_frame"),
        ({"type": "chat.explode"}, "unknown_type"),
        ({"type": "chat.send"}, "invalid_frame"),
        ({"type": "chat.send", "message": "   "}, "empty_message"),
        ({"type": "chat.send", "message": "x", "options": {"temperature": 9}}, "invalid_options"),
        ({"type": "chat.send", "message": "x", "model": "nope:1b"}, "model_not_found"),
        ({"type": "chat.send", "message": "x", "conversation": "zzz"}, "invalid_frame"),
        ({"type": "chat.stop"}, "invalid_frame"),
        ({"type": "chat.resume", "conversation": None}, "invalid_frame"),
    ],
)
async def test_bad_frames_get_a_precise_error_and_the_socket_stays_open(alice, frame, code):
    communicator = await connect(alice)
    if isinstance(frame, str):
        await communicator.send_to(text_data=frame)
    else:
        await communicator.send_json_to(frame)
    error = await communicator.receive_json_from()
    assert error["type"] == "chat.error"
    assert error["code"] == code
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from())["type"] == "pong"
    await communicator.disconnect()


async def test_oversized_message(alice, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 20
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "x" * 21})
    assert (await communicator.receive_json_from())["code"] == "message_too_long"
    await communicator.disconnect()


async def test_someone_elses_conversation(alice, bob):
    theirs = await Conversation.objects.acreate(owner=bob)
    communicator = await connect(alice)
    for frame in (
        {"type": "chat.send", "message": "x", "conversation": str(theirs.pk)},
        {"type": "chat.stop", "conversation": str(theirs.pk)},
        {"type": "chat.resume", "conversation": str(theirs.pk), "message": 1, "offset": 0},
        {"type": "chat.subscribe", "conversation": str(theirs.pk)},
    ):
        await communicator.send_json_to(frame)
        assert (await communicator.receive_json_from())["code"] == "not_found"
    assert not await theirs.messages.aexists()
    await communicator.disconnect()


async def test_stop_cancels_upstream_and_keeps_the_partial_reply(alice, ollama):
    ollama.script(tokens=[f"w{i} " for i in range(100)], token_delay=0.03)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "long"})
    frames: list[dict] = []
    while len("".join(f.get("content", "") for f in frames)) < 12:
        frames.append(await communicator.receive_json_from(timeout=5))
    conversation = frames[0]["conversation"]
    await communicator.send_json_to({"type": "chat.stop", "conversation": conversation})
    frames += await frames_until_end(communicator)
    assert frames[-1]["type"] == "chat.cancelled"
    await ollama.await_until(lambda: ollama.last_generation.finished, timeout=5)
    assert ollama.last_generation.client_disconnected
    assert ollama.last_generation.tokens_sent < 100
    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert reply.status == "cancelled"
    assert reply.content.startswith(text_of(frames))
    await communicator.disconnect()


async def test_closing_the_socket_does_not_stop_the_generation(alice, ollama):
    ollama.script(tokens=["a"] * 20, token_delay=0.02)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "go"})
    started = None
    while started is None:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] == "chat.started":
            started = frame
    await communicator.disconnect()
    for _ in range(200):
        reply = await Message.objects.aget(pk=started["message"])
        if reply.status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert (reply.status, reply.content) == ("complete", "a" * 20)
    assert not ollama.last_generation.client_disconnected


async def test_resume_after_reconnect_loses_and_doubles_nothing(alice, ollama):
    reply_tokens = [f"{i:03d}|" for i in range(60)]
    ollama.script(tokens=reply_tokens, token_delay=0.02)
    first = await connect(alice)
    await first.send_json_to({"type": "chat.send", "message": "count"})
    frames: list[dict] = []
    while len(text_of(frames)) < 40:
        frames.append(await first.receive_json_from(timeout=5))
    started = next(f for f in frames if f["type"] == "chat.started")
    have = text_of(frames)
    await first.disconnect()
    await asyncio.sleep(0.2)  # tokens go on being generated while no one listens

    second = await connect(alice)
    await second.send_json_to(
        {
            "type": "chat.resume",
            "conversation": started["conversation"],
            "message": started["message"],
            "offset": len(have),
        }
    )
    rest = await frames_until_end(second)
    resumed = ""
    offset = len(have)
    for frame in rest:
        if frame["type"] == "chat.token":
            assert frame["offset"] == offset
            resumed += frame["content"]
            offset += len(frame["content"])
    assert rest[-1]["type"] == "chat.done"
    assert have + resumed == "".join(reply_tokens)
    await second.disconnect()


async def test_resume_of_a_finished_reply(alice, ollama):
    ollama.script(reply="all done here")
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "x"})
    frames = await frames_until_end(communicator)
    await communicator.send_json_to(
        {
            "type": "chat.resume",
            "conversation": frames[0]["conversation"],
            "message": frames[-1]["message"],
            "offset": 4,
        }
    )
    token = await communicator.receive_json_from()
    assert (token["offset"], token["content"]) == (4, "done here")
    assert (await communicator.receive_json_from())["type"] == "chat.done"
    await communicator.disconnect()


async def test_two_tabs_see_the_same_stream(alice, ollama):
    ollama.script(tokens=["one ", "two ", "three"], token_delay=0.05)
    conversation = await Conversation.objects.acreate(owner=alice)
    tab1, tab2 = await connect(alice), await connect(alice)
    await tab2.send_json_to({"type": "chat.subscribe", "conversation": str(conversation.pk)})
    await tab2.send_json_to({"type": "ping"})
    assert (await tab2.receive_json_from())["type"] == "pong"
    await tab1.send_json_to(
        {"type": "chat.send", "message": "x", "conversation": str(conversation.pk)}
    )
    frames1, frames2 = await asyncio.gather(frames_until_end(tab1), frames_until_end(tab2))
    assert text_of(frames1) == text_of(frames2) == "one two three"
    await tab1.disconnect()
    await tab2.disconnect()


async def test_rate_limit_per_user(alice, ollama, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "1"})
    await frames_until_end(communicator)
    await communicator.send_json_to({"type": "chat.send", "message": "2"})
    error = await communicator.receive_json_from()
    assert error["code"] == "rate_limited"
    assert error["retry_after"] >= 1
    await communicator.disconnect()


async def test_concurrent_generations_per_user(alice, ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 1
    ollama.configure(num_parallel=4)
    ollama.script(tokens=["a"] * 50, token_delay=0.02)
    settings.OLLAMA_MAX_CONCURRENCY = 4
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "1"})
    while (await communicator.receive_json_from(timeout=5))["type"] != "chat.started":
        pass
    await communicator.send_json_to({"type": "chat.send", "message": "2"})
    while True:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] == "chat.error":
            break
    assert frame["code"] == "too_many_generations"
    await frames_until_end(communicator)
    await communicator.disconnect()


async def test_ollama_down_is_a_clear_error(alice, settings):
    from tests.support.live import free_port

    settings.OLLAMA_URLS = [f"http://127.0.0.1:{free_port()}"]
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "x"})
    error = await communicator.receive_json_from()
    assert error["code"] == "ollama_unreachable"
    assert "127.0.0.1" in error["detail"]
    await communicator.disconnect()


async def test_send_with_an_attachment(alice, ollama, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from uploads.services import store_upload

    settings.MEDIA_ROOT = tmp_path
    stored = await sync_to_async(store_upload)(
        owner=alice, file=SimpleUploadedFile("facts.txt", b"The sky is green here.")
    )
    communicator = await connect(alice)
    await communicator.send_json_to(
        {"type": "chat.send", "message": "Colour?", "attachments": [str(stored.pk)]}
    )
    frames = await frames_until_end(communicator)
    assert frames[-1]["type"] == "chat.done"
    accepted = next(f for f in frames if f["type"] == "chat.accepted")
    assert [(a["id"], a["name"], a["kind"]) for a in accepted["attachments"]] == [
        (str(stored.pk), "facts.txt", "text")
    ]
    sent = ollama.last_request("/api/chat").json["messages"][-1]["content"]
    assert "The sky is green here." in sent
    await communicator.send_json_to(
        {"type": "chat.send", "message": "x", "attachments": ["not-an-id"]}
    )
    assert (await communicator.receive_json_from())["code"] == "invalid_frame"
    await communicator.disconnect()


async def test_an_image_for_a_model_without_vision_is_named(alice, ollama, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.uploads.support import png_1x1
    from uploads.services import store_upload

    settings.MEDIA_ROOT = tmp_path
    image = await sync_to_async(store_upload)(
        owner=alice, file=SimpleUploadedFile("dot.png", png_1x1())
    )
    communicator = await connect(alice)
    await communicator.send_json_to(
        {
            "type": "chat.send",
            "message": "What is it?",
            "model": "llama3.2:3b",
            "attachments": [str(image.pk)],
        }
    )
    error = await communicator.receive_json_from()
    assert (error["type"], error["code"]) == ("chat.error", "model_lacks_vision")
    assert error["attachments"] == [str(image.pk)]
    assert not ollama.requests_to("/api/chat")
    await communicator.disconnect()


async def test_an_expired_session_is_closed_at_once(ollama):
    assert await closed_at_once([(b"cookie", b"sessionid=expired-or-forged")]) == 4401


async def test_a_refused_send_names_its_conversation(alice, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 5
    conversation = await Conversation.objects.acreate(owner=alice)
    communicator = await connect(alice)
    await communicator.send_json_to(
        {"type": "chat.send", "message": "too long", "conversation": str(conversation.pk)}
    )
    error = await communicator.receive_json_from()
    assert error["code"] == "message_too_long"
    assert error["conversation"] == str(conversation.pk)
    await communicator.disconnect()


async def test_a_full_queue_leaves_no_empty_conversation(alice, ollama, settings):
    from chat import hosts

    settings.OLLAMA_MAX_QUEUE = 0
    gate = hosts.get_gate()
    async with gate.reserve(ollama.url) as held:
        await held.acquired()
        communicator = await connect(alice)
        await communicator.send_json_to({"type": "chat.send", "message": "x"})
        error = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
    assert error["code"] == "queue_full"
    assert not await Conversation.objects.filter(owner=alice).aexists()


async def test_a_second_send_to_a_busy_conversation_is_refused(alice, ollama):
    ollama.script(tokens=["first"])
    held = ollama.script(tokens=["a", "b"], hold_after=1)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "one"})
    conversation = (await frames_until_end(communicator))[-1]["conversation"]
    await communicator.send_json_to(
        {"type": "chat.send", "message": "two", "conversation": conversation}
    )
    while (await communicator.receive_json_from(timeout=5))["type"] != "chat.token":
        pass

    await communicator.send_json_to(
        {"type": "chat.send", "message": "three", "conversation": conversation}
    )
    error = await communicator.receive_json_from(timeout=5)
    assert (error["type"], error["code"], error["conversation"]) == (
        "chat.error",
        "generation_running",
        conversation,
    )
    # REST says the same, with its status.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    response = await sync_to_async(client.post)(
        "/api/chat/", {"message": "four", "conversation": conversation}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "generation_running"

    ollama.release(held)
    assert (await frames_until_end(communicator))[-1]["type"] == "chat.done"
    await communicator.disconnect()


# ------------------------------------------------------------------ sessions that end
# A password change, a deactivation or a logout ends the sessions it concerns: their open
# sockets are told (a per-user group) and closed with 4401, and every action frame checks again.

NEW_PASSWORD = "a brand new passphrase 42"


async def logged_in(user):
    """A browser of `user`: a test client with a session, and that session's cookie header."""
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(user)
    return client, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def session_ended(communicator, **about) -> None:
    frame = await communicator.receive_json_from()
    assert frame == {
        "type": "chat.error",
        "code": "session_ended",
        "detail": frame["detail"],
        **about,
    }
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def pongs(communicator) -> bool:
    await communicator.send_json_to({"type": "ping"})
    return (await communicator.receive_json_from()) == {"type": "pong"}


async def change_password(user, old="pw-1234567890", new=NEW_PASSWORD) -> None:
    client, _ = await logged_in(user)
    response = await sync_to_async(client.post)(
        "/accounts/password/", {"old_password": old, "new_password1": new, "new_password2": new}
    )
    assert response.status_code == 302


async def test_a_password_change_closes_the_open_sockets(alice, bob):
    by_token = await connect(alice)
    _, cookie = await logged_in(alice)
    by_session = await connect(headers=[cookie])
    by_frame = await connect()
    old_token = token_for(alice)
    await by_frame.send_json_to({"type": "auth", "token": old_token})
    assert (await by_frame.receive_json_from())["type"] == "auth.ok"
    someone_else = await connect(bob)
    for socket in (by_token, by_session, by_frame, someone_else):
        assert await pongs(socket)

    await change_password(alice)

    for socket in (by_token, by_session, by_frame):
        await session_ended(socket)
    assert await pongs(someone_else)
    await someone_else.disconnect()


async def test_after_a_password_change_the_old_access_token_opens_no_socket(alice):
    old_token = token_for(alice)
    await change_password(alice)

    # In the header: accepted, then closed at once.
    assert await closed_at_once([(b"authorization", f"Bearer {old_token}".encode())]) == 4401
    # In the first frame.
    communicator = await connect()
    await communicator.send_json_to({"type": "auth", "token": old_token})
    assert (await communicator.receive_output())["code"] == 4401

    # A new login works.
    client = APIClient()
    response = await sync_to_async(client.post)(
        "/api/auth/token/", {"email": alice.email, "password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    fresh = await connect(alice, token=response.json()["access"])
    assert await pongs(fresh)
    await fresh.disconnect()


async def test_a_logout_closes_the_sockets_of_that_session_only(alice, ollama):
    first_browser, first_cookie = await logged_in(alice)
    _, second_cookie = await logged_in(alice)
    first = await connect(headers=[first_cookie])
    second = await connect(headers=[second_cookie])
    by_token = await connect(alice)

    response = await sync_to_async(first_browser.post)("/accounts/logout/")
    assert response.status_code == 302

    await session_ended(first)
    assert await pongs(by_token)
    # The other session still acts (its action frames pass the check).
    ollama.script(tokens=["fine"])
    await second.send_json_to({"type": "chat.send", "message": "Hi"})
    assert (await frames_until_end(second))[-1]["type"] == "chat.done"
    await second.disconnect()
    await by_token.disconnect()


async def test_a_deactivation_closes_the_open_sockets(alice):
    by_token = await connect(alice)
    _, cookie = await logged_in(alice)
    by_session = await connect(headers=[cookie])

    alice.is_active = False
    await sync_to_async(alice.save)()

    await session_ended(by_token)
    await session_ended(by_session)


async def test_a_send_after_an_unannounced_deactivation_is_refused(alice, ollama):
    # No notice reaches the socket (a bulk update sends none): the send itself checks.
    from accounts.models import User

    communicator = await connect(alice)
    assert await pongs(communicator)
    await User.objects.filter(pk=alice.pk).aupdate(is_active=False)

    await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
    await session_ended(communicator)
    assert not ollama.requests_to("/api/chat")
    assert not await Conversation.objects.filter(owner=alice).aexists()


async def test_a_send_on_a_session_that_ended_unannounced_is_refused(alice, ollama):
    from django.contrib.sessions.models import Session

    _, cookie = await logged_in(alice)
    communicator = await connect(headers=[cookie])
    assert await pongs(communicator)
    await Session.objects.all().adelete()  # expired, or cleared by `clearsessions`

    conversation = await Conversation.objects.acreate(owner=alice)
    await communicator.send_json_to(
        {"type": "chat.subscribe", "conversation": str(conversation.pk)}
    )
    await session_ended(communicator, conversation=str(conversation.pk))
    assert not ollama.requests_to("/api/chat")


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
async def test_a_password_change_closes_the_open_sockets_over_redis(alice, redis_layer):
    from config.channel_layers import RedisChannelLayer

    assert isinstance(redis_layer, RedisChannelLayer)
    communicator = await connect(alice)
    _, cookie = await logged_in(alice)
    by_session = await connect(headers=[cookie])
    assert await pongs(communicator)
    assert await pongs(by_session)

    await change_password(alice)

    await session_ended(communicator)
    await session_ended(by_session)
