"""The "On the GPU now" panel in Chromium, against the app in a real Daphne process and the
Ollama double: staff see who generates and who waits, live, and stop both from the monitoring
page; the admin's staff page shows the same panel, and fits a phone."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.support.live import ARTIFACTS, bearer

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"


class Stream:
    """POST /api/chat/stream/ in a thread, its events kept."""

    def __init__(self, server, user, message: str) -> None:
        self.events: list = []
        self.thread = threading.Thread(target=self._run, args=(server, user, message))
        self.thread.start()

    def _run(self, server, user, message: str) -> None:
        with httpx.stream(
            "POST",
            f"{server.url}/api/chat/stream/",
            json={"message": message},
            headers=bearer(user),
            timeout=120,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payload = line[len("data: ") :]
                    self.events.append(payload if payload == "[DONE]" else json.loads(payload))

    def status(self, name: str) -> dict | None:
        return next(
            (e for e in list(self.events) if isinstance(e, dict) and e.get("status") == name),
            None,
        )


def watch_errors(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return problems


def test_staff_see_and_stop_generations_live(daphne, ollama_double, new_context, make_user):
    staff = make_user("admin@example.com", is_staff=True, is_superuser=True)
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    held = ollama_double.script(tokens=["one ", "two ", "three"], hold_after=2)

    context = new_context()
    log_in(context, daphne, staff)
    page = context.new_page()
    problems = watch_errors(page)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{daphne.url}/monitoring/")
    panel = page.locator("#now-panel")
    expect(panel.locator("#now-status")).to_have_text("Live")
    expect(panel.locator(".now-running-empty")).to_be_visible()

    running = Stream(daphne, alice, "count")
    assert ollama_double.wait_until(
        lambda: ollama_double.last_generation is not None and ollama_double.last_generation.held,
        60,
    )
    queued = Stream(daphne, bob, "my turn")
    alice_row = panel.locator(".now-running > li", has_text=alice.email)
    bob_row = panel.locator(".now-queue > li", has_text=bob.email)
    expect(alice_row).to_contain_text("llama3.2:3b")
    expect(alice_row).to_contain_text("tokens")
    expect(bob_row).to_contain_text("#1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "now-desktop.png"), full_page=False)

    bob_row.get_by_role("button", name=f"Cancel the queued request of {bob.email}").click()
    expect(bob_row).to_have_count(0)
    expect(panel.locator("#now-message")).to_have_text(f"Stopped {bob.email}'s generation.")
    queued.thread.join(60)
    refused = queued.status("cancelled")
    assert refused is not None and refused["code"] == "stopped_by_staff"

    alice_row.get_by_role("button", name=f"Cancel the generation of {alice.email}").click()
    expect(alice_row).to_have_count(0)
    expect(panel.locator(".now-running-empty")).to_be_visible()
    running.thread.join(60)
    ollama_double.release(held)
    stopped = running.status("cancelled")
    assert stopped is not None and stopped["code"] == "stopped_by_staff"
    reply = Message.objects.get(pk=stopped["message"])
    assert (reply.status, reply.error) == ("cancelled", f"Stopped by staff ({staff.email}).")
    assert problems == []


def test_a_user_sees_only_their_own_and_the_admin_page_fits_a_phone(
    daphne, ollama_double, new_context, make_user
):
    staff = make_user("admin@example.com", is_staff=True, is_superuser=True)
    alice = make_user("alice.with.a.rather.long.address@example.com")
    bob = make_user("bob@example.com")
    held = ollama_double.script(tokens=["one ", "two ", "three"], hold_after=2)
    running = Stream(daphne, alice, "count")
    assert ollama_double.wait_until(
        lambda: ollama_double.last_generation is not None and ollama_double.last_generation.held,
        60,
    )
    queued = Stream(daphne, bob, "my turn")

    # Bob, on his phone: his own place in the queue, and only a count of the others.
    context = new_context(viewport=PHONE)
    log_in(context, daphne, bob)
    page = context.new_page()
    problems = watch_errors(page)
    page.goto(f"{daphne.url}/monitoring/")
    panel = page.locator("#now-panel")
    expect(panel.locator(".now-queue > li")).to_contain_text("You")
    expect(panel.locator(".now-others")).to_have_text("Other users: 1 running, 0 waiting.")
    expect(panel.locator(".now-cancel")).to_have_count(0)
    assert alice.email not in panel.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(SCREENSHOTS / "now-phone-user.png"), full_page=False)

    # Staff, on a phone, in the admin: linked from its index, the same panel.
    staff_context = new_context(viewport=PHONE)
    log_in(staff_context, daphne, staff)
    admin = staff_context.new_page()
    problems += watch_errors(admin)
    admin.goto(f"{daphne.url}/admin/")
    admin.get_by_role("link", name="On the GPU now").click()
    admin_panel = admin.locator("#now-panel")
    expect(admin_panel.locator(".now-running > li")).to_contain_text(alice.email)
    expect(admin_panel.locator(".now-queue > li")).to_contain_text(bob.email)
    expect(admin_panel.locator(".now-cancel")).to_have_count(2)
    assert admin.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    admin.screenshot(path=str(SCREENSHOTS / "now-phone-admin.png"), full_page=True)

    ollama_double.release(held)
    running.thread.join(60)
    queued.thread.join(60)
    expect(admin_panel.locator(".now-running-empty")).to_be_visible()
    assert problems == []
