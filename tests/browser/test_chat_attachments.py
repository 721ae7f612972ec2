"""Files attached in the web chat, in headless Chromium against the app in a real Daphne
process and the Ollama double: the picker, a drop, the progress while uploading, the chips on
the sent message and after a reload, images for vision models only, refused files, and a file
uploaded before picked from the menu.

The Daphne process reads its own environment, not this process's `settings`: it gets its own
MEDIA_ROOT (a temporary folder of this module), a small ATTACHMENT_MAX_CHARS so that a long
file shows the "truncated" note, and a small quota and upload rate to see them refuse.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.support.live import ARTIFACTS, DaphneServer, bearer
from tests.uploads.test_filetypes import ELF, HTML, png_1x1
from uploads.models import Upload

from .conftest import DESKTOP, PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"
MAX_CHARS = 1000
QUOTA = 1_000_000
UPLOADS_PER_MINUTE = 5  # per user: each test uploads at most this many per user
TRAY = "#attach-list .att-chip"
SENT = "#messages .msg-user .att-chip"
REPLY = "#messages .msg-assistant"


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chat-media")


@pytest.fixture(scope="module")
def server(django_db_setup, ollama_double_server, media_root):
    with DaphneServer(
        name="daphne-attachments",
        OLLAMA_URL=ollama_double_server.url,
        OLLAMA_DEFAULT_MODEL="llama3.2:3b",
        MEDIA_ROOT=str(media_root),
        ATTACHMENT_MAX_CHARS=str(MAX_CHARS),
        UPLOAD_QUOTA_BYTES=str(QUOTA),
        UPLOAD_RATE=f"{UPLOADS_PER_MINUTE}/min",
        # Started while Chromium may be running: the test-only switch stays out of the app.
        DJANGO_ALLOW_ASYNC_UNSAFE="",
    ) as server:
        yield server


def open_chat(context, server) -> tuple[Page, list[str]]:
    """The chat under the app's own CSP (no inline code, no blob: or data: images), with
    every script error and CSP violation collected."""
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.goto(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator('#model option[value="llava:7b"]')).to_be_attached()
    return page, problems


def real_problems(problems: list[str]) -> list[str]:
    # A refused upload's 4xx is logged by Chromium as a failed resource: that is expected.
    return [p for p in problems if not re.search(r"status of 4\d\d", p)]


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def drop_files(page: Page, target: str, files: list[dict]) -> None:
    """A synthetic drag and drop of in-memory files onto `target`."""
    page.evaluate(
        """([selector, files]) => {
          const data = new DataTransfer();
          for (const f of files) data.items.add(new File([f.text], f.name, {type: f.type}));
          const zone = document.querySelector(selector);
          const init = {dataTransfer: data, bubbles: true, cancelable: true};
          zone.dispatchEvent(new DragEvent("dragenter", init));
          zone.dispatchEvent(new DragEvent("dragover", init));
          window.__overlayShown = !document.getElementById("drop-overlay").hidden;
          zone.dispatchEvent(new DragEvent("drop", init));
        }""",
        [target, files],
    )


def last_user_message(ollama_double) -> dict:
    return ollama_double.last_request("/api/chat").json["messages"][-1]


# --------------------------------------------------------------------------- text files


def test_attach_by_picker_and_drop_send_and_reload(
    server, ollama_double, new_context, user, tmp_path
):
    context = new_context(accept_downloads=True)
    log_in(context, server, user)
    page, problems = open_chat(context, server)

    notes = tmp_path / "meeting notes.txt"
    notes.write_text("The secret word is PAPAYA-7.\n", encoding="utf-8")

    # The upload is held on its way: the chip shows its progress and sending waits for it.
    held = []
    page.route(f"{server.url}/api/uploads/", lambda route: held.append(route))
    page.set_input_files("#file-input", str(notes))
    chip = page.locator(TRAY, has_text="meeting notes.txt")
    expect(chip).to_have_attribute("data-state", "uploading")
    expect(chip.locator("progress")).to_be_attached()
    expect(page.locator("#attach-hint")).to_contain_text("Uploading")
    expect(page.locator("#send")).to_be_disabled()
    page.fill("#prompt", "What is the secret word?")
    page.press("#prompt", "Enter")  # refused while the upload runs
    expect(page.locator("#attach-hint")).to_contain_text("Wait for the files to finish uploading")
    expect(page.locator("#messages .msg")).to_have_count(0)
    assert len(held) == 1
    held[0].continue_()
    page.unroute(f"{server.url}/api/uploads/")
    expect(chip).to_have_attribute("data-state", "ready")
    expect(chip).to_contain_text("29 bytes")
    expect(page.locator("#send")).to_be_enabled()

    # A second file, dropped on the conversation (long: only its beginning reaches the model).
    long_text = "KIWI-3 opens the dropped file.\n" + "filler line\n" * 300
    drop_files(page, "#messages", [{"name": "dropped.md", "text": long_text, "type": ""}])
    assert page.evaluate("window.__overlayShown"), "no drop hint while dragging files"
    expect(page.locator("#drop-overlay")).to_be_hidden()
    expect(page.locator(TRAY, has_text="dropped.md")).to_have_attribute("data-state", "ready")
    expect(page.locator(TRAY)).to_have_count(2)
    uploads = {u.original_name: u for u in Upload.objects.filter(owner=user)}
    assert set(uploads) == {"meeting notes.txt", "dropped.md"}

    ollama_double.script(reply="The word is PAPAYA-7.")
    page.click("#send")
    sent = page.locator(SENT)
    expect(sent).to_have_count(2)
    expect(sent.nth(0)).to_contain_text("meeting notes.txt")
    expect(sent.nth(1)).to_contain_text("dropped.md")
    expect(page.locator("#messages .msg-user .msg-body")).to_have_text("What is the secret word?")
    # Accepted: the files leave the composer.
    expect(page.locator(TRAY)).to_have_count(0)
    expect(page.locator("#attach-tray")).to_be_hidden()
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")

    content = last_user_message(ollama_double)["content"]
    assert content.startswith("What is the secret word?")
    assert 'name="meeting notes.txt"' in content
    assert "The secret word is PAPAYA-7." in content
    assert "KIWI-3 opens the dropped file." in content
    assert 'name="dropped.md" (truncated)' in content
    saved = Message.objects.get(conversation__owner=user, role="user")
    assert [a["name"] for a in saved.attachments] == ["meeting notes.txt", "dropped.md"]

    # After a reload the chips come from the messages endpoint, with the truncated note.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(sent).to_have_count(2)
    expect(sent.nth(0)).to_contain_text("meeting notes.txt")
    expect(sent.nth(0).locator(".att-note")).to_have_count(0)
    expect(sent.nth(1)).to_contain_text("dropped.md")
    expect(sent.nth(1).locator(".att-note")).to_have_text("truncated")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-attachments-sent.png"))
    link = sent.nth(0).locator("a.att-name")
    notes_id = str(uploads["meeting notes.txt"].pk)
    expect(link).to_have_attribute("href", f"/api/uploads/{notes_id}/download/")
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == notes.read_bytes()
    # The chat page is still there (a download does not navigate away).
    expect(page.locator("#messages .msg-user .msg-body")).to_have_text("What is the secret word?")

    # A file deleted later (through the API, by the server that stores it): the name stays.
    deleted = httpx.delete(
        f"{server.url}/api/uploads/{uploads['dropped.md'].pk}/", headers=bearer(user)
    )
    assert deleted.status_code == 204
    page.reload()
    expect(page.locator(SENT, has_text="dropped.md")).to_be_visible()
    assert not real_problems(problems), problems


# --------------------------------------------------------------------------- images


def test_images_need_a_vision_model(server, ollama_double, new_context, user, tmp_path):
    context = new_context()
    log_in(context, server, user)
    page, problems = open_chat(context, server)
    png = png_1x1()
    image = tmp_path / "dot.png"
    image.write_bytes(png)

    page.select_option("#model", "llama3.2:3b")
    page.set_input_files("#file-input", str(image))
    chip = page.locator(TRAY, has_text="dot.png")
    expect(chip).to_have_attribute("data-state", "ready")
    expect(chip).to_have_attribute("data-kind", "image")
    # A thumbnail drawn from the local file (no URL: the strict img-src allows it).
    expect(chip.locator("canvas.att-thumb-img")).to_have_count(1)

    send(page, "What is in this picture?")
    banner = page.locator("#banner")
    expect(banner).to_have_attribute("data-code", "model_lacks_vision")
    expect(banner).to_contain_text("This model can't see images; pick a vision model such as llava")
    # Refused: nothing was saved or sent, the text and the file are kept for another try.
    expect(page.locator("#prompt")).to_have_value("What is in this picture?")
    expect(page.locator("#messages .msg")).to_have_count(0)
    expect(chip).to_have_attribute("data-state", "ready")
    assert not ollama_double.requests_to("/api/chat")
    assert not Message.objects.exists()

    page.select_option("#model", "llava:7b")
    ollama_double.script(reply="A red dot.")
    page.click("#send")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    expect(page.locator("#banner")).to_be_hidden()
    sent = last_user_message(ollama_double)
    assert ollama_double.last_request("/api/chat").json["model"] == "llava:7b"
    assert sent["images"] == [base64.b64encode(png).decode()]
    assert sent["content"] == "What is in this picture?"
    expect(page.locator(TRAY)).to_have_count(0)
    expect(page.locator(SENT)).to_have_attribute("data-kind", "image")
    expect(page.locator(SENT)).to_contain_text("dot.png")

    # A file name is user input: it shows as text everywhere, never as markup.
    # (no double quotes: Chromium sends them in a multipart file name as %22)
    hostile = "<img src=x onerror=window.__xss=1>.txt"
    drop_files(page, "#prompt", [{"name": hostile, "text": "harmless\n", "type": "text/plain"}])
    expect(page.locator(TRAY)).to_have_attribute("data-state", "ready")
    expect(page.locator(TRAY).locator(".att-name")).to_have_text(hostile)
    page.click("#recent-files")
    expect(page.locator("#recent-menu .att-name").first).to_have_text(hostile)
    page.keyboard.press("Escape")
    expect(page.locator("#recent-menu")).to_be_hidden()
    send(page, "And this one?")
    expect(page.locator(REPLY).nth(1)).to_have_attribute("data-status", "complete")
    page.reload()
    expect(page.locator(SENT).nth(1).locator(".att-name")).to_have_text(hostile)
    # No image but the sent picture's own thumbnail (images.js), from its download URL.
    expect(page.locator("#messages img:not(.att-preview-img), #attach-tray img")).to_have_count(0)
    expect(page.locator("#messages img.att-preview-img")).to_have_attribute(
        "src", re.compile(r"^/api/uploads/[0-9a-f-]+/download/$")
    )
    assert page.evaluate("window.__xss") is None
    assert not real_problems(problems), problems


# --------------------------------------------------------------------------- refused files


def test_refused_files_show_the_servers_reason_and_are_not_sent(
    server, ollama_double, new_context, user, tmp_path
):
    context = new_context()
    log_in(context, server, user)
    page, problems = open_chat(context, server)
    (tmp_path / "setup.exe").write_bytes(ELF)
    (tmp_path / "page.png").write_bytes(HTML)
    (tmp_path / "ok.txt").write_text("Only this file is fine: MANGO-5.\n", encoding="utf-8")

    page.set_input_files(
        "#file-input", [str(tmp_path / name) for name in ("setup.exe", "page.png", "ok.txt")]
    )
    exe = page.locator(TRAY, has_text="setup.exe")
    fake = page.locator(TRAY, has_text="page.png")
    expect(exe).to_have_attribute("data-state", "failed")
    expect(exe.locator(".att-error")).to_contain_text("'.exe' files are not accepted")
    expect(fake).to_have_attribute("data-state", "failed")
    expect(fake.locator(".att-error")).to_contain_text(
        "a .png file must be a PNG image, but this file is an HTML/SVG/XML document"
    )
    expect(page.locator(TRAY, has_text="ok.txt")).to_have_attribute("data-state", "ready")
    assert list(Upload.objects.values_list("original_name", flat=True)) == ["ok.txt"]

    # A refused file can be dismissed by hand; the others go when the message is accepted.
    page.get_by_role("button", name="Dismiss setup.exe").click()
    expect(exe).to_have_count(0)
    expect(page.locator(TRAY)).to_have_count(2)

    send(page, "Read the files")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    content = last_user_message(ollama_double)["content"]
    assert "MANGO-5" in content
    assert "page.png" not in content and "<html" not in content
    assert "images" not in last_user_message(ollama_double)
    expect(page.locator(SENT)).to_have_count(1)
    expect(page.locator(SENT)).to_contain_text("ok.txt")
    expect(page.locator(TRAY)).to_have_count(0)

    # The menu of files uploaded before: pick ok.txt again, without uploading it again.
    page.click("#recent-files")
    menu = page.locator("#recent-menu")
    expect(menu).to_be_visible()
    item = menu.get_by_role("button", name="Attach ok.txt")
    item.click()
    expect(menu).to_be_hidden()
    expect(page.locator(TRAY, has_text="ok.txt")).to_have_attribute("data-state", "ready")
    send(page, "And again")
    expect(page.locator(REPLY).nth(1)).to_have_attribute("data-status", "complete")
    assert "MANGO-5" in last_user_message(ollama_double)["content"]
    assert Upload.objects.count() == 1
    expect(page.locator(SENT)).to_have_count(2)

    # Attached, then deleted elsewhere before sending: the send is refused, the chip says why,
    # and the next send goes without it.
    page.click("#recent-files")
    menu.get_by_role("button", name="Attach ok.txt").click()
    ok = page.locator(TRAY, has_text="ok.txt")
    expect(ok).to_have_attribute("data-state", "ready")
    upload = Upload.objects.get()
    deleted = httpx.delete(f"{server.url}/api/uploads/{upload.pk}/", headers=bearer(user))
    assert deleted.status_code == 204
    send(page, "Once more")
    expect(page.locator("#banner")).to_have_attribute("data-code", "attachment_not_found")
    expect(page.locator("#banner")).to_contain_text("An attached file no longer exists")
    expect(ok).to_have_attribute("data-state", "failed")
    expect(ok.locator(".att-error")).to_contain_text("no longer exists")
    expect(page.locator("#prompt")).to_have_value("Once more")
    requests = len(ollama_double.requests_to("/api/chat"))
    page.click("#send")
    expect(page.locator(REPLY).nth(2)).to_have_attribute("data-status", "complete")
    assert len(ollama_double.requests_to("/api/chat")) == requests + 1
    assert "MANGO-5" not in last_user_message(ollama_double)["content"]
    expect(page.locator("#messages .msg-user").nth(2).locator(".att-chip")).to_have_count(0)
    expect(page.locator(TRAY)).to_have_count(0)
    assert not real_problems(problems), problems


# --------------------------------------------------------------------------- limits


def test_quota_and_rate_limit_show_the_servers_reason(
    server, ollama_double, new_context, user, tmp_path
):
    context = new_context()
    log_in(context, server, user)
    page, problems = open_chat(context, server)
    for name in ("first.log", "second.log"):
        (tmp_path / name).write_text("line\n" * (QUOTA * 6 // 10 // 5))  # 60% of the quota
    page.set_input_files("#file-input", str(tmp_path / "first.log"))
    expect(page.locator(TRAY, has_text="first.log")).to_have_attribute("data-state", "ready")
    page.set_input_files("#file-input", str(tmp_path / "second.log"))
    over = page.locator(TRAY, has_text="second.log")
    expect(over).to_have_attribute("data-state", "failed")
    expect(over.locator(".att-error")).to_contain_text(
        "does not fit in your storage quota: you use 585.9 KB (600000 bytes)"
    )
    expect(over.get_by_role("button", name="Upload second.log again")).to_have_count(0)

    # Two uploads so far; the rate allows five a minute.
    names = [f"small{i}.txt" for i in range(UPLOADS_PER_MINUTE - 1)]
    for name in names:
        (tmp_path / name).write_text(f"{name}\n")
    page.set_input_files("#file-input", [str(tmp_path / name) for name in names])
    for name in names[:-1]:
        expect(page.locator(TRAY, has_text=name)).to_have_attribute("data-state", "ready")
    throttled = page.locator(TRAY, has_text=names[-1])
    expect(throttled).to_have_attribute("data-state", "failed")
    expect(throttled.locator(".att-error")).to_contain_text(
        re.compile(r"Too many uploads right now: Request was throttled\. .*Try again in \d+ s\.")
    )
    # Worth another try later (unlike a refused type or the quota).
    expect(throttled.get_by_role("button", name=f"Upload {names[-1]} again")).to_be_visible()
    assert Upload.objects.filter(owner=user).count() == 1 + len(names) - 1
    assert not real_problems(problems), problems


# --------------------------------------------------------------------------- how it looks


def composer_with_chips(server, new_context, user, files: list[str], viewport, screenshot: str):
    """Attach `files` (the last one held while uploading), check the layout, screenshot it."""
    context = new_context(viewport=viewport)
    log_in(context, server, user)
    page, problems = open_chat(context, server)
    held = []
    last = Path(files[-1]).name.encode()

    def hold_last(route):
        if last in (route.request.post_data_buffer or b""):
            held.append(route)
        else:
            route.continue_()

    page.route(f"{server.url}/api/uploads/", hold_last)
    page.set_input_files("#file-input", files)
    expect(page.locator(TRAY, has_text="page.png")).to_have_attribute("data-state", "failed")
    expect(page.locator(TRAY, has_text="dot.png").locator("canvas")).to_have_count(1)
    expect(page.locator(TRAY, has_text="big.log")).to_have_attribute("data-state", "uploading")
    page.fill("#prompt", "Summarise these, please")
    # Nothing sticks out sideways, and the message box stays usable.
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    box = page.locator("#prompt").bounding_box()
    assert box and box["width"] > 150, box
    expect(page.locator("#send")).to_be_in_viewport()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / screenshot))
    for route in held:
        route.continue_()
    expect(page.locator(TRAY, has_text="big.log")).to_have_attribute("data-state", "ready")
    expect(page.locator("#send")).to_be_enabled()
    assert not real_problems(problems), problems


def test_composer_with_chips_on_desktop_and_phone(
    server, ollama_double, new_context, user, make_user, tmp_path
):
    (tmp_path / "quarterly report with a long name.md").write_text("# Q3\n", encoding="utf-8")
    (tmp_path / "dot.png").write_bytes(png_1x1())
    (tmp_path / "page.png").write_bytes(HTML)
    (tmp_path / "big.log").write_text("line\n" * 20_000, encoding="utf-8")
    files = [
        str(tmp_path / name)
        for name in ("quarterly report with a long name.md", "dot.png", "page.png", "big.log")
    ]
    composer_with_chips(server, new_context, user, files, DESKTOP, "chat-attachments.png")
    # Another user for the phone: each may upload UPLOADS_PER_MINUTE files a minute.
    bob = make_user("bob@example.com")
    composer_with_chips(server, new_context, bob, files, PHONE, "chat-attachments-phone.png")
