"""Rough edges a new user meets, in Chromium: the admin's page for users who are not staff,
errors said in words with their technical part behind "Details", sent images as thumbnails,
the queue said once, and a connection indicator that does not say "Connected" alone while
Ollama is down."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.live import ARTIFACTS, bearer

from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"
REPLY = "#messages .msg-assistant"
SENT = "#messages .msg-user .att-chip"
# How many places show the queue's words to the eye (the screen readers' live region, unseen,
# says them too).
SHOWN = """(words) => [...document.querySelectorAll("body *")].filter((e) =>
  !e.closest(".visually-hidden") && e.checkVisibility() &&
  [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.includes(words))).length"""
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def picture(width: int = 64, height: int = 40) -> bytes:
    """A small RGB PNG (a gradient): something to see in a thumbnail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 6 % 256, 160)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def open_chat(context, server) -> tuple[Page, list[str]]:
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.goto(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page, problems


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def documented_codes() -> list[str]:
    """The codes of docs/api.md's "Error codes" table."""
    table = DOCS.read_text().split("## Error codes", 1)[1]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


def test_the_admin_tells_a_user_who_is_not_staff(daphne, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = context.new_page()
    response = page.goto(f"{daphne.url}/admin/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="The admin is for staff")).to_be_visible()
    expect(page.locator(".topbar")).to_be_visible()  # the site's own frame, not a bare 403
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-not-staff.png"))
    page.get_by_role("link", name="Back to the chat").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


def test_errors_are_said_in_words_with_details(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)

    # Every documented code has a sentence of its own; an unknown one says the server's detail.
    codes = documented_codes()
    assert len(codes) > 40 and "ollama_stream_error" in codes
    said = page.evaluate(
        """(codes) => Object.fromEntries(codes.map((code) =>
             [code, window.ChatErrors.text({code, detail: "RAW-DETAIL"}, "send", {})]))""",
        codes,
    )
    echoed = [code for code, text in said.items() if "RAW-DETAIL" in text or not text]
    assert echoed == [], echoed
    assert (
        page.evaluate("window.ChatErrors.text({code: 'brand_new', detail: 'Server words.'})")
        == "Server words."
    )

    # Ollama fails mid-reply: words first, the code and Ollama's message behind "Details".
    ollama_double.script(tokens=["Once ", "upon ", "a ", "time "], error_after=2)
    send(page, "Tell me a story")
    reply = page.locator(REPLY).last
    expect(reply).to_have_attribute("data-status", "failed")
    note = reply.locator(".msg-note")
    expect(note.locator(".error-text")).to_have_text(
        "Ollama stopped answering mid-reply: it reported an error. What was generated is kept."
    )
    details = note.locator("details.error-details")
    code = details.locator("dd").first
    expect(code).to_be_hidden()  # closed until asked
    details.locator("summary").click()
    expect(code).to_have_text("ollama_stream_error")
    expect(details.locator("dd").nth(1)).not_to_be_empty()  # Ollama's own message
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-error-details.png"))

    # The same from the history.
    page.reload()
    note = page.locator(REPLY).last.locator(".msg-note")
    expect(note.locator(".error-text")).to_contain_text("Ollama stopped answering mid-reply")
    note.locator("summary").click()
    expect(note.locator("dd").first).to_have_text("ollama_stream_error")
    assert problems == []


def test_thumbnails_the_queue_once_and_the_indicator(
    daphne, ollama_double, new_context, user, make_user, tmp_path
):
    # Ollama fails to list its models: the indicator says so beside the note, not "Connected".
    ollama_double.script(path="/api/tags", status=500, times=None)
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    conn = page.locator("#conn")
    expect(conn).to_have_attribute("data-ollama", "down")
    expect(conn.locator(".conn-text")).to_have_text("Connected · Ollama down")
    expect(page.locator("#models-note")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-ollama-down-indicator.png"))
    ollama_double.reset()  # Ollama is back
    page.click("#models-refresh")
    expect(conn.locator(".conn-text")).to_have_text("Connected")
    expect(conn).not_to_have_attribute("data-ollama", "down")

    # A sent image is a thumbnail (loaded with the session), which opens the full image.
    image = tmp_path / "sunset.png"
    image.write_bytes(picture())
    expect(page.locator('#model option[value="llava:7b"]')).to_be_attached()
    page.select_option("#model", "llava:7b")
    page.set_input_files("#file-input", str(image))
    expect(page.locator("#attach-list .att-chip", has_text="sunset.png")).to_have_attribute(
        "data-state", "ready"
    )
    send(page, "What is in this picture?")
    expect(page.locator(REPLY).last).to_have_attribute("data-status", "complete")
    thumb = page.locator(SENT, has_text="sunset.png").locator(".att-preview img")
    expect(thumb).to_be_visible()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 64", arg=thumb.element_handle()
    )
    box = thumb.bounding_box()
    assert box is not None and box["width"] <= 80 and box["height"] <= 80  # small
    page.locator(SENT, has_text="sunset.png").locator(".att-preview").click()
    viewer = page.locator("dialog.image-viewer")
    expect(viewer).to_be_visible()
    page.wait_for_function(
        "() => document.querySelector('dialog.image-viewer img').naturalWidth === 64"
    )
    page.screenshot(path=str(SCREENSHOTS / "chat-image-viewer.png"))
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    page.reload()
    history = page.locator(SENT, has_text="sunset.png").locator(".att-preview img")
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 64", arg=history.element_handle()
    )

    # Queued behind another user's reply: said once, in the reply, updated in place.
    hold = ollama_double.script(tokens=["a ", "b ", "c "], hold_after=1)
    bob = make_user("bob@example.com")
    busy = threading.Thread(
        target=httpx.post,
        args=(f"{daphne.url}/api/chat/",),
        kwargs={"json": {"message": "hold the slot"}, "headers": bearer(bob), "timeout": 120},
    )
    busy.start()
    try:
        assert ollama_double.wait_until(lambda: ollama_double.in_flight == 1, timeout=60)
        page.select_option("#model", "llama3.2:3b")
        send(page, "Me next")
        queued = page.locator(f"{REPLY} .msg-note.queued")
        expect(queued).to_have_text(re.compile(r"^The GPU is busy: you are 1st in line"))
        page.wait_for_function(f"({SHOWN})('The GPU is busy') >= 1")
        assert page.evaluate(SHOWN, "The GPU is busy") == 1
        expect(page.locator("#chat-status")).to_be_hidden()
        page.screenshot(path=str(SCREENSHOTS / "chat-queued-once.png"))
    finally:
        ollama_double.release(hold)
        busy.join(120)
    expect(page.locator(REPLY).last).to_have_attribute("data-status", "complete")
    page.wait_for_function(f"({SHOWN})('The GPU is busy') === 0")
    # The models list failed on purpose (502): Chromium logs it as a failed resource.
    assert [p for p in problems if "status of 502" not in p] == []
