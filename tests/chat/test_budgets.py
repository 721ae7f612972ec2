"""Daily token budgets (chat/budgets.py): the day in TIME_ZONE and what counts, then the 429
`budget_exhausted` on every transport (REST, SSE, WebSocket, message actions, /ollama/) across
a day boundary on a pinned clock, the per-user override, the exemption, and the `usage` of
GET /api/usage/."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.db import connections
from django.test import AsyncClient
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from chat import budgets
from chat.errors import ChatRequestError
from chat.models import Conversation, Message
from config.asgi import application
from tests.support.settings_process import django_shell
from tests.support.websocket import Communicator

CHAT = "/api/chat/"
STREAM = "/api/chat/stream/"
PROXY_CHAT = "/ollama/api/chat"
USAGE = "/api/usage/"

# A minute before midnight (UTC, the default TIME_ZONE), and midnight itself.
BEFORE_MIDNIGHT = datetime(2030, 6, 30, 23, 59, tzinfo=UTC)
MIDNIGHT = datetime(2030, 7, 1, tzinfo=UTC)


class Clock:
    """django.utils.timezone.now, pinned: what the budget, and every timestamp saved, read."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    pinned = Clock(BEFORE_MIDNIGHT)
    monkeypatch.setattr(timezone, "now", pinned)
    return pinned


def spend(user, tokens: int | None, at: datetime, **fields) -> Message:
    """A question and its reply of `tokens` generated tokens, both created `at`."""
    conversation = Conversation.objects.create(owner=user)
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        eval_count=tokens,
        **{"status": "complete", **fields},
    )
    Message.objects.filter(pk__in=[question.pk, reply.pk]).update(created_at=at)
    return reply


def saved_messages(user) -> int:
    return Message.objects.filter(conversation__owner=user).count()


def assert_exhausted(body: dict, *, used: int, budget: int, resets_at: str) -> None:
    assert body["code"] == "budget_exhausted", body
    assert body["used"] == used and body["budget"] == budget
    assert body["resets_at"] == resets_at
    assert f"{budget:,}" in body["detail"] and "resets at 00:00 (UTC)" in body["detail"]


# --------------------------------------------------------------------------- the day


def test_the_day_is_the_calendar_day_of_time_zone(settings):
    start, end = budgets.day_bounds(BEFORE_MIDNIGHT)
    assert (start, end) == (datetime(2030, 6, 30, tzinfo=UTC), MIDNIGHT)
    assert budgets.day_bounds(MIDNIGHT)[0] == MIDNIGHT

    settings.TIME_ZONE = "Europe/Paris"  # UTC+2 in summer: 23:59 UTC is already tomorrow
    paris = ZoneInfo("Europe/Paris")
    start, end = budgets.day_bounds(BEFORE_MIDNIGHT)
    assert start == datetime(2030, 7, 1, tzinfo=paris) == datetime(2030, 6, 30, 22, tzinfo=UTC)
    assert end == datetime(2030, 7, 2, tzinfo=paris)

    settings.TIME_ZONE = "America/New_York"  # the day clocks go forward has 23 hours
    start, end = budgets.day_bounds(datetime(2030, 3, 10, 12, tzinfo=UTC))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)
    assert budgets.isoformat(end) == "2030-03-11T00:00:00-04:00"


@pytest.mark.django_db
def test_todays_tokens_count_every_status_and_nothing_else(user, make_user, settings):
    start, end = budgets.day_bounds(BEFORE_MIDNIGHT)
    spend(user, 1000, start - timedelta(seconds=1))  # yesterday
    spend(user, 100, start)
    spend(user, 20, BEFORE_MIDNIGHT, status="cancelled", prompt_eval_count=7)
    spend(user, 3, BEFORE_MIDNIGHT, status="failed", error_code="ollama_stream_error")
    spend(user, 4, BEFORE_MIDNIGHT, status="interrupted", error_code="interrupted")
    # Stopped before Ollama's last chunk, so never counted by it: its text is, as chat.context
    # estimates it (ceil(characters / 4)).
    spend(user, None, BEFORE_MIDNIGHT, status="cancelled", content="x" * 9)
    spend(user, 500, MIDNIGHT)  # tomorrow
    spend(make_user("bob@example.com"), 10_000, BEFORE_MIDNIGHT)  # someone else's
    assert budgets.tokens_used(user.pk, start, end) == 100 + 20 + 3 + 4 + 3

    settings.CHAT_BUDGET_COUNTS_PROMPT = True
    assert budgets.tokens_used(user.pk, start, end) == 130 + 7


@pytest.mark.django_db
def test_a_question_is_not_counted_only_replies(user):
    spend(user, 0, BEFORE_MIDNIGHT)
    Message.objects.filter(role="user").update(content="a long question " * 100)
    assert budgets.tokens_used(user.pk, *budgets.day_bounds(BEFORE_MIDNIGHT)) == 0


@pytest.mark.django_db
def test_check_across_midnight(user, settings):
    settings.CHAT_DAILY_TOKEN_BUDGET = 100
    spend(user, 99, BEFORE_MIDNIGHT)
    budgets.check(user.pk, BEFORE_MIDNIGHT)  # one token left: allowed
    spend(user, 1, BEFORE_MIDNIGHT)
    with pytest.raises(ChatRequestError) as refused:
        budgets.check(user.pk, BEFORE_MIDNIGHT)
    error = refused.value
    assert (error.code, error.status, error.retry_after_seconds) == ("budget_exhausted", 429, 60)
    assert error.extra == {"resets_at": "2030-07-01T00:00:00Z", "used": 100, "budget": 100}
    assert "in 1 min" in error.detail
    budgets.check(user.pk, MIDNIGHT)  # a new day


# --------------------------------------------------------------------------- REST


@pytest.mark.django_db
def test_rest_refuses_at_2359_and_allows_at_midnight(auth_client, user, ollama, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 1000
    spend(user, 1000, BEFORE_MIDNIGHT)
    before = saved_messages(user)

    response = auth_client.post(CHAT, {"message": "one more"}, format="json")

    assert response.status_code == 429, response.json()
    assert_exhausted(response.json(), used=1000, budget=1000, resets_at="2030-07-01T00:00:00Z")
    assert response["Retry-After"] == "60" and response.json()["retry_after"] == 60
    assert saved_messages(user) == before  # nothing saved, nothing queued
    assert not ollama.requests_to("/api/chat")

    clock.now = MIDNIGHT
    response = auth_client.post(CHAT, {"message": "one more"}, format="json")
    assert response.status_code == 200, response.json()
    # Its reply counts for the new day.
    reply = Message.objects.get(pk=response.json()["message"])
    assert reply.created_at == MIDNIGHT
    assert budgets.usage_of(user).tokens == response.json()["eval_count"] > 0


@pytest.mark.django_db
def test_the_budget_holds_in_time_zone(auth_client, user, ollama, settings, clock):
    settings.TIME_ZONE = "Europe/Paris"  # its day began at 22:00 UTC
    settings.CHAT_DAILY_TOKEN_BUDGET = 10
    spend(user, 10, datetime(2030, 6, 30, 21, 59, tzinfo=UTC))  # yesterday in Paris
    assert auth_client.post(CHAT, {"message": "x"}, format="json").status_code == 200
    spend(user, 10, datetime(2030, 6, 30, 22, 0, tzinfo=UTC))  # today in Paris
    response = auth_client.post(CHAT, {"message": "x"}, format="json")
    assert response.status_code == 429
    assert response.json()["resets_at"] == "2030-07-02T00:00:00+02:00"
    assert "resets at 00:00 (Europe/Paris)" in response.json()["detail"]


@pytest.mark.django_db
def test_message_actions_are_refused_too(auth_client, user, ollama, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 50
    reply = spend(user, 50, BEFORE_MIDNIGHT)
    for action in ("regenerate", "continue"):
        response = auth_client.post(f"/api/messages/{reply.pk}/{action}/", {}, format="json")
        assert response.status_code == 429, response.json()
        assert response.json()["code"] == "budget_exhausted"
    response = auth_client.post(
        f"/api/messages/{reply.parent_id}/edit/", {"message": "again"}, format="json"
    )
    assert response.json()["code"] == "budget_exhausted"
    assert not ollama.requests_to("/api/chat")


@pytest.mark.django_db
def test_a_refused_message_does_not_count_against_the_rate(
    auth_client, user, ollama, settings, clock
):
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    settings.CHAT_DAILY_TOKEN_BUDGET = 5
    spend(user, 5, BEFORE_MIDNIGHT)
    for _ in range(3):
        assert auth_client.post(CHAT, {"message": "x"}, format="json").status_code == 429
    clock.now = MIDNIGHT
    assert auth_client.post(CHAT, {"message": "x"}, format="json").status_code == 200


# --------------------------------------------------------------------------- the override


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("server", "own", "used", "allowed"),
    [
        (100, None, 100, False),  # no override: the server's budget
        (100, 1000, 500, True),  # a bigger one
        (1000, 100, 100, False),  # a smaller one
        (100, 0, 10_000, True),  # 0: unlimited, whatever the server's
        (0, None, 10_000, True),  # the server's 0: unlimited
        (0, 100, 100, False),  # a budget of their own on an unlimited server
    ],
)
def test_a_users_own_budget_wins(
    auth_client, user, ollama, settings, clock, server, own, used, allowed
):
    settings.CHAT_DAILY_TOKEN_BUDGET = server
    user.daily_token_budget = own
    user.save(update_fields=["daily_token_budget"])
    spend(user, used, BEFORE_MIDNIGHT)
    response = auth_client.post(CHAT, {"message": "x"}, format="json")
    assert response.status_code == (200 if allowed else 429), response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["permission", "superuser"])
def test_exempt_users_have_no_budget(api_client, make_user, ollama, settings, clock, who):
    settings.CHAT_DAILY_TOKEN_BUDGET = 10
    if who == "superuser":
        runner = make_user("root@example.com", is_superuser=True, is_staff=True)
    else:
        runner = make_user("loadtest@example.com")
        runner.user_permissions.add(Permission.objects.get(codename="chat_without_limits"))
    spend(runner, 1000, BEFORE_MIDNIGHT)
    api_client.force_authenticate(runner)
    assert api_client.post(CHAT, {"message": "x"}, format="json").status_code == 200
    usage = api_client.get(USAGE).json()
    assert usage["budget"] is None and usage["fraction"] is None
    assert usage["tokens"] > 1000


# --------------------------------------------------------------------------- /api/usage/


@pytest.mark.django_db
def test_usage_reports_today(auth_client, user, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 10_000
    spend(user, 8000, BEFORE_MIDNIGHT - timedelta(hours=1))
    spend(user, 500, BEFORE_MIDNIGHT)
    spend(user, 9999, BEFORE_MIDNIGHT - timedelta(days=1))
    assert auth_client.get(USAGE).json() == {
        "day": "2030-06-30",
        "tokens": 8500,
        "budget": 10_000,
        "resets_at": "2030-07-01T00:00:00Z",
        "fraction": 0.85,
    }
    clock.now = MIDNIGHT
    assert auth_client.get(USAGE).json() == {
        "day": "2030-07-01",
        "tokens": 0,
        "budget": 10_000,
        "resets_at": "2030-07-02T00:00:00Z",
        "fraction": 0.0,
    }


@pytest.mark.django_db
def test_usage_without_a_budget(auth_client, user, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 0
    spend(user, 42, BEFORE_MIDNIGHT)
    usage = auth_client.get(USAGE).json()
    assert (usage["tokens"], usage["budget"], usage["fraction"]) == (42, None, None)


def test_usage_needs_a_login(api_client):
    assert api_client.get(USAGE).status_code == 401


# --------------------------------------------------------------------------- SSE and WebSocket
# Through the project's ASGI application in this process, so that the pinned clock holds.


@pytest.fixture
async def _close_thread_connections():
    # The views' ORM calls run in asgiref's worker thread: its connection would otherwise stay
    # open and keep PostgreSQL from dropping the test database at the end of the run.
    yield
    await sync_to_async(connections.close_all)()


def sse_payloads(body: bytes) -> list:
    payloads = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


@pytest.mark.django_db(transaction=True)
async def test_sse_refuses_at_2359_and_streams_at_midnight(
    user, ollama, settings, clock, _close_thread_connections
):
    settings.CHAT_DAILY_TOKEN_BUDGET = 300
    await sync_to_async(spend)(user, 300, BEFORE_MIDNIGHT)
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {AccessToken.for_user(user)}"}

    response = await client.post(STREAM, {"message": "x"}, "application/json", headers=auth)

    # Refused before the stream opens: the plain JSON error of every other refusal.
    assert response.status_code == 429, response.json()
    assert response["Retry-After"] == "60"
    assert_exhausted(response.json(), used=300, budget=300, resets_at="2030-07-01T00:00:00Z")
    assert await sync_to_async(saved_messages)(user) == 2
    assert not ollama.requests_to("/api/chat")

    clock.now = MIDNIGHT
    ollama.script(tokens=["a", "b"])
    response = await client.post(STREAM, {"message": "x"}, "application/json", headers=auth)
    assert response.status_code == 200
    stream = response.streaming_content  # type: ignore[attr-defined]
    body = b"".join([chunk async for chunk in stream])
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["type"] == "metrics" and payloads[-2]["eval_count"] == 2


async def connect(user) -> Communicator:
    headers = [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect()
    assert connected, code
    return communicator


async def until_end(communicator) -> list[dict]:
    frames = []
    while True:
        frames.append(await communicator.receive_json_from())
        if frames[-1]["type"] in {"chat.done", "chat.error", "chat.cancelled"}:
            return frames


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_at_2359_and_answers_at_midnight(
    user, ollama, settings, clock, _close_thread_connections
):
    settings.CHAT_DAILY_TOKEN_BUDGET = 300
    reply = await sync_to_async(spend)(user, 300, BEFORE_MIDNIGHT)
    conversation = str(reply.conversation_id)
    communicator = await connect(user)

    await communicator.send_json_to(
        {"type": "chat.send", "message": "x", "conversation": conversation}
    )
    error = await communicator.receive_json_from()
    assert error["type"] == "chat.error"
    assert error["conversation"] == conversation
    assert error["retry_after"] == 60
    assert_exhausted(error, used=300, budget=300, resets_at="2030-07-01T00:00:00Z")
    # A new conversation too, and a regenerate: nothing is saved, nothing reaches Ollama.
    await communicator.send_json_to({"type": "chat.send", "message": "y"})
    assert (await communicator.receive_json_from())["code"] == "budget_exhausted"
    await communicator.send_json_to({"type": "chat.regenerate", "message": reply.pk})
    assert (await communicator.receive_json_from())["code"] == "budget_exhausted"
    assert await Conversation.objects.filter(owner=user).acount() == 1
    assert await Message.objects.filter(conversation__owner=user).acount() == 2
    assert not ollama.requests_to("/api/chat")

    clock.now = MIDNIGHT
    await communicator.send_json_to(
        {"type": "chat.send", "message": "x", "conversation": conversation}
    )
    frames = await until_end(communicator)
    assert frames[-1]["type"] == "chat.done", frames
    await communicator.disconnect()


# --------------------------------------------------------------------------- /ollama/


@pytest.mark.django_db
def test_the_ollama_proxy_refuses_in_ollamas_shape(auth_client, user, ollama, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 300
    spend(user, 300, BEFORE_MIDNIGHT)
    body = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}]}

    response = auth_client.post(PROXY_CHAT, {**body, "stream": False}, format="json")

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    error = response.json()
    assert list(error) == ["error"]
    assert "daily budget is 300" in error["error"] and "resets at 00:00" in error["error"]
    assert saved_messages(user) == 2
    assert not ollama.requests_to("/api/chat")

    clock.now = MIDNIGHT
    response = auth_client.post(PROXY_CHAT, {**body, "stream": False}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["done"] is True


# --------------------------------------------------------------------------- settings


def test_the_settings_are_read_strictly(tmp_path):
    names = ("CHAT_DAILY_TOKEN_BUDGET", "CHAT_BUDGET_COUNTS_PROMPT")
    code = (
        "from django.conf import settings as s; print(s.CHAT_DAILY_TOKEN_BUDGET, "
        "s.CHAT_BUDGET_COUNTS_PROMPT)"
    )
    result = django_shell(code, tmp_path, unset=names)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False"]
    result = django_shell(
        code, tmp_path, CHAT_DAILY_TOKEN_BUDGET="50000", CHAT_BUDGET_COUNTS_PROMPT="true"
    )
    assert result.stdout.split() == ["50000", "True"]
    result = django_shell(code, tmp_path, CHAT_DAILY_TOKEN_BUDGET="-1")
    assert result.returncode != 0
    assert "CHAT_DAILY_TOKEN_BUDGET=-1 is below the minimum 0" in result.stderr
