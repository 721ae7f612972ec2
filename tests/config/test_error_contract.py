"""Every REST error body carries `detail` and a stable `code` (config/exceptions.py).

The application's own errors, DRF's errors (401, 404, 405, 415, 400 parse and validation,
429) and failures nobody anticipated all come out of the one exception handler.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError

from chat import selectors

pytestmark = pytest.mark.django_db


def assert_contract(response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def test_not_authenticated(api_client):
    assert_contract(api_client.get("/api/conversations/"), 401, "not_authenticated")


def test_a_bad_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert_contract(api_client.get("/api/conversations/"), 401, "token_not_valid")


def test_not_found(auth_client):
    missing = "/api/conversations/00000000-0000-0000-0000-000000000000/"
    assert_contract(auth_client.get(missing), 404, "not_found")


def test_method_not_allowed(auth_client):
    assert_contract(auth_client.delete("/api/chat/"), 405, "method_not_allowed")


def test_unsupported_media_type(auth_client):
    response = auth_client.post("/api/chat/", "<xml/>", content_type="application/xml")
    assert_contract(response, 415, "unsupported_media_type")


def test_json_that_does_not_parse(auth_client):
    response = auth_client.post("/api/chat/", "{not json", content_type="application/json")
    assert_contract(response, 400, "parse_error")


def test_validation_errors_keep_their_fields_beside_the_code(auth_client):
    response = auth_client.post("/api/chat/", {"message": 5, "model": "x" * 300}, format="json")
    body = assert_contract(response, 400, "invalid_input")
    assert body["detail"] == "message: Not a valid string."
    assert set(body) == {"detail", "code", "message", "model"}


def test_an_apps_own_validation_code_is_kept(auth_client):
    response = auth_client.post(
        "/api/chat/", {"message": "x", "options": {"temperature": 9}}, format="json"
    )
    body = assert_contract(response, 400, "invalid_options")
    assert "temperature" in body["options"]


def test_an_empty_message_as_the_docs_say(auth_client):
    response = auth_client.post("/api/chat/", {"message": "  "}, format="json")
    assert response.json() == {"detail": "The message is empty.", "code": "empty_message"}


def test_the_database_going_away_is_a_503_with_retry_after(auth_client, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(selectors, "conversations_of", broken)
    response = auth_client.get("/api/conversations/")
    assert_contract(response, 503, "database_unavailable")
    assert response["Retry-After"] == "5"


def test_a_bug_is_a_json_500_that_says_nothing_of_it(auth_client, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("secret internals")

    monkeypatch.setattr(selectors, "conversations_of", broken)
    body = assert_contract(auth_client.get("/api/conversations/"), 500, "internal_error")
    assert "secret" not in body["detail"]


def test_upload_errors_come_from_the_same_handler(auth_client):
    response = auth_client.post("/api/uploads/", {}, format="multipart")
    assert_contract(response, 400, "no_file")


def test_throttled(api_client, settings, user, password):
    settings.LOGIN_RATE_PER_IP = "1/minute"
    for _ in range(2):
        response = api_client.post(
            "/api/auth/token/", {"email": user.email, "password": "wrong"}, format="json"
        )
    body = assert_contract(response, 429, response.json()["code"])
    assert body["code"] in {"throttled", "rate_limited"}


def test_a_url_under_the_api_that_matches_nothing_is_a_json_404(auth_client):
    assert_contract(auth_client.get("/api/conversations/not-a-uuid/"), 404, "not_found")
    assert_contract(auth_client.get("/api/no-such-thing/"), 404, "not_found")


def test_a_url_under_the_proxy_that_matches_nothing_is_an_ollama_404(client):
    response = client.get("/ollama/api/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_pages_keep_their_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("debug", [True, False])
def test_the_api_404_is_json_in_development_too(client, settings, debug):
    settings.DEBUG = debug  # Django's technical 404 page replaces handler404 under DEBUG
    response = client.get("/api/nothing/")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert client.get("/ollama/nothing").json() == {"error": "not found"}


def test_an_unmatched_post_is_a_404_not_a_csrf_page(user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/conversations/not-a-uuid/clear/")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
