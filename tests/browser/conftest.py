"""Fixtures of the browser tests: Debian's Chromium driven by Playwright's sync API.

Playwright's sync API runs an asyncio loop in the test thread for as long as it is started.
Two consequences:

- Django refuses ORM calls in a thread with a running loop unless DJANGO_ALLOW_ASYNC_UNSAFE is
  set (it is safe here: the loop is idle while the test runs). It is set while the browser
  runs only, so that the rest of the suite keeps Django's async-safety check.
- While Playwright runs, no other test can use asyncio in this thread (asyncio.run, pytest-asyncio,
  async_to_sync). The browser is therefore shared per module, not per session: it is stopped
  at the end of each browser-test module, before any other module's tests run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
# How long any wait of a browser test (an action, a navigation, an `expect`) may take. Every
# wait is for an event (an element, a state), so a passing run never waits this long; the bound
# only ends a broken one. It is generous: on a loaded machine Chromium renders a page (ReDoc
# and its whole schema, a reload and its WebSocket) many times slower than on an idle one, and
# Playwright's own defaults (10 s here before, 5 s for `expect`) were missed.
WAIT_MS = 60_000
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One Chromium per module; the ORM is allowed beside Playwright's loop while it runs
    (up to the database flush that ends the module's last test)."""
    expect.set_options(timeout=WAIT_MS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()


@pytest.fixture
def new_context(chromium):
    """Fresh browser contexts (cookies, storage) for one test; closed at its end."""
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = chromium.new_context(**options)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def log_in(context: BrowserContext, server, user) -> None:
    """Give the context a session of `user` (what the login page does, without its slow hash)."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    assert session.session_key is not None  # create() saved it under a new key
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session.session_key,
                "url": server.url,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
