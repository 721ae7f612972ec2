"""Every failure inside a generation reaches the client and the record; nothing is orphaned.

Runs on the embedded defaults and, in the suite's second run, on PostgreSQL.
"""

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from chat import hosts, lifecycle, services
from chat.models import Conversation, Message
from tests.chat.test_consumer import connect, frames_until_end, text_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


@pytest.fixture(autouse=True)
def fresh_lifecycle(monkeypatch):
    monkeypatch.setattr(lifecycle, "_state", lifecycle._State())


async def send(communicator, message="hi", **fields):
    await communicator.send_json_to({"type": "chat.send", "message": message, **fields})
    return await frames_until_end(communicator)


def assert_nothing_orphaned():
    assert not Message.objects.filter(status="streaming").exists()
    assert not Conversation.objects.filter(messages__isnull=True).exists()
    for question in Message.objects.filter(role="user"):
        assert Message.objects.filter(
            conversation_id=question.conversation_id, role="assistant", pk__gt=question.pk
        ).exists(), f"user message {question.pk} has no reply row"


async def test_an_unexpected_exception_ends_with_an_error_frame_and_a_failed_row(
    alice, ollama, monkeypatch
):
    ollama.script(tokens=["one ", "two ", "three"])
    calls = []

    async def snapshot():
        calls.append(1)
        if len(calls) == 2:  # the snapshot after the stream: a bug of ours, not Ollama's
            raise RuntimeError("probe broke")
        return {}

    monkeypatch.setattr(services, "recent_snapshot", snapshot)
    communicator = await connect(alice)
    frames = await send(communicator)
    await communicator.disconnect()

    assert frames[-1]["type"] == "chat.error"
    assert frames[-1]["code"] == "internal_error"
    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert (reply.status, reply.error_code) == ("failed", "internal_error")
    assert reply.content == text_of(frames) == "one two three"
    await sync_to_async(assert_nothing_orphaned)()


async def test_a_failed_flush_loses_nothing(alice, ollama, monkeypatch, settings):
    settings.CHAT_FLUSH_INTERVAL = 0.05
    ollama.script(tokens=[f"t{i} " for i in range(12)], token_delay=0.02)
    real = services._save_content
    failures: list[str] = []

    def flaky(message_id, content, *rest):
        if not failures:
            failures.append(content)
            raise OperationalError("the database went away")
        real(message_id, content, *rest)

    monkeypatch.setattr(services, "_save_content", flaky)
    communicator = await connect(alice)
    frames = await send(communicator)
    await communicator.disconnect()

    assert failures, "no flush was attempted"
    assert frames[-1]["type"] == "chat.done"
    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert reply.status == "complete"
    assert reply.content == "".join(f"t{i} " for i in range(12))


async def test_a_final_save_that_fails_is_retried_until_the_database_is_back(
    alice, ollama, monkeypatch
):
    ollama.script(tokens=["kept ", "safe"])
    real = services._save_final
    attempts = []

    def flaky(*args):
        attempts.append(args[2])
        if len(attempts) == 1:
            raise OperationalError("the database went away")
        real(*args)

    monkeypatch.setattr(services, "_save_final", flaky)
    communicator = await connect(alice)
    frames = await send(communicator)
    await communicator.disconnect()
    assert frames[-1]["type"] == "chat.done"

    reply_id = frames[-1]["message"]

    async def saved():
        return (await Message.objects.aget(pk=reply_id)).status == "complete"

    for task in list(services._background):
        await task
    assert await saved()
    assert attempts == ["complete", "complete"]
    assert (await Message.objects.aget(pk=reply_id)).content == "kept safe"


class _BrokenGate:
    max_concurrency = 1
    max_queue = 1

    def reserve(self, host, **owner):
        class Reservation:
            async def __aenter__(self):
                raise RedisConnectionError("Connection refused")

        return Reservation()

    async def stats(self, host):
        raise RedisConnectionError("Connection refused")


async def test_redis_down_at_the_gate_is_a_clear_error_and_saves_nothing(
    alice, ollama, monkeypatch
):
    monkeypatch.setattr(hosts, "get_gate", lambda: _BrokenGate())
    communicator = await connect(alice)
    frames = await send(communicator)
    # The socket stays usable.
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "pong"
    await communicator.disconnect()

    assert frames[-1]["type"] == "chat.error"
    assert frames[-1]["code"] == "queue_unavailable"
    assert frames[-1]["retry_after"] == 5
    assert not await Conversation.objects.filter(owner=alice).aexists()


async def test_an_error_before_the_generation_keeps_the_socket_open(alice, ollama, monkeypatch):
    def limits_down(user_id):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(services.limits, "check_now", limits_down)
    communicator = await connect(alice)
    frames = await send(communicator)
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "pong"
    await communicator.disconnect()
    assert frames == [
        {
            "type": "chat.error",
            "code": "redis_unavailable",
            "detail": "Redis is unreachable; retry in a moment.",
            "retry_after": 5,
        }
    ]


async def test_a_request_cancelled_while_queued_still_gets_a_reply_row(alice, ollama, settings):
    settings.OLLAMA_MAX_CONCURRENCY = 1
    gate = hosts.get_gate()
    async with gate.reserve(ollama.url) as held:
        await held.acquired()
        communicator = await connect(alice)
        await communicator.send_json_to({"type": "chat.send", "message": "waiting"})
        frames: list[dict] = []
        while not any(f["type"] == "chat.queued" for f in frames):
            frames.append(await communicator.receive_json_from(timeout=5))
        conversation = frames[0]["conversation"]
        await communicator.send_json_to({"type": "chat.stop", "conversation": conversation})
        frames += await frames_until_end(communicator)
        await communicator.disconnect()
    assert frames[-1]["type"] == "chat.cancelled"
    replies = [m async for m in Message.objects.filter(conversation_id=conversation)]
    assert [(m.role, m.status) for m in replies] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]
    assert ollama.generations == []  # it never reached Ollama


async def test_unexpected_errors_on_rest_are_json_not_html(auth_client, ollama, monkeypatch):
    def limits_down(user_id):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(services.limits, "check_now", limits_down)
    response = await sync_to_async(auth_client.post)("/api/chat/", {"message": "hi"}, format="json")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "redis_unavailable"
    assert response["Retry-After"] == "5"
