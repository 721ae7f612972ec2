"""Django's middleware with its hooks on the event loop (config/inline_middleware.py, issue 16):
under ASGI the web session, CSRF, flash messages and the headers work as before, and an API
request goes through the chain without a thread hop."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient
from django.utils import deprecation

from config import inline_middleware

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

NEW_PASSWORD = "another-long-passphrase-42"
# Django's own, kept by name for `check --deploy`: their hooks still go to a thread.
KEPT = ("SecurityMiddleware.", "CsrfViewMiddleware.", "XFrameOptionsMiddleware.")


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """The middleware hooks sent to a thread, by name: by the inline middleware, or by
    Django's `MiddlewareMixin` (every hook, were the chain still Django's own)."""
    seen: list[str] = []

    def counting(fn, **kwargs):
        seen.append(getattr(fn, "__qualname__", repr(fn)))
        return sync_to_async(fn, **kwargs)

    monkeypatch.setattr(inline_middleware, "sync_to_async", counting)
    monkeypatch.setattr(deprecation, "sync_to_async", counting)
    return seen


@pytest.fixture(autouse=True)
async def _close_the_sync_thread_connections():
    """AsyncClient runs sync code on asgiref's one shared thread (no per-request context, unlike
    Daphne): its database connection is closed after the test, or PostgreSQL's test database
    could not be dropped."""
    yield
    await sync_to_async(connections.close_all, thread_sensitive=True)()


def inline_hops(hops: list[str]) -> list[str]:
    return [name for name in hops if not name.startswith(KEPT)]


def token_of(page: bytes) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "the form carries a CSRF token"
    return match.group(1).decode()


async def test_a_web_session_over_asgi(user, password, hops):
    client = AsyncClient(enforce_csrf_checks=True)
    page = await client.get("/accounts/login/")
    assert page.status_code == 200
    assert "default-src 'self'" in page["Content-Security-Policy"]
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    assert "csrftoken" in page.cookies
    assert hops and inline_hops(hops) == []  # no session touched: the others inline

    refused = await client.post("/accounts/login/", {"username": user.email, "password": password})
    assert refused.status_code == 403  # no CSRF token

    token = token_of(page.content)
    login = await client.post(
        "/accounts/login/",
        {"username": user.email, "password": password, "csrfmiddlewaretoken": token},
    )
    assert login.status_code == 302 and login["Location"] == "/"
    assert login.cookies["sessionid"].value
    # The session's save went to a thread, as before.
    assert "SessionMiddleware.process_response" in inline_hops(hops), hops

    home = await client.get("/")
    assert home.status_code == 200 and b"alice@example.com" in home.content

    # A flash message is stored by the response and shown by the next page.
    form = await client.get("/accounts/password/")
    changed = await client.post(
        "/accounts/password/",
        {
            "old_password": password,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
            "csrfmiddlewaretoken": token_of(form.content),
        },
    )
    assert changed.status_code == 302, changed.content[:500]
    assert "MessageMiddleware.process_response" in inline_hops(hops), hops
    shown = await client.get(changed["Location"])
    assert b"Your password was changed." in shown.content

    out = await client.post(
        "/accounts/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}
    )
    assert out.status_code == 302
    assert (await client.get("/")).status_code == 302  # signed out: to the login page


async def test_an_api_request_makes_no_thread_hop_in_the_middleware(user, tokens, hops):
    client = AsyncClient()
    response = await client.get(
        "/api/auth/me/", headers={"authorization": f"Bearer {tokens['access']}"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == user.email
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert inline_hops(hops) == [], hops
