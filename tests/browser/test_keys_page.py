"""The API keys page in headless Chromium: create a key (shown once, copied), use it, see it
listed without its secret after a reload, revoke it; and the page on a 390 px phone.

The page runs under the app's strict Content-Security-Policy (no inline script or style): any
inline code would log a violation and fail the test.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import ApiKey

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def watch_errors(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def me_with(server, raw: str) -> int:
    return httpx.get(
        f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {raw}"}
    ).status_code


def test_create_see_once_copy_and_revoke(new_context, live_server, user):
    context = new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    log_in(context, live_server, user)
    page = context.new_page()
    problems = watch_errors(page)

    page.goto(f"{live_server.url}/accounts/keys/")
    expect(page.get_by_role("link", name="API keys")).to_have_attribute("href", "/accounts/keys/")
    expect(page.locator("#empty")).to_be_visible()

    page.fill("#key-name", "laptop script")
    page.select_option("#key-scope", "read")
    page.select_option("#key-expiry", "7")
    page.click("#create-key")

    shown = page.locator("#new-key-value")
    expect(page.locator("#new-key")).to_be_visible()
    expect(shown).to_contain_text("og_")
    raw = shown.inner_text()
    key = ApiKey.objects.get()
    assert raw.startswith(f"{key.prefix}_")
    assert (key.name, key.scope, key.user_id) == ("laptop script", "read", user.pk)
    assert key.expires is not None
    assert abs(key.expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=5)
    row = page.locator("#keys tbody tr", has_text="laptop script")
    expect(row).to_contain_text(key.prefix)
    expect(row).to_contain_text("read")
    expect(row).to_contain_text("never")  # last used
    expect(page.locator("#empty")).to_be_hidden()

    page.click("#copy-key")
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "keys-created.png"), full_page=True)

    # the key works, read-only
    assert me_with(live_server, raw) == 200

    # shown once: dismissed, and never again after a reload
    page.click("#hide-key")
    expect(page.locator("#new-key")).to_be_hidden()
    page.reload()
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    expect(page.locator("#keys tbody tr")).to_contain_text(key.prefix)
    assert raw not in page.content()
    expect(page.locator("#new-key")).to_be_hidden()

    # revoke
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#keys tbody tr", has_text="laptop script").get_by_role("button").click()
    expect(page.locator("#keys tbody tr")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    key.refresh_from_db()
    assert key.revoked is not None
    assert me_with(live_server, raw) == 401

    # a refusal is said in words: no name
    page.click("#create-key")
    expect(page.locator("#form-error")).to_contain_text("name")
    assert ApiKey.objects.count() == 1

    assert not problems, problems


def test_the_page_fits_a_phone(new_context, live_server, user):
    from accounts import services

    services.create_api_key(user, name="a key with a rather long name for a phone", scope="chat")
    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    log_in(phone, live_server, user)
    page = phone.new_page()
    problems = watch_errors(page)
    page.goto(f"{live_server.url}/accounts/keys/")
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    page.fill("#key-name", "phone")
    page.click("#create-key")
    expect(page.locator("#new-key")).to_be_visible()
    expect(page.locator("#copy-key")).to_be_in_viewport()
    expect(page.locator("#keys tbody tr")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # every key's revoke button is on the screen's width
    for button in page.locator("#keys button.revoke").all():
        box = button.bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "keys-phone.png"), full_page=True)
    assert not problems, problems
