"""Using an API key: on the REST API and /ollama/ (in process), its scopes, expiry (a pinned
clock), revocation, a deactivated account, the throttle on bad keys and `last_used` (written
at most once a minute: counted queries). The official `ollama` client against a real Daphne is
in tests/chat/test_ollama_proxy_api_keys.py, the sockets in test_api_key_sockets.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import authentication, services
from accounts.authentication import (
    ApiKeysThrottled,
    InsufficientScope,
    InvalidApiKey,
    authenticate_bearer,
    authenticate_key,
    check_scope,
)
from accounts.models import ApiKey
from chat.models import Conversation

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def chat_key(user) -> tuple[ApiKey, str]:
    return services.create_api_key(user, name="chat", scope="chat")


@pytest.fixture
def read_key(user) -> tuple[ApiKey, str]:
    return services.create_api_key(user, name="read", scope="read")


def with_key(raw: str, ip: str = "10.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def refusal(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    return body


class PinnedClock:
    def __init__(self, monkeypatch, at):
        self.at = at
        monkeypatch.setattr(timezone, "now", lambda: self.at)

    def advance(self, **delta) -> None:
        self.at += timedelta(**delta)


# --------------------------------------------------------------------------- the REST API


def test_a_key_is_accepted_where_a_jwt_is(chat_key, user, auth_client):
    _, raw = chat_key
    me = with_key(raw).get(ME)
    assert me.status_code == 200
    assert me.json()["email"] == user.email
    assert with_key(raw).get("/api/conversations/").status_code == 200
    # and JWTs still work beside keys
    assert auth_client.get(ME).status_code == 200


def test_a_chat_key_chats_over_rest(chat_key, ollama, user):
    _, raw = chat_key
    ollama.script(reply="Hi there")
    reply = with_key(raw).post("/api/chat/", {"message": "Hello"}, format="json")
    assert reply.status_code == 200, reply.content
    assert reply.json()["response"] == "Hi there"
    conversation = Conversation.objects.get(owner=user)
    assert with_key(raw).delete(f"/api/conversations/{conversation.pk}/").status_code == 204


def test_a_read_key_reads_but_never_writes(read_key, ollama, user):
    _, raw = read_key
    client = with_key(raw)
    assert client.get(ME).status_code == 200
    assert client.get("/api/conversations/").status_code == 200
    assert client.get("/api/models/").status_code == 200
    body = refusal(
        client.post("/api/chat/", {"message": "Hi"}, format="json"), 403, "insufficient_scope"
    )
    assert body["required_scope"] == "chat"
    assert "'read'" in body["detail"] and "'chat'" in body["detail"]
    refusal(client.post("/api/conversations/", {}, format="json"), 403, "insufficient_scope")
    refusal(
        client.post("/api/chat/stream/", {"message": "x"}, format="json"), 403, "insufficient_scope"
    )
    assert not Conversation.objects.exists()


def test_a_chat_key_never_manages_the_account_nor_writes_elsewhere(chat_key, user):
    _, raw = chat_key
    client = with_key(raw)
    for response in (
        client.post("/api/auth/logout/", {"refresh": "x"}, format="json"),
        client.post("/api/models/load/", {"model": "llama3.2:3b"}, format="json"),
        client.post("/api/uploads/", {}, format="multipart"),
    ):
        assert refusal(response, 403, "insufficient_scope")["required_scope"] == "login"


def test_unknown_and_malformed_keys_are_401s(chat_key):
    _, raw = chat_key
    for bad in (
        raw[:-1] + ("A" if raw[-1] != "A" else "B"),
        "og_nope",
        raw + "x",
        "og_" + "a" * 60,
    ):
        body = refusal(with_key(bad).get(ME), 401, "invalid_api_key")
        assert body["detail"] == "Unknown API key."


def test_an_expired_key_stops_at_its_expiry(user, monkeypatch):
    start = timezone.now()
    _, raw = services.create_api_key(
        user, name="short", scope="chat", expires=start + timedelta(hours=1)
    )
    clock = PinnedClock(monkeypatch, start + timedelta(minutes=59, seconds=59))
    assert with_key(raw).get(ME).status_code == 200
    clock.advance(seconds=1)
    body = refusal(with_key(raw).get(ME), 401, "invalid_api_key")
    assert "expired" in body["detail"]
    assert with_key(raw).get("/api/auth/keys/").status_code == 401


def test_a_deactivated_users_keys_stop_at_once(chat_key, user):
    _, raw = chat_key
    assert with_key(raw).get(ME).status_code == 200
    user.is_active = False
    user.save()
    body = refusal(with_key(raw).get(ME), 401, "invalid_api_key")
    assert "deactivated" in body["detail"]
    # ... and work again when the account is reactivated: nothing was revoked
    user.is_active = True
    user.save()
    assert with_key(raw).get(ME).status_code == 200


def test_a_password_change_keeps_the_keys(chat_key, user, password, tokens):
    """The decision (README, "API keys"): keys are separate credentials of scripts, listed and
    revocable one by one; a password change ends sessions and JWTs, not keys."""
    _, raw = chat_key
    browser = Client()
    browser.force_login(user)
    response = browser.post(
        "/accounts/password/",
        {"old_password": password, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    jwt = APIClient()
    jwt.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert jwt.get(ME).status_code == 401
    assert with_key(raw).get(ME).status_code == 200


def test_the_key_authentication_is_one_query_with_the_account(chat_key, django_assert_num_queries):
    key, raw = chat_key
    ApiKey.objects.filter(pk=key.pk).update(last_used=timezone.now())
    with django_assert_num_queries(1):  # the key joined with its user: no write, no 2nd read
        user, found = authenticate_key(raw, "10.0.0.1")
    assert found.pk == key.pk and user.is_active


# --------------------------------------------------------------------------- last_used


def key_writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "apikey" in q["sql"]]


def test_last_used_is_written_at_most_once_a_minute(chat_key, monkeypatch):
    key, raw = chat_key
    clock = PinnedClock(monkeypatch, timezone.now())
    client = with_key(raw)

    with CaptureQueriesContext(connection) as first:
        assert client.get(ME).status_code == 200
    assert len(key_writes(first.captured_queries)) == 1
    key.refresh_from_db()
    assert key.last_used == clock.at

    clock.advance(seconds=59)
    with CaptureQueriesContext(connection) as second:
        assert client.get(ME).status_code == 200
        assert client.get("/api/conversations/").status_code == 200
    assert key_writes(second.captured_queries) == []
    key.refresh_from_db()
    assert key.last_used == clock.at - timedelta(seconds=59)

    clock.advance(seconds=1)
    with CaptureQueriesContext(connection) as third:
        assert client.get(ME).status_code == 200
    assert len(key_writes(third.captured_queries)) == 1
    key.refresh_from_db()
    assert key.last_used == clock.at
    assert with_key(raw).get("/api/auth/me/").status_code == 200


def test_the_write_is_conditional_so_processes_that_race_write_once(chat_key, monkeypatch):
    key, raw = chat_key
    clock = PinnedClock(monkeypatch, timezone.now())
    stale = ApiKey.objects.select_related("user").get(pk=key.pk)  # another process's read
    authenticate_key(raw, "10.0.0.1")
    clock.advance(seconds=1)
    authentication._note_use(stale)  # it too thinks a write is due...
    key.refresh_from_db()
    assert key.last_used == clock.at - timedelta(seconds=1)  # ...but the row kept the first


# --------------------------------------------------------------------------- the throttle


@pytest.fixture
def tight_rate(settings):
    settings.LOGIN_RATE_PER_IP = "3/min"


def test_bad_keys_are_throttled_per_ip_like_logins(chat_key, tight_rate):
    _, raw = chat_key
    bad = raw[:-4] + "zzzz"
    for _ in range(3):
        refusal(with_key(bad, ip="10.5.0.1").get(ME), 401, "invalid_api_key")
    blocked = with_key(bad, ip="10.5.0.1").get(ME)
    refusal(blocked, 429, "throttled")
    assert int(blocked["Retry-After"]) > 0
    # even the right key, from that address, while it lasts
    refusal(with_key(raw, ip="10.5.0.1").get(ME), 429, "throttled")
    # another address is not affected
    assert with_key(raw, ip="10.5.0.2").get(ME).status_code == 200


def test_good_keys_do_not_use_up_the_budget(chat_key, tight_rate):
    _, raw = chat_key
    for _ in range(10):
        assert with_key(raw, ip="10.6.0.1").get(ME).status_code == 200


def test_the_throttle_window_passes(chat_key, tight_rate, monkeypatch):
    from accounts.throttling import ApiKeyFailureThrottle

    now = [1_000_000.0]
    monkeypatch.setattr(ApiKeyFailureThrottle, "timer", lambda self: now[0])
    _, raw = chat_key
    for _ in range(3):
        with_key("og_unknown", ip="10.7.0.1").get(ME)
    assert with_key(raw, ip="10.7.0.1").get(ME).status_code == 429
    now[0] += 61
    assert with_key(raw, ip="10.7.0.1").get(ME).status_code == 200


# --------------------------------------------------------------------------- /ollama/ in process


def ollama_get(path: str, raw: str, ip: str = "10.0.0.1"):
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {raw}", REMOTE_ADDR=ip)


def test_the_proxy_answers_in_ollamas_shape(read_key, chat_key, tight_rate, ollama):
    _, read_raw = read_key
    _, chat_raw = chat_key
    assert ollama_get("/ollama/api/tags", read_raw).status_code == 200
    refused = Client().post(
        "/ollama/api/chat",
        {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {read_raw}",
    )
    assert refused.status_code == 403
    assert "needs scope 'chat'" in refused.json()["error"]

    unknown = ollama_get("/ollama/api/tags", "og_nope", ip="10.8.0.1")
    assert unknown.status_code == 401
    assert unknown.json() == {"error": "unauthorized: Unknown API key."}
    for _ in range(2):
        ollama_get("/ollama/api/tags", "og_nope", ip="10.8.0.1")
    throttled = ollama_get("/ollama/api/tags", chat_raw, ip="10.8.0.1")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "Too many failed API key attempts" in throttled.json()["error"]


# --------------------------------------------------------------------------- the Python API


def test_authenticate_bearer_and_check_scope(rf, chat_key, read_key, user, tokens):
    key, raw = chat_key
    found = authenticate_bearer(rf.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}"))
    assert found is not None and found[0] == user and found[1].pk == key.pk
    check_scope(found[1], "chat")
    with pytest.raises(InsufficientScope) as refused:
        check_scope(found[1], "login")
    assert refused.value.status == 403 and refused.value.code == "insufficient_scope"

    _, read_raw = read_key
    read = authenticate_bearer(rf.get("/", HTTP_AUTHORIZATION=f"Bearer {read_raw}"))
    assert read is not None
    check_scope(read[1], "read")
    with pytest.raises(InsufficientScope):
        check_scope(read[1], "chat")

    jwt = authenticate_bearer(rf.get("/", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}"))
    assert jwt is not None and jwt[0] == user
    check_scope(jwt[1], "login")  # a JWT may do everything
    assert authenticate_bearer(rf.get("/")) is None

    with pytest.raises(InvalidApiKey) as bad:
        authenticate_bearer(rf.get("/", HTTP_AUTHORIZATION="Bearer og_nope"))
    error = authentication.bearer_error(bad.value)
    assert (error.status, error.code, error.detail) == (401, "invalid_api_key", "Unknown API key.")


def test_bearer_error_of_a_throttle(settings, rf):
    settings.LOGIN_RATE_PER_IP = "1/min"
    request = rf.get("/", HTTP_AUTHORIZATION="Bearer og_nope", REMOTE_ADDR="10.9.0.1")
    with pytest.raises(InvalidApiKey):
        authenticate_bearer(request)
    with pytest.raises(ApiKeysThrottled) as throttled:
        authenticate_bearer(request)
    error = authentication.bearer_error(throttled.value)
    assert (error.status, error.code) == (429, "throttled")
    assert error.retry_after_seconds is not None and error.retry_after_seconds > 0
