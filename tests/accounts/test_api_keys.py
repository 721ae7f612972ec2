"""Personal API keys: creating (shown once, only a hash stored), listing, revoking, the cap,
the database's constraints and the admin."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import MAX_API_KEYS_PER_USER, ApiKey

pytestmark = pytest.mark.django_db

KEYS = "/api/auth/keys/"


def with_key(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_key_is_shown_once_and_only_its_hash_is_stored(auth_client, user):
    expires = timezone.now() + timedelta(days=30)
    response = auth_client.post(
        KEYS, {"name": "laptop", "scope": "chat", "expires": expires.isoformat()}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    raw = body["key"]
    prefix, key_id, secret = raw.split("_")
    assert prefix == "og" and len(key_id) == 12 and len(secret) >= 32
    assert body["prefix"] == f"og_{key_id}"
    assert (body["name"], body["scope"], body["last_used"], body["expired"]) == (
        "laptop",
        "chat",
        None,
        False,
    )

    key = ApiKey.objects.get(pk=body["id"])
    assert key.user == user and key.key_id == key_id
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    # The secret is nowhere in the row.
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(secret in str(value) for value in row.values())

    listed = auth_client.get(KEYS)
    assert listed.status_code == 200
    [entry] = listed.json()
    assert entry["id"] == key.pk and entry["prefix"] == f"og_{key_id}"
    assert "key" not in entry and secret not in listed.content.decode()


def test_the_list_has_only_your_live_keys_newest_first(auth_client, user, make_user):
    services.create_api_key(user, name="older", scope="read")
    services.create_api_key(user, name="newer", scope="chat")
    revoked, _ = services.create_api_key(user, name="gone", scope="chat")
    services.revoke_api_key(user, revoked.pk)
    services.create_api_key(make_user("bob@example.com"), name="bob's", scope="chat")

    assert [k["name"] for k in auth_client.get(KEYS).json()] == ["newer", "older"]


def test_revoking(auth_client, user, make_user):
    key, raw = services.create_api_key(user, name="ci", scope="chat")
    bobs, _ = services.create_api_key(make_user("bob@example.com"), name="bob's", scope="chat")

    assert auth_client.delete(f"{KEYS}{bobs.pk}/").status_code == 404  # not yours
    bobs.refresh_from_db()
    assert bobs.revoked is None

    assert with_key(raw).get("/api/auth/me/").status_code == 200
    assert auth_client.delete(f"{KEYS}{key.pk}/").status_code == 204
    key.refresh_from_db()
    assert key.revoked is not None
    refused = with_key(raw).get("/api/auth/me/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"
    assert "revoked" in refused.json()["detail"]
    # gone from the list; a second revoke finds nothing
    assert auth_client.get(KEYS).json() == []
    assert auth_client.delete(f"{KEYS}{key.pk}/").json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"scope": "chat"}, "name"),
        ({"name": "   ", "scope": "chat"}, "name"),
        ({"name": "x" * 101, "scope": "chat"}, "name"),
        ({"name": "x"}, "scope"),
        ({"name": "x", "scope": "admin"}, "scope"),
        ({"name": "x", "scope": "chat", "expires": "2001-01-01T00:00:00Z"}, "expires"),
        ({"name": "x", "scope": "chat", "expires": "next week"}, "expires"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(auth_client, payload, field):
    response = auth_client.post(KEYS, payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_input" and field in body
    assert not ApiKey.objects.exists()


def test_a_user_holds_at_most_the_cap_of_live_keys(auth_client, user):
    for i in range(MAX_API_KEYS_PER_USER):
        services.create_api_key(user, name=f"k{i}", scope="read")
    refused = auth_client.post(KEYS, {"name": "one more", "scope": "chat"}, format="json")
    assert refused.status_code == 400
    body = refused.json()
    assert body["code"] == "too_many_keys" and body["max_keys"] == MAX_API_KEYS_PER_USER
    assert "revoke" in body["detail"]

    # a revoked key frees its place
    services.revoke_api_key(user, ApiKey.objects.filter(user=user).earliest("created").pk)
    assert (
        auth_client.post(KEYS, {"name": "now", "scope": "chat"}, format="json").status_code == 201
    )


def test_a_key_cannot_manage_keys(user):
    _, raw = services.create_api_key(user, name="chat key", scope="chat")
    key_client = with_key(raw)
    for response in (
        key_client.get(KEYS),
        key_client.post(KEYS, {"name": "child", "scope": "chat"}, format="json"),
        key_client.delete(f"{KEYS}1/"),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_scope"
        assert response.json()["required_scope"] == "login"
    assert ApiKey.objects.count() == 1


def test_the_session_manages_keys_too(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    # A session write needs its CSRF token, as every session write of the API does.
    refused = browser.post(KEYS, {"name": "x", "scope": "read"}, content_type="application/json")
    assert refused.status_code == 403
    browser.get("/accounts/keys/")  # the page sets the CSRF cookie
    made = browser.post(
        KEYS,
        {"name": "x", "scope": "read"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    assert made.status_code == 201
    assert made.json()["key"].startswith("og_")


def test_the_database_holds_the_invariants(user):
    key, _ = services.create_api_key(user, name="k", scope="chat")
    for change in (
        {"scope": "admin"},
        {"name": ""},
        {"key_id": "short"},
        {"secret_hash": "abc"},
        {"expires": key.created - timedelta(seconds=1)},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            ApiKey.objects.filter(pk=key.pk).update(**change)
    other, _ = services.create_api_key(user, name="other", scope="read")
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=other.pk).update(key_id=key.key_id)


# --------------------------------------------------------------------------- the admin


@pytest.fixture
def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("admin@example.com", is_staff=True, is_superuser=True))
    return client


def test_staff_see_and_revoke_keys_in_the_admin(admin_client, user):
    key, raw = services.create_api_key(user, name="forgotten", scope="chat")
    listing = admin_client.get("/admin/accounts/apikey/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "forgotten" in page and key.prefix in page and user.email in page
    assert key.secret_hash not in page

    change = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/")
    assert change.status_code == 200
    assert key.secret_hash not in change.content.decode()
    assert 'name="secret_hash"' not in change.content.decode()
    assert admin_client.get("/admin/accounts/apikey/add/").status_code == 403

    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [str(key.pk)]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked is not None
    assert with_key(raw).get("/api/auth/me/").status_code == 401


def test_the_page_is_linked_from_the_chat_pages_menu(user, ollama):
    browser = Client()
    browser.force_login(user)
    assert 'href="/accounts/keys/">API keys</a>' in browser.get("/").content.decode()
    page = browser.get("/accounts/keys/")
    assert page.status_code == 200
    assert 'src="/static/accounts/keys.js' in page.content.decode()
    assert "<script>" not in page.content.decode()  # no inline script (the CSP)
    assert Client().get("/accounts/keys/").status_code == 302  # to the login page
