"""Per-user chat limits: the sliding message window (pure) and its 429 over REST."""

import pytest

from chat import limits
from chat.limits import SlidingWindow
from chat.models import Conversation, Message

CHAT = "/api/chat/"


# ------------------------------------------------------------------ the window, pure


def test_estimate_weights_the_previous_window_by_its_overlap():
    window = SlidingWindow(limit=10, period=60)
    assert window.estimate(previous=10, current=2, elapsed=15) == pytest.approx(9.5)
    assert window.estimate(previous=10, current=2, elapsed=0) == 12
    assert window.estimate(previous=0, current=3, elapsed=59) == 3


def test_allows_up_to_the_limit_within_one_window():
    window = SlidingWindow(limit=3)
    assert window.allows(previous=0, current=2, elapsed=10)
    assert not window.allows(previous=0, current=3, elapsed=10)


def test_a_burst_across_the_boundary_is_refused():
    # A fixed window would let one message at 59.9 s and another at 60.1 s through.
    window = SlidingWindow(limit=1)
    assert not window.allows(previous=1, current=0, elapsed=0.1)
    assert window.allows(previous=1, current=0, elapsed=60)


def test_retry_after_when_the_previous_window_must_fade():
    window = SlidingWindow(limit=10, period=60)
    # 10 last window, 5 now, at 30 s: the estimate is 10; one more fits when 10*(1-t/60) <= 4.
    assert window.retry_after(previous=10, current=5, elapsed=30) == 6
    assert window.allows(previous=10, current=5, elapsed=36)
    assert not window.allows(previous=10, current=5, elapsed=35.9)


def test_retry_after_when_this_window_is_full():
    window = SlidingWindow(limit=1, period=60)
    # One message at 20 s: the next fits at 60 s into the next window, 100 s from now.
    assert window.retry_after(previous=0, current=1, elapsed=20) == 100
    window = SlidingWindow(limit=4, period=60)
    # 4 now at 50 s: next window, once 4*(1-t/60)+1 <= 4, i.e. t = 15 s -> 10 + 15.
    assert window.retry_after(previous=0, current=4, elapsed=50) == 25


def test_retry_after_is_at_least_one_second():
    assert SlidingWindow(limit=1).retry_after(previous=1, current=0, elapsed=59.99) == 1


# ------------------------------------------------------------------ over REST


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock(now=1_000_000 * 60 + 59.9)  # 0.1 s before a window boundary
    monkeypatch.setattr(limits, "time", fake)
    return fake


def chat(client, message):
    return client.post(CHAT, {"message": message}, format="json")


@pytest.mark.django_db
def test_rest_refuses_across_the_window_boundary(auth_client, ollama, settings, clock):
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    assert chat(auth_client, "one").status_code == 200
    clock.now += 0.2  # the next fixed window has begun
    response = chat(auth_client, "two")
    assert response.status_code == 429, response.json()
    assert response.json()["code"] == "rate_limited"
    assert "1 messages a minute" in response.json()["detail"]
    assert int(response["Retry-After"]) == 60
    # Nothing of the refused message was saved; the client still has it to send again.
    assert not Message.objects.filter(content="two").exists()


@pytest.mark.django_db
def test_refused_attempts_do_not_push_the_wait_further(auth_client, ollama, settings, clock):
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    assert chat(auth_client, "one").status_code == 200
    assert chat(auth_client, "two").status_code == 200
    clock.now += 0.2
    for _ in range(5):
        assert chat(auth_client, "again").status_code == 429
    clock.now += 30  # half of the previous window has faded: 2 * 0.5 = 1, room for one
    assert chat(auth_client, "three").status_code == 200
    assert chat(auth_client, "four").status_code == 429


@pytest.mark.django_db
def test_users_are_limited_separately(auth_client, api_client, make_user, ollama, settings, clock):
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    assert chat(auth_client, "one").status_code == 200
    other = make_user("bob@example.com")
    api_client.force_authenticate(other)
    assert chat(api_client, "mine").status_code == 200


@pytest.mark.django_db
def test_zero_turns_the_limit_off(auth_client, ollama, settings, clock):
    settings.CHAT_MESSAGES_PER_MINUTE = 0
    for n in range(5):
        assert chat(auth_client, f"m{n}").status_code == 200


@pytest.mark.django_db
def test_the_exempt_permission_lifts_both_limits(api_client, make_user, ollama, settings, clock):
    from django.contrib.auth.models import Permission

    settings.CHAT_MESSAGES_PER_MINUTE = 1
    settings.CHAT_MAX_GENERATIONS_PER_USER = 1
    runner = make_user("loadtest@example.com")
    runner.user_permissions.add(Permission.objects.get(codename="chat_without_limits"))
    api_client.force_authenticate(runner)
    for n in range(3):
        assert chat(api_client, f"m{n}").status_code == 200
    # a streaming reply of theirs does not count either
    conversation = Conversation.objects.create(owner=runner)
    Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    assert chat(api_client, "while one streams").status_code == 200


@pytest.mark.django_db
def test_without_the_permission_a_streaming_reply_counts(auth_client, user, ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 1
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    response = chat(auth_client, "one more")
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_generations"
    assert response["Retry-After"] == "5"
