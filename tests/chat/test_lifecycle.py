"""A web process's heartbeat, the sweep of dead processes' replies, and the drain on SIGTERM.

The real signals and a real second process are exercised by tests/fullstack/; here the same
functions run in-process, on the embedded defaults and (second run) on PostgreSQL.
"""

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat import hosts, lifecycle, limits
from chat.errors import ChatRequestError
from chat.models import Conversation, Message, WebProcess
from tests.chat.test_consumer import connect, frames_until_end, text_of

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_lifecycle(monkeypatch):
    state = lifecycle._State()
    monkeypatch.setattr(lifecycle, "_state", state)
    yield
    if state.heart is not None:
        state.heart.stopping.set()
        state.heart.join()


def process(alive: bool) -> WebProcess:
    beat = timezone.now() - (timedelta(0) if alive else timedelta(minutes=5))
    return WebProcess.objects.create(
        pk=uuid.uuid4(), hostname="h", pid=1, started_at=beat, heartbeat_at=beat
    )


def streaming_reply(conversation, process_id, content="half"):
    """A reply left streaming, last saved long ago (its process stopped saving it)."""
    Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content=content,
        process=process_id,
    )
    Message.objects.filter(pk=reply.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    return reply


def test_a_reply_its_process_still_saves_is_not_swept(user, settings):
    # After a database outage a loaded process may beat late while its replies are saved.
    settings.CHAT_HEARTBEAT_SECONDS = 1
    conversation = Conversation.objects.create(owner=user)
    late = streaming_reply(conversation, process(alive=False).pk)
    Message.objects.filter(pk=late.pk).update(content="more", updated_at=timezone.now())
    assert lifecycle.sweep_dead_processes() == []


def test_the_replies_of_a_dead_process_are_interrupted_keeping_their_text(user, settings):
    settings.CHAT_HEARTBEAT_SECONDS = 1
    conversation = Conversation.objects.create(owner=user)
    dead = streaming_reply(conversation, process(alive=False).pk, "half a")
    vanished = streaming_reply(conversation, uuid.uuid4())  # its row is gone too
    alive = streaming_reply(conversation, process(alive=True).pk)
    untracked = streaming_reply(conversation, None)

    swept = lifecycle.sweep_dead_processes()

    assert sorted(swept) == sorted(
        [(str(conversation.pk), dead.pk), (str(conversation.pk), vanished.pk)]
    )
    for message, status in [
        (dead, "interrupted"),
        (vanished, "interrupted"),
        (alive, "streaming"),
        (untracked, "streaming"),  # left to the slow stale sweep
    ]:
        message.refresh_from_db()
        assert message.status == status
    dead.refresh_from_db()
    assert (dead.content, dead.error_code) == ("half a", "interrupted")
    assert lifecycle.sweep_dead_processes() == []  # each reply is reported once


def test_the_beat_creates_and_renews_the_process_row():
    lifecycle.beat()
    first = WebProcess.objects.get(pk=lifecycle.PROCESS_ID).heartbeat_at
    lifecycle.beat()
    row = WebProcess.objects.get(pk=lifecycle.PROCESS_ID)
    assert row.heartbeat_at >= first
    assert row.started_at <= first


@pytest.mark.asyncio
async def test_the_limits_stop_counting_a_dead_process_reply(user, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 1
    conversation = await Conversation.objects.acreate(owner=user)
    dead = await sync_to_async(process)(alive=False)
    await sync_to_async(streaming_reply)(conversation, dead.pk)
    with pytest.raises(ChatRequestError) as refused:
        await limits.check(user.pk)
    assert refused.value.code == "too_many_generations"

    await sync_to_async(lifecycle.sweep_dead_processes)()
    await limits.check(user.pk)


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


@pytest.mark.asyncio
async def test_a_beating_process_tags_its_replies_and_a_sweep_elsewhere_announces_them(
    alice, ollama, settings
):
    settings.CHAT_FLUSH_INTERVAL = 3600  # the reply is not saved again while the test looks
    await lifecycle.start()
    try:
        ollama.script(tokens=[f"w{i} " for i in range(200)], token_delay=0.02)
        communicator = await connect(alice)
        await communicator.send_json_to({"type": "chat.send", "message": "long"})
        frames: list[dict] = []
        while not any(f["type"] == "chat.token" for f in frames):
            frames.append(await communicator.receive_json_from(timeout=5))
        reply = await Message.objects.aget(pk=frames[-1]["message"])
        assert reply.process == lifecycle.PROCESS_ID

        # As another process sees this one once its heartbeat stops.
        await WebProcess.objects.filter(pk=lifecycle.PROCESS_ID).aupdate(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
        await Message.objects.filter(pk=reply.pk).aupdate(
            updated_at=timezone.now() - timedelta(minutes=5)
        )
        swept = await sync_to_async(lifecycle.sweep_dead_processes)()
        await lifecycle.announce_interrupted(swept)
        frames += await frames_until_end(communicator)
        assert frames[-1] == {
            "type": "chat.error",
            "conversation": str(reply.conversation_id),
            "message": reply.pk,
            "code": "interrupted",
            "detail": lifecycle.INTERRUPTED_DETAIL,
        }
        await communicator.disconnect()
    finally:
        await lifecycle.stop_beating()


@pytest.mark.asyncio
async def test_drain_interrupts_what_outlives_the_grace_and_refuses_new_work(
    alice, ollama, settings
):
    settings.OLLAMA_MAX_CONCURRENCY = 1
    ollama.script(tokens=[f"w{i} " for i in range(300)], token_delay=0.02)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "long"})
    frames: list[dict] = []
    while len("".join(f.get("content", "") for f in frames)) < 12:
        frames.append(await communicator.receive_json_from(timeout=5))

    await lifecycle.drain(grace=0)

    frames += await frames_until_end(communicator)
    assert frames[-1]["type"] == "chat.error"
    assert frames[-1]["code"] == "interrupted"
    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert (reply.status, reply.error_code) == ("interrupted", "interrupted")
    assert reply.content.startswith(text_of(frames)) and reply.content
    assert (await hosts.get_gate().stats(ollama.url)).in_flight == 0  # the slot is released
    await ollama.await_until(lambda: ollama.last_generation.finished, timeout=5)
    assert ollama.last_generation.client_disconnected

    await communicator.send_json_to({"type": "chat.send", "message": "another"})
    refused = await communicator.receive_json_from(timeout=5)
    assert (refused["code"], refused["retry_after"]) == ("shutting_down", 5)
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_drain_lets_a_reply_finish_within_the_grace(alice, ollama):
    ollama.script(tokens=[f"w{i} " for i in range(20)], token_delay=0.01)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "chat.send", "message": "short"})
    first = await communicator.receive_json_from(timeout=5)

    await lifecycle.drain(grace=60)  # returns as soon as the reply is done

    frames = [first, *await frames_until_end(communicator)]
    assert frames[-1]["type"] == "chat.done"
    assert lifecycle.running_generations() == 0
    await communicator.disconnect()


def test_ready_says_shutting_down(client, ollama, monkeypatch):
    monkeypatch.setattr(lifecycle._state, "accepting", False)
    response = client.get("/ready")
    assert response.status_code == 503
    assert "shutting_down" in response.json()["failing"]


def test_rest_chat_is_refused_while_shutting_down(auth_client, ollama, monkeypatch):
    monkeypatch.setattr(lifecycle._state, "accepting", False)
    response = auth_client.post("/api/chat/", {"message": "hi"}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "shutting_down"
    assert response["Retry-After"] == "5"
    assert not Message.objects.exists()


def test_a_heart_sweeps_only_after_beating_on_time_longer_than_death_takes(
    user, settings, monkeypatch
):
    # After the database (or this process) stalled, every process gets the time to beat again
    # before one of them takes another's replies for a dead process's.
    settings.CHAT_HEARTBEAT_SECONDS = 1
    conversation = Conversation.objects.create(owner=user)
    other = process(alive=False)  # silent as seen from here: the database was just away
    reply = streaming_reply(conversation, other.pk)
    clock = [1000.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    heart = lifecycle._Heart(loop=None)  # type: ignore[arg-type]  # nothing to announce to

    def status():
        reply.refresh_from_db()
        return reply.status

    for _ in range(lifecycle.DEAD_AFTER_BEATS + 1):
        heart.tick()
        clock[0] += 1
    assert status() == "streaming"

    # A beat that failed (the database went away again) starts the streak over.
    real_beat, down = lifecycle.beat, [True]

    def beat():
        if down[0]:
            raise RuntimeError("the database is down")
        real_beat()

    monkeypatch.setattr(lifecycle, "beat", beat)
    heart.tick()
    down[0] = False
    for _ in range(lifecycle.DEAD_AFTER_BEATS + 1):
        clock[0] += 1
        heart.tick()
    assert status() == "streaming"

    monkeypatch.setattr(lifecycle, "announce_interrupted", None)  # not called without a loop
    clock[0] += 1
    heart.stopping.set()  # a stopping heart marks but does not announce
    heart.tick()
    assert status() == "interrupted"
