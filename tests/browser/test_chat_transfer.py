"""Export, import and share in the web chat, in headless Chromium against the app in a real
Daphne process: the conversation menu downloads Markdown and JSON, the sidebar imports a file
(and names what is wrong with a bad one), "Share link…" makes a link whose page renders the
snapshot with the chat's Markdown (light, dark, phone screenshots), and revoking it works."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from chat.models import Conversation
from tests.chat.transfer_helpers import branched_conversation
from tests.support.live import ARTIFACTS

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"


def watch_errors(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    # Failed requests by address (the console's own line does not say which).
    page.on(
        "response",
        lambda response: (
            problems.append(f"response: {response.status} {response.url}")
            if response.status >= 400
            else None
        ),
    )
    return problems


def test_export_import_and_share(daphne, ollama_double, new_context, user, tmp_path):
    conversation = branched_conversation(user)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = new_context()
    log_in(context, daphne, user)
    page = context.new_page()
    problems = watch_errors(page)
    page.goto(f"{daphne.url}/?c={conversation.pk}")
    expect(page.locator("#messages .msg-assistant").last).to_contain_text("nata")

    # Export: the menu of the open conversation downloads both files.
    page.click("#conv-menu-toggle")
    with page.expect_download() as markdown:
        page.get_by_text("Export as Markdown").click()
    assert markdown.value.suggested_filename == "Trip-to-Lisbon.md"
    text = open(markdown.value.path(), encoding="utf-8").read()
    assert text.startswith("# Trip to Lisbon") and "Alfama" in text and "Time Out" not in text
    page.click("#conv-menu-toggle")
    with page.expect_download() as exported:
        page.get_by_text("Export as JSON").click()
    assert exported.value.suggested_filename == "Trip-to-Lisbon.json"
    saved = tmp_path / "trip.json"
    exported.value.save_as(saved)
    assert len(json.loads(saved.read_text())["conversation"]["messages"]) == 5
    page.click("#conv-menu-toggle")
    with page.expect_download() as everything:
        page.get_by_text("Export all (JSON)").click()
    assert everything.value.suggested_filename == "conversations.json"
    streamed = json.loads(open(everything.value.path(), encoding="utf-8").read())
    assert [c["title"] for c in streamed["conversations"]] == ["Trip to Lisbon"]

    # Import: the file comes back as a second conversation; a bad file is named.
    page.set_input_files("#import-file", str(saved))
    expect(page.locator("#import-result")).to_have_text("Imported 1 conversation (5 messages).")
    expect(page.locator("#conversations .conv-link", has_text="Trip to Lisbon")).to_have_count(2)
    assert Conversation.objects.filter(owner=user).count() == 2
    bad = tmp_path / "bad.json"
    bad_message = {"id": 1, "parent": None, "role": "robot", "content": "beep"}
    bad.write_text(
        json.dumps(
            {
                "format": "ollama-gateway/conversation",
                "version": 1,
                "conversation": {"messages": [bad_message]},
            }
        )
    )
    page.set_input_files("#import-file", str(bad))
    expect(page.locator("#import-result")).to_contain_text(
        "conversation.messages[0].role: must be user or assistant"
    )
    expect(page.locator("#import-result")).to_have_class(re.compile(r"\berror\b"))

    # Share: a link, shown once and listed; its page renders the snapshot.
    page.click("#conv-menu-toggle")
    page.get_by_text("Share link…").click()
    field = page.locator("#share-url")
    expect(field).to_have_value(re.compile(r"/s/[A-Za-z0-9_-]{40,}$"))
    url = field.input_value()
    expect(page.locator(".share-link")).to_have_count(1)
    page.screenshot(path=str(SCREENSHOTS / "chat-share-menu.png"))

    shared = context.new_page()
    shared_problems = watch_errors(shared)
    response = shared.goto(url)
    assert response is not None and response.status == 200
    assert response.headers["x-robots-tag"].startswith("noindex")
    expect(shared.locator("h1")).to_have_text("Trip to Lisbon")
    expect(shared.locator(".msg")).to_have_count(4)
    # The chat's Markdown: **Alfama** is bold, and the user's text is plain text.
    expect(shared.locator(".msg-assistant .msg-body strong")).to_have_text("Alfama")
    expect(shared.locator(".msg-user .msg-body").first).to_have_text("Where should I eat?")
    shared.screenshot(path=str(SCREENSHOTS / "share-light.png"), full_page=True)
    light = shared.evaluate("getComputedStyle(document.body).backgroundColor")
    shared.emulate_media(color_scheme="dark")
    shared.wait_for_function(
        "light => getComputedStyle(document.body).backgroundColor !== light", arg=light
    )
    shared.screenshot(path=str(SCREENSHOTS / "share-dark.png"), full_page=True)

    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    log_in(phone, daphne, user)
    small = phone.new_page()
    small.goto(url)
    expect(small.locator(".msg")).to_have_count(4)
    assert small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    small.screenshot(path=str(SCREENSHOTS / "share-phone.png"), full_page=True)
    # The chat's conversation menu fits a phone too.
    chat = phone.new_page()
    chat.goto(f"{daphne.url}/?c={conversation.pk}")
    chat.click("#conv-menu-toggle")
    chat.screenshot(path=str(SCREENSHOTS / "chat-conversation-menu-phone.png"))
    expect(chat.locator("#conv-menu")).to_be_in_viewport(ratio=1)
    assert chat.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    chat.screenshot(path=str(SCREENSHOTS / "chat-conversation-menu-phone.png"))

    assert shared_problems == []  # no script error, no CSP violation

    # Revoke: the page is gone.
    page.locator(".share-revoke").click()
    expect(page.locator(".share-status")).to_contain_text("revoked")
    expect(page.locator(".share-link")).to_have_count(0)
    gone = shared.goto(url)
    assert gone is not None and gone.status == 404
    page.keyboard.press("Escape")  # the share panel is still open: close it, open the menu
    expect(page.locator("#conv-menu")).to_be_hidden()
    page.click("#conv-menu-toggle")
    page.get_by_text("Manage share links…").click()
    expect(page.locator("#share-panel")).to_contain_text("Links of this conversation (0)")
    # Of this page's own requests, the bad import's 400 is the only one that failed (what
    # other features of the page ask, e.g. the models while Ollama loads, is not judged here).
    mine = [
        p
        for p in problems
        if not p.startswith("response:") or "/api/conversations/" in p or "/s/" in p
    ]
    assert mine == [f"response: 400 {daphne.url}/api/conversations/import/"]
