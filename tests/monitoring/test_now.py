"""Who is on the GPU now (`GET /api/monitoring/now/`, the socket's `monitoring.now` frames) and
staff's cancel (`POST /api/monitoring/now/cancel/`), on the embedded defaults: one process, its
own gate, Channels' in-memory layer.

What each kind of user sees is asserted on reservations made at the real gate for conversations
in the database (exact figures); the cancels run real generations against the Ollama double,
caught mid-reply (`hold_after`) or queued behind a held slot, on every transport. Waits are for
events (a frame, a row, the double's state), never for time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from chat import abandon, hosts, lifecycle, runs, services
from chat.models import Conversation, Message
from config.asgi import application
from monitoring import now_feed
from monitoring.selectors import now
from tests.support.live import bearer
from tests.support.websocket import Communicator

pytestmark = pytest.mark.django_db(transaction=True)

STAFF_EMAIL = "admin@example.com"
MODEL = "llama3.2:3b"
TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}


@pytest.fixture(autouse=True)
def fresh_lifecycle(monkeypatch):
    monkeypatch.setattr(lifecycle, "_state", lifecycle._State())


@pytest.fixture
def one_slot(settings, ollama):
    settings.OLLAMA_MAX_CONCURRENCY = 1
    settings.CHAT_FLUSH_INTERVAL = 0.05
    return ollama


@pytest.fixture
def staff(make_user):
    return make_user(STAFF_EMAIL, is_staff=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice@example.com")


@pytest.fixture
def bob(make_user):
    return make_user("bob@example.com")


def is_held(double) -> bool:
    """The double's latest generation is paused by its script's `hold_after`."""
    generation = double.last_generation
    return generation is not None and generation.held


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


async def aget(user, url: str = "/api/monitoring/now/"):
    return await sync_to_async(client_for(user).get)(url)


async def acancel(user, conversation):
    return await sync_to_async(client_for(user).post)(
        "/api/monitoring/now/cancel/", {"conversation": str(conversation)}, format="json"
    )


# --------------------------------------------------------------------------- who sees what


def conversation_of(owner, *, tokens: int | None = None) -> Conversation:
    """A conversation with its question, and a reply streaming `tokens` so far (if given)."""
    conversation = Conversation.objects.create(owner=owner, title="t", model="")
    question = Message.objects.create(
        conversation=conversation, role="user", content="hi", model=MODEL
    )
    if tokens is not None:
        Message.objects.create(
            conversation=conversation,
            parent=question,
            role="assistant",
            status="streaming",
            model=MODEL,
            streamed_tokens=tokens,
        )
    return conversation


@pytest.fixture
async def busy_gate(one_slot, alice, bob):
    """Alice's generation holds the slot (42 tokens flushed 10 s after it got it); Bob's waits."""
    gate = hosts.get_gate()
    host = one_slot.url
    running = await sync_to_async(conversation_of)(alice, tokens=42)
    queued = await sync_to_async(conversation_of)(bob)
    async with (
        gate.reserve(host, user=str(alice.pk), label=str(running.pk)) as held,
        gate.reserve(host, user=str(bob.pk), label=str(queued.pk)) as waiting,
    ):
        await held.acquired()
        assert waiting.position == 1
        since = (await gate.snapshot(host)).holding[0].since
        flushed = now._moment(since) + timedelta(seconds=10)
        await Message.objects.filter(conversation=running, role="assistant").aupdate(
            updated_at=flushed
        )
        yield {"host": host, "running": running, "queued": queued, "since": since}


async def test_staff_see_every_user_running_and_waiting(busy_gate, staff, alice, bob):
    response = await aget(staff)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["staff"] is True
    [host] = body["hosts"]
    assert (host["host"], host["max_concurrency"]) == (busy_gate["host"], 1)
    [running] = host["running"]
    assert running["conversation"] == str(busy_gate["running"].pk)
    assert (running["user"], running["user_email"]) == (alice.pk, alice.email)
    assert (running["model"], running["tokens"]) == (MODEL, 42)
    assert running["tokens_per_second"] == pytest.approx(4.2, abs=0.01)
    assert running["message"] is not None
    [queued] = host["queue"]
    assert queued["conversation"] == str(busy_gate["queued"].pk)
    assert (queued["user"], queued["user_email"], queued["position"]) == (bob.pk, bob.email, 1)
    assert queued["model"] == MODEL
    assert queued["estimated_wait_seconds"] is None  # no reply of that model recorded yet
    assert (host["others_running"], host["others_queued"]) == (0, 0)


async def test_a_user_sees_their_own_entries_and_only_counts_of_the_others(busy_gate, alice, bob):
    mine = (await aget(alice)).json()
    assert mine["staff"] is False
    [host] = mine["hosts"]
    assert [r["user_email"] for r in host["running"]] == [alice.email]
    assert host["queue"] == []
    assert (host["others_running"], host["others_queued"]) == (0, 1)

    theirs = (await aget(bob)).json()
    [host] = theirs["hosts"]
    assert host["running"] == []
    assert [(q["user_email"], q["position"]) for q in host["queue"]] == [(bob.email, 1)]
    assert (host["others_running"], host["others_queued"]) == (1, 0)
    assert alice.email not in json.dumps(theirs)


def test_anonymous_gets_401(one_slot):
    response = APIClient().get("/api/monitoring/now/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    response = APIClient().post("/api/monitoring/now/cancel/", {}, format="json")
    assert response.status_code == 401


def test_an_idle_gateway_lists_its_hosts_empty(one_slot, alice):
    body = client_for(alice).get("/api/monitoring/now/").json()
    assert [(h["host"], h["running"], h["queue"]) for h in body["hosts"]] == [
        (one_slot.url, [], [])
    ]


# --------------------------------------------------------------------------- staff's cancel


def test_only_staff_may_cancel(one_slot, alice):
    conversation = conversation_of(alice)
    response = client_for(alice).post(
        "/api/monitoring/now/cancel/", {"conversation": str(conversation.pk)}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_cancel_of_nothing(one_slot, staff, alice):
    client = client_for(staff)
    missing = client.post(
        "/api/monitoring/now/cancel/",
        {"conversation": "00000000-0000-4000-8000-000000000000"},
        format="json",
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    idle = client.post(
        "/api/monitoring/now/cancel/",
        {"conversation": str(conversation_of(alice).pk)},
        format="json",
    )
    assert (idle.status_code, idle.json()["code"]) == (409, "not_generating")
    bad = client.post("/api/monitoring/now/cancel/", {"conversation": "x"}, format="json")
    assert bad.status_code == 400


async def connect(user) -> Communicator:
    socket = Communicator(
        application,
        "/ws/chat/",
        headers=[(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())],
    )
    connected, code = await socket.connect()
    assert connected, code
    return socket


async def text_until(socket, text: str) -> None:
    """Read the socket's token frames until the reply's text so far is `text`."""
    have = ""
    while have != text:
        frame = await socket.receive_json_from()
        if frame["type"] == "chat.token":
            have = have[: frame["offset"]] + frame["content"]
        assert frame["type"] not in TERMINAL, frame


async def frames_until(socket, kinds: set[str]) -> list[dict]:
    frames: list[dict] = []
    while not frames or frames[-1]["type"] not in kinds:
        frames.append(await socket.receive_json_from())
    return frames


async def assert_stopped_by_staff(conversation: str, message: int | None) -> Message:
    reply = await Message.objects.filter(conversation_id=conversation, role="assistant").alast()
    assert reply is not None
    assert message is None or reply.pk == message
    assert (reply.status, reply.error_code) == ("cancelled", "stopped_by_staff")
    assert reply.error == f"Stopped by staff ({STAFF_EMAIL})."
    conversation_row = await Conversation.objects.aget(pk=conversation)
    assert conversation_row.generating_since is None  # the conversation is free again
    return reply


async def test_staff_cancel_a_running_websocket_generation(one_slot, staff, alice):
    held = one_slot.script(tokens=["one ", "two ", "three"], hold_after=2)
    socket = await connect(alice)
    await socket.send_json_to({"type": "chat.send", "message": "count"})
    started = (await frames_until(socket, {"chat.started"}))[-1]
    await text_until(socket, "one two ")  # all Ollama sends before its pause

    response = await acancel(staff, started["conversation"])
    assert response.status_code == 202, response.content
    assert response.json()["here"] is True
    end = (await frames_until(socket, TERMINAL))[-1]
    one_slot.release(held)
    await socket.disconnect()

    assert end == {
        "type": "chat.cancelled",
        "conversation": started["conversation"],
        "message": started["message"],
        "length": len("one two "),
        "code": "stopped_by_staff",
        "detail": f"Stopped by staff ({STAFF_EMAIL}).",
    }
    reply = await assert_stopped_by_staff(started["conversation"], started["message"])
    assert reply.content == "one two "
    assert await one_slot.await_until(lambda: one_slot.last_generation.finished, 10)
    assert one_slot.last_generation.client_disconnected  # Ollama was hung up on


async def test_staff_cancel_a_queued_websocket_generation(one_slot, staff, alice, bob):
    gate = hosts.get_gate()
    async with gate.reserve(one_slot.url, user=str(bob.pk), label="someone") as slot:
        await slot.acquired()
        socket = await connect(alice)
        await socket.send_json_to({"type": "chat.send", "message": "waiting"})
        frames = await frames_until(socket, {"chat.queued"})
        conversation = frames[0]["conversation"]

        response = await acancel(staff, conversation)
        assert response.status_code == 202, response.content
        end = (await frames_until(socket, TERMINAL))[-1]
        await socket.disconnect()
        snapshot = await gate.snapshot(one_slot.url)

    assert (end["type"], end["code"], end["length"]) == ("chat.cancelled", "stopped_by_staff", 0)
    assert snapshot.waiting == ()  # it left the queue at once
    await assert_stopped_by_staff(conversation, end["message"])
    assert one_slot.generations == []  # it never reached Ollama


def _post_in_thread(client: APIClient, url: str, body: dict) -> tuple[threading.Thread, list]:
    """A blocking REST request in a thread of its own (it generates on its own event loop)."""
    result: list = []

    def run() -> None:
        from django.db import connection

        try:
            result.append(client.post(url, body, format="json"))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_staff_cancel_a_running_rest_generation(one_slot, staff, alice):
    held = one_slot.script(tokens=["kept ", "so ", "far"], hold_after=2)
    thread, result = _post_in_thread(client_for(alice), "/api/chat/", {"message": "count"})
    assert one_slot.wait_until(lambda: is_held(one_slot), 10)
    conversation = Conversation.objects.get(owner=alice)

    response = client_for(staff).post(
        "/api/monitoring/now/cancel/", {"conversation": str(conversation.pk)}, format="json"
    )
    thread.join(30)
    one_slot.release(held)

    assert response.status_code == 202, response.content
    [answer] = result
    assert answer.status_code == 409
    body = answer.json()
    assert (body["code"], body["detail"]) == (
        "stopped_by_staff",
        f"Stopped by staff ({STAFF_EMAIL}).",
    )
    # What the gateway had read of the two tokens sent when the stop came, kept.
    assert body["conversation"] == str(conversation.pk)
    assert body["partial_response"] in {"kept ", "kept so "}
    reply = Message.objects.get(pk=body["message"])
    assert (reply.status, reply.error_code, reply.content) == (
        "cancelled",
        "stopped_by_staff",
        body["partial_response"],
    )


def test_staff_cancel_a_queued_rest_generation(one_slot, staff, alice, bob):
    held = one_slot.script(tokens=["a", "b"], hold_after=1)
    first, first_result = _post_in_thread(client_for(bob), "/api/chat/", {"message": "first"})
    assert one_slot.wait_until(lambda: is_held(one_slot), 10)
    thread, result = _post_in_thread(client_for(alice), "/api/chat/", {"message": "second"})
    gate = hosts.get_gate()

    def queued() -> bool:
        from asgiref.sync import async_to_sync

        return len(async_to_sync(gate.snapshot)(one_slot.url).waiting) == 1

    assert one_slot.wait_until(
        lambda: queued() and Conversation.objects.filter(owner=alice).exists(), 10
    )
    conversation = Conversation.objects.get(owner=alice)
    response = client_for(staff).post(
        "/api/monitoring/now/cancel/", {"conversation": str(conversation.pk)}, format="json"
    )
    thread.join(30)
    one_slot.release(held)
    first.join(30)

    assert response.status_code == 202, response.content
    [answer] = result
    assert (answer.status_code, answer.json()["code"]) == (409, "stopped_by_staff")
    assert answer.json()["partial_response"] == ""
    assert first_result[0].status_code == 200  # Bob's went on
    assert len(one_slot.generations) == 1  # Alice's never reached Ollama


def sse_events(lines) -> list:
    events = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


@pytest.mark.integration
def test_staff_cancel_sse_running_and_queued_on_daphne(daphne, staff, alice, bob, ollama_double):
    """In a real Daphne: Bob's SSE stream holds the slot, Alice's waits; staff stop Alice's
    queued one, then Bob's running one. Each stream hears `cancelled` and ends with [DONE]."""
    held = ollama_double.script(tokens=["one ", "two ", "three"], hold_after=2)
    streams: dict[str, list] = {}

    def stream(user, name: str, message: str) -> threading.Thread:
        lines: list = []
        streams[name] = lines

        def run() -> None:
            with httpx.stream(
                "POST",
                f"{daphne.url}/api/chat/stream/",
                json={"message": message},
                headers=bearer(user),
                timeout=30,
            ) as response:
                for line in response.iter_lines():
                    lines.append(line)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def event(name: str, predicate) -> dict:
        def found() -> dict | None:
            events = [e for e in sse_events(list(streams[name])) if isinstance(e, dict)]
            return next((e for e in events if predicate(e)), None)

        assert ollama_double.wait_until(lambda: found() is not None, 30), streams[name]
        found_event = found()
        assert found_event is not None
        return found_event

    running = stream(bob, "bob", "count")
    started = event("bob", lambda e: e.get("status") == "started")
    assert ollama_double.wait_until(
        lambda: (
            "".join(
                e["content"]
                for e in sse_events(list(streams["bob"]))
                if isinstance(e, dict) and e["type"] == "content"
            )
            == "one two "
        ),
        30,
    )
    queued = stream(alice, "alice", "wait")
    accepted = event("alice", lambda e: e.get("status") == "accepted")
    event("alice", lambda e: e["type"] == "queued")

    staff_client = httpx.Client(base_url=daphne.url, headers=bearer(staff), timeout=30)
    seen = staff_client.get("/api/monitoring/now/").json()["hosts"][0]
    assert [r["user_email"] for r in seen["running"]] == [bob.email]
    assert [(q["user_email"], q["position"]) for q in seen["queue"]] == [(alice.email, 1)]

    answer = staff_client.post(
        "/api/monitoring/now/cancel/", json={"conversation": accepted["conversation"]}
    )
    assert answer.status_code == 202, answer.text
    queued.join(30)
    answer = staff_client.post(
        "/api/monitoring/now/cancel/", json={"conversation": started["conversation"]}
    )
    assert answer.status_code == 202, answer.text
    running.join(30)
    ollama_double.release(held)

    for name, conversation in (
        ("alice", accepted["conversation"]),
        ("bob", started["conversation"]),
    ):
        events = sse_events(streams[name])
        assert events[-1] == "[DONE]", events
        cancelled = events[-2]
        assert (cancelled["status"], cancelled["code"]) == ("cancelled", "stopped_by_staff")
        assert cancelled["detail"] == f"Stopped by staff ({STAFF_EMAIL})."
        reply = Message.objects.get(pk=cancelled["message"])
        assert (reply.status, reply.error_code) == ("cancelled", "stopped_by_staff")
        assert str(reply.conversation_id) == conversation
    assert Message.objects.get(pk=started["message"]).content == "one two "
    assert ollama_double.wait_until(lambda: ollama_double.last_generation.finished, 30)
    assert ollama_double.last_generation.client_disconnected
    assert len(ollama_double.generations) == 1  # Alice's never reached Ollama


@pytest.mark.integration
def test_staff_cancel_an_ollama_proxy_stream_on_daphne(daphne, staff, alice, ollama_double):
    held = ollama_double.script(tokens=["one ", "two ", "three"], hold_after=2)
    lines: list = []

    def run() -> None:
        with httpx.stream(
            "POST",
            f"{daphne.url}/ollama/api/chat",
            json={"model": MODEL, "messages": [{"role": "user", "content": "count"}]},
            headers=bearer(alice),
            timeout=30,
        ) as response:
            for line in response.iter_lines():
                lines.append(line)

    thread = threading.Thread(target=run)
    thread.start()
    assert ollama_double.wait_until(lambda: len([x for x in list(lines) if x]) == 2, 30)
    conversation = Conversation.objects.get(owner=alice)
    answer = httpx.post(
        f"{daphne.url}/api/monitoring/now/cancel/",
        json={"conversation": str(conversation.pk)},
        headers=bearer(staff),
        timeout=30,
    )
    thread.join(30)
    ollama_double.release(held)

    assert answer.status_code == 202, answer.text
    chunks = [json.loads(line) for line in lines if line]
    assert "".join(c["message"]["content"] for c in chunks[:-1]) == "one two "
    assert chunks[-1] == {"error": f"Stopped by staff ({STAFF_EMAIL})."}
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert (reply.status, reply.error_code) == ("cancelled", "stopped_by_staff")


# --------------------------------------------------------------------------- tokens so far


async def test_each_flush_saves_the_tokens_so_far(one_slot, alice):
    conversation = await sync_to_async(conversation_of)(alice, tokens=0)
    row = await Message.objects.aget(conversation=conversation, role="assistant")
    reply = services._Reply(row.pk, conversation.pk)
    for text in ("a", "b", "c"):
        reply.add(text)
    reply._last_flush -= 1.0  # CHAT_FLUSH_INTERVAL has passed since the last save

    await reply.maybe_flush()
    await row.arefresh_from_db()
    assert (row.content, row.streamed_tokens) == ("abc", 3)

    reply.add("d")
    await reply.finish(Message.Status.COMPLETE)
    await row.arefresh_from_db()
    assert (row.content, row.streamed_tokens, row.status) == ("abcd", 4, "complete")


# --------------------------------------------------------------------------- live frames


async def monitoring_socket(user) -> Communicator:
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    socket = Communicator(
        application,
        "/ws/monitoring/",
        headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)],
    )
    connected, code = await socket.connect()
    assert connected, code
    assert (await socket.receive_json_from())["type"] == "monitoring.snapshot"
    return socket


async def now_frames_until(socket, predicate) -> dict:
    while True:
        frame = await socket.receive_json_from()
        if frame["type"] == "monitoring.now" and predicate(frame["now"]):
            return frame["now"]


async def test_the_socket_pushes_who_is_on_the_gpu(one_slot, staff, alice, bob):
    held = one_slot.script(tokens=["x", "y"], hold_after=1)
    watcher = await monitoring_socket(staff)
    await watcher.send_json_to({"type": "now.subscribe"})
    idle = await now_frames_until(watcher, lambda n: True)
    assert idle["staff"] is True and idle["hosts"][0]["running"] == []

    bobs = await monitoring_socket(bob)
    await bobs.send_json_to({"type": "now.subscribe"})
    await now_frames_until(bobs, lambda n: True)

    socket = await connect(alice)
    await socket.send_json_to({"type": "chat.send", "message": "go"})
    started = (await frames_until(socket, {"chat.started"}))[-1]
    seen = await now_frames_until(watcher, lambda n: n["hosts"][0]["running"])
    [running] = seen["hosts"][0]["running"]
    assert (running["user_email"], running["conversation"]) == (
        alice.email,
        started["conversation"],
    )
    counted = await now_frames_until(bobs, lambda n: n["hosts"][0]["others_running"] == 1)
    assert counted["hosts"][0]["running"] == [] and alice.email not in json.dumps(counted)

    one_slot.release(held)
    await frames_until(socket, TERMINAL)
    await now_frames_until(watcher, lambda n: n["hosts"][0]["running"] == [])
    for each in (socket, watcher, bobs):
        await each.disconnect()
    assert not now_feed.feed().subscribers


# --------------------------------------------------------------------------- abandoned


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_an_abandoned_generation_gives_its_slot_to_the_users_waiting(
    one_slot, alice, bob, settings, monkeypatch
):
    settings.CHAT_CANCEL_ABANDONED = 30
    clock = FakeClock()
    monkeypatch.setattr(abandon, "clock", clock)
    monkeypatch.setattr(abandon, "CHECK_SECONDS", 0.01)
    declined = asyncio.Event()
    real_others_waiting = abandon.others_waiting

    async def others_waiting(host, user_id):
        waiting = await real_others_waiting(host, user_id)
        if not waiting:
            declined.set()
        return waiting

    monkeypatch.setattr(abandon, "others_waiting", others_waiting)
    held = one_slot.script(tokens=["one ", "two ", "three"], hold_after=2)

    socket = await connect(alice)
    await socket.send_json_to({"type": "chat.send", "message": "long"})
    started = (await frames_until(socket, {"chat.started"}))[-1]
    await text_until(socket, "one two ")
    conversation = started["conversation"]
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(runs.stream_group(conversation), listener)
    assert await one_slot.await_until(lambda: is_held(one_slot), 10)
    await socket.disconnect()  # every window following it has closed

    # Long abandoned, but nobody else waits: it goes on.
    clock.now += abandon.GONE_AFTER + 31
    await asyncio.wait_for(declined.wait(), 10)
    assert (await Message.objects.aget(pk=started["message"])).status == "streaming"

    # Bob waits for the slot: it is given up, the reply kept as cancelled.
    # (The watcher may see Bob's place in the queue before Bob hears of it: he may get the
    # slot without ever being told he waits.)
    bobs = await connect(bob)
    await bobs.send_json_to({"type": "chat.send", "message": "my turn"})
    while True:
        frame = await asyncio.wait_for(layer.receive(listener), 10)
        if frame["type"] in TERMINAL:
            break
    one_slot.release(held)
    assert (frame["type"], frame["code"]) == ("chat.cancelled", "abandoned")
    reply = await Message.objects.aget(pk=started["message"])
    assert (reply.status, reply.error_code, reply.content) == ("cancelled", "abandoned", "one two ")
    assert (await frames_until(bobs, {"chat.started"}))[-1]["type"] == "chat.started"
    await frames_until(bobs, TERMINAL)
    await bobs.disconnect()


async def test_a_followed_generation_is_not_abandoned(one_slot, alice, bob, settings, monkeypatch):
    settings.CHAT_CANCEL_ABANDONED = 30
    clock = FakeClock()
    monkeypatch.setattr(abandon, "clock", clock)
    monkeypatch.setattr(abandon, "CHECK_SECONDS", 0.01)
    checked = asyncio.Event()
    real_last_seen = abandon.last_seen

    async def last_seen(conversation_id):  # the watcher read the lease: it decides on it
        value = await real_last_seen(conversation_id)
        checked.set()
        return value

    monkeypatch.setattr(abandon, "last_seen", last_seen)
    held = one_slot.script(tokens=["one ", "two "], hold_after=1)
    socket = await connect(alice)
    await socket.send_json_to({"type": "chat.send", "message": "long"})
    started = (await frames_until(socket, {"chat.started"}))[-1]
    bobs = await connect(bob)
    await bobs.send_json_to({"type": "chat.send", "message": "my turn"})
    await frames_until(bobs, {"chat.queued"})

    # Long after it started, Alice's socket is still there and renews its lease (without an
    # await in between: the watcher reads the lease only once it is renewed).
    clock.now += abandon.GONE_AFTER + 31
    abandon.touch([started["conversation"]])
    for _ in range(3):
        checked.clear()
        await asyncio.wait_for(checked.wait(), 10)
    assert (await Message.objects.aget(pk=started["message"])).status == "streaming"
    one_slot.release(held)
    assert (await frames_until(socket, TERMINAL))[-1]["type"] == "chat.done"
    await frames_until(bobs, TERMINAL)
    for each in (socket, bobs):
        await each.disconnect()


def test_when_the_last_socket_went():
    assert abandon.gone_since(100.0, 500.0) == 100.0 + abandon.GONE_AFTER
    assert abandon.gone_since(None, 500.0) == 500.0


# --------------------------------------------------------------------------- the pages


def test_the_admin_page_is_for_staff_and_linked_from_the_admin_index(one_slot, staff, alice):
    client = Client()
    client.force_login(alice)
    assert client.get("/admin/monitoring/now/").status_code == 302  # to the login page

    client.force_login(staff)
    page = client.get("/admin/monitoring/now/")
    assert page.status_code == 200
    assert b'id="now-panel"' in page.content and b'data-staff="true"' in page.content
    assert b'href="/admin/monitoring/now/"' in client.get("/admin/").content


def test_the_monitoring_page_has_the_panel(one_slot, alice):
    client = Client()
    client.force_login(alice)
    page = client.get("/monitoring/")
    assert b'id="now-panel"' in page.content and b'data-staff="false"' in page.content
    assert b"monitoring/now.js" in page.content
