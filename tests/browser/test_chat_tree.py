"""The conversation tree in the web chat, in headless Chromium against the app in a real Daphne
process and the Ollama double: regenerate a reply (with another model) and page through its
versions, edit a question and keep the old branch, continue a stopped reply in the same bubble,
copy a reply as Markdown, the context gauge, the banner of a reply already running, and the
phone layout of it all."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from chat import services
from chat.models import Conversation, Message
from tests.support.live import ARTIFACTS, bearer

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"
REPLY = "#messages .msg-assistant"
QUESTION = "#messages .msg-user"


def words(count: int, prefix: str = "word") -> list[str]:
    return [f"{prefix}{i} " for i in range(count)]


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


def open_chat(context, server, path: str = "/") -> tuple[Page, list[str]]:
    page = context.new_page()
    problems = watch_errors(page)
    page.goto(f"{server.url}{path}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator('#model option[value="llama3.2:3b"]')).to_be_attached()
    return page, problems


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def body(locator) -> str:
    return locator.locator(".msg-body").inner_text().strip()


def poll_until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for a state of the server (polled; the bound only ends a broken run)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the server never reached that state"
        time.sleep(0.05)


def no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"
    inner = page.evaluate(
        "(() => { const m = document.getElementById('messages');"
        " return m.scrollWidth - m.clientWidth; })()"
    )
    assert inner <= 0, f"the messages scroll sideways by {inner} px"


# --------------------------------------------------------------------------- regenerate


def test_regenerate_with_another_model_and_page_through_versions(
    daphne, ollama_double, new_context, user
):
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    page.select_option("#model", "qwen2.5:0.5b")
    ollama_double.script(reply="First answer, from qwen.")
    send(page, "Tell me a fact")
    reply = page.locator(REPLY)
    expect(reply).to_have_attribute("data-status", "complete")
    # Who wrote it and when, small and muted above the reply.
    expect(reply.locator(".msg-byline .msg-model")).to_have_text("qwen2.5:0.5b")
    expect(reply.locator(".msg-byline time")).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT")
    )
    expect(reply.locator(".pager")).to_have_count(0)  # a single version: no pager

    # Regenerate with another model, picked from the models the page lists.
    ollama_double.script(reply="Second answer, from llama.")
    toggle = reply.get_by_role("button", name="Regenerate with another model")
    toggle.click()
    menu = page.get_by_role("menu", name="Regenerate with")
    expect(menu).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(menu.get_by_role("menuitem")).to_have_count(4)  # the picker's models
    expect(menu.get_by_role("menuitem", name=re.compile(r"^qwen2\.5:0\.5b"))).to_contain_text(
        "wrote this"
    )
    menu.get_by_role("menuitem", name=re.compile(r"^llama3\.2:3b")).click()
    expect(menu).to_have_count(0)

    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".msg-body")).to_have_text("Second answer, from llama.")
    expect(reply.locator(".msg-model")).to_have_text("llama3.2:3b")
    expect(reply.locator(".pager-count")).to_have_text("2/2")
    expect(page.locator(REPLY)).to_have_count(1)
    expect(page.locator(QUESTION)).to_have_count(1)  # the same question, answered again
    assert ollama_double.last_request("/api/chat").body["model"] == "llama3.2:3b"
    conversation = Conversation.objects.get(owner=user)
    first, second = conversation.messages.filter(role="assistant").order_by("id")
    assert first.parent_id == second.parent_id
    assert first.content == "First answer, from qwen."
    assert second.content == "Second answer, from llama."

    # The pager (< 1/2 >): the first version, and back.
    previous = reply.get_by_role("button", name="Previous version of this reply")
    following = reply.get_by_role("button", name="Next version of this reply")
    expect(following).to_be_disabled()
    previous.click()
    expect(reply.locator(".msg-body")).to_have_text("First answer, from qwen.")
    expect(reply.locator(".pager-count")).to_have_text("1/2")
    expect(reply.locator(".msg-model")).to_have_text("qwen2.5:0.5b")
    expect(previous).to_be_disabled()
    # The focus stays on the pager (here on the button that can still move).
    expect(following).to_be_focused()
    conversation.refresh_from_db()
    assert conversation.current_leaf_id == first.pk

    # The server remembers the version shown.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(reply.locator(".msg-body")).to_have_text("First answer, from qwen.")
    expect(reply.locator(".pager-count")).to_have_text("1/2")

    # From the keyboard.
    following.focus()
    page.keyboard.press("Enter")
    expect(reply.locator(".msg-body")).to_have_text("Second answer, from llama.")
    expect(reply.locator(".pager-count")).to_have_text("2/2")
    expect(previous).to_be_focused()

    # Plain Regenerate uses the model that wrote the reply.
    ollama_double.script(reply="Third answer.")
    reply.get_by_role("button", name="Regenerate this reply with llama3.2:3b").click()
    expect(reply.locator(".pager-count")).to_have_text("3/3")
    expect(reply.locator(".msg-body")).to_have_text("Third answer.")
    assert ollama_double.last_request("/api/chat").body["model"] == "llama3.2:3b"
    assert not problems, problems


def test_actions_are_off_while_a_reply_is_generated(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    ollama_double.script(reply="Ready.")
    send(page, "First")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    first = page.locator(REPLY).first

    held = ollama_double.script(tokens=words(6), hold_after=2)
    send(page, "Second")
    expect(page.locator(REPLY).nth(1)).to_have_class(re.compile(r"\bstreaming\b"))
    # The reply being written has no actions yet; the others are disabled meanwhile.
    expect(page.locator(REPLY).nth(1).locator(".msg-actions")).to_be_hidden()
    expect(first.get_by_role("button", name="Regenerate this reply")).to_be_disabled()
    expect(first.get_by_role("button", name="Regenerate with another model")).to_be_disabled()
    edit = page.locator(QUESTION).first.get_by_role("button", name="Edit this message")
    expect(edit).to_be_disabled()
    expect(first.get_by_role("button", name="Copy the reply as Markdown")).to_be_enabled()
    ollama_double.release(held)
    expect(page.locator(REPLY).nth(1)).to_have_attribute("data-status", "complete")
    expect(first.get_by_role("button", name="Regenerate this reply")).to_be_enabled()
    expect(edit).to_be_enabled()
    assert not problems, problems


# --------------------------------------------------------------------------- edit


def test_edit_a_question_keeps_the_old_branch(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    ollama_double.script(reply="Four.")
    send(page, "What is 2 + 2?")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    question = page.locator(QUESTION)

    # The editor replaces the bubble; Escape puts it back, unchanged.
    edit = question.get_by_role("button", name="Edit this message")
    edit.click()
    editor = question.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("What is 2 + 2?")
    expect(question.locator(".msg-body")).to_be_hidden()
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(question.locator(".msg-body")).to_have_text("What is 2 + 2?")
    expect(edit).to_be_focused()

    # Cancel does the same.
    edit.click()
    question.get_by_role("button", name="Cancel").click()
    expect(editor).to_have_count(0)

    # Save & send: a new version of the question, then its reply.
    edit.click()
    editor.fill("What is 3 + 3?")
    ollama_double.script(reply="Six.")
    question.get_by_role("button", name="Save & send").click()
    expect(question.locator(".msg-body")).to_have_text("What is 3 + 3?")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    expect(page.locator(f"{REPLY} .msg-body")).to_have_text("Six.")
    expect(question.locator(".pager-count")).to_have_text("2/2")
    expect(page.locator(QUESTION)).to_have_count(1)
    sent = ollama_double.last_request("/api/chat").body["messages"]
    assert sent[-1] == {"role": "user", "content": "What is 3 + 3?"}
    assert not any("2 + 2" in m["content"] for m in sent)  # the other branch stays out

    # The old branch is kept, one click away on the question's pager.
    question.get_by_role("button", name="Previous version of this message").click()
    expect(question.locator(".msg-body")).to_have_text("What is 2 + 2?")
    expect(page.locator(f"{REPLY} .msg-body")).to_have_text("Four.")
    expect(question.locator(".pager-count")).to_have_text("1/2")
    question.get_by_role("button", name="Next version of this message").click()
    expect(question.locator(".msg-body")).to_have_text("What is 3 + 3?")
    expect(page.locator(f"{REPLY} .msg-body")).to_have_text("Six.")

    conversation = Conversation.objects.get(owner=user)
    old, new = conversation.messages.filter(role="user").order_by("id")
    assert old.parent_id == new.parent_id
    assert (old.content, new.content) == ("What is 2 + 2?", "What is 3 + 3?")
    assert not problems, problems


# --------------------------------------------------------------------------- continue


def test_continue_a_stopped_reply_in_the_same_bubble(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    tokens = words(20, "part")
    held = ollama_double.script(tokens=tokens, hold_after=6)
    first_part = "".join(tokens[:6]).strip()
    send(page, "Write a long story")
    reply = page.locator(REPLY)
    expect(reply.locator(".msg-body")).to_have_text(first_part)
    assert ollama_double.wait_until(lambda: ollama_double.last_generation.held, timeout=60)
    expect(reply.get_by_role("button", name="Continue this reply")).to_have_count(0)
    page.click("#stop")
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".badge")).to_have_text("Stopped")
    ollama_double.release(held)
    message_id = reply.get_attribute("data-message")
    assert message_id

    rest = ["and ", "so ", "it ", "ends."]
    ollama_double.script(tokens=rest)
    resume = reply.get_by_role("button", name="Continue this reply")
    expect(resume).to_be_enabled()
    resume.click()
    expect(reply).to_have_attribute("data-status", "complete")
    # The same message, its text going on in the same bubble.
    expect(page.locator(REPLY)).to_have_count(1)
    expect(reply).to_have_attribute("data-message", message_id)
    expect(reply.locator(".badge")).to_have_count(0)
    expect(resume).to_have_count(0)  # complete: nothing more to continue
    saved = Message.objects.get(pk=int(message_id))
    assert saved.status == "complete"
    assert saved.content.startswith(first_part)
    assert saved.content.endswith("and so it ends.")
    assert body(reply) == saved.content.strip()
    assert Message.objects.filter(role="assistant").count() == 1
    assert not problems, problems


# --------------------------------------------------------------------------- copy

MARKDOWN = """## Steps

1. **Slice** it: `items[::-1]`
2. Done.
"""


def test_copy_a_reply_as_markdown(daphne, ollama_double, new_context, user):
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    ollama_double.script(reply=MARKDOWN)
    send(page, "How?")
    reply = page.locator(REPLY)
    expect(reply).to_have_attribute("data-status", "complete")
    # The feedback lasts two seconds: watch for it rather than race it.
    page.evaluate(
        """() => {
             window.__copied = false;
             const root = document.getElementById('messages');
             new MutationObserver(() => {
               const copied = root.querySelector('[data-action=copy][data-copied=true]');
               if (copied) window.__copied = true;
             }).observe(root, {subtree: true, attributes: true, attributeFilter: ['data-copied']});
           }"""
    )
    reply.get_by_role("button", name="Copy the reply as Markdown").click()
    page.wait_for_function("window.__copied === true")
    saved = Message.objects.get(role="assistant")
    assert page.evaluate("navigator.clipboard.readText()") == saved.content
    assert "**Slice**" in saved.content  # the Markdown, not the rendered text
    expect(page.locator("#announce")).to_have_text("The reply was copied to the clipboard.")
    assert not problems, problems


# --------------------------------------------------------------------------- context gauge

CONTEXT = {
    "messages_sent": 3,
    "messages_dropped": 4,
    "tokens_estimated": 1500,
    "window": 2048,
    "counted": "estimated",
    "over_budget": False,
}


def test_context_gauge_and_dropped_messages(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = context.new_page()
    problems = watch_errors(page)

    # chat.done carries these figures of the context (whatever the server reports today).
    def through(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message):
            if isinstance(message, str):
                frame = json.loads(message)
                if frame.get("type") == "chat.done":
                    frame["metrics"] = {**(frame.get("metrics") or {}), "context": CONTEXT}
                    message = json.dumps(frame)
            ws.send(message)

        server.on_message(from_server)

    page.route_web_socket(re.compile(r"/ws/chat/$"), through)
    page.goto(f"{daphne.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    ollama_double.script(reply="A reply that used most of the window.")
    send(page, "Summarise our talk")
    reply = page.locator(REPLY)
    expect(reply).to_have_attribute("data-status", "complete")

    gauge = reply.locator(".msg-meta .ctx-gauge")
    meter = gauge.locator("meter")
    expect(meter).to_have_attribute("max", "2048")
    expect(meter).to_have_attribute("value", "1500")
    expect(meter).to_have_attribute("aria-label", re.compile(r"~1500 of 2048 tokens \(73%\)"))
    expect(gauge.locator(".ctx-text")).to_have_text("~1.5k/2k")
    expect(reply.locator(".msg-context")).to_have_text(
        "The 4 oldest messages no longer fit the model's context."
    )
    reply.locator(".details-toggle").click()
    expect(reply.locator(".figures dt:text-is('Context') + dd")).to_have_text(
        "~1500 of 2048 tokens (73%) · 3 messages sent · 4 left out"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-context-gauge.png"))
    assert not problems, problems


# --------------------------------------------------------------------------- running elsewhere


def test_a_reply_running_elsewhere_is_explained(daphne, ollama_double, new_context, user):
    conversation = Conversation.objects.create(owner=user, title="Busy")
    question = Message.objects.create(conversation=conversation, role="user", content="Hello")
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Hi.",
        status="complete",
        model="llama3.2:3b",
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=answer)
    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne, f"/?c={conversation.pk}")
    reply = page.locator(REPLY).first
    expect(reply.locator(".msg-body")).to_have_text("Hi.")

    # Another client of the same user starts a reply in this conversation (the page does not
    # follow it yet), held mid-stream.
    held = ollama_double.script(tokens=words(6, "api"), hold_after=2)
    api_call = threading.Thread(
        target=httpx.post,
        args=(f"{daphne.url}/api/chat/",),
        kwargs={
            "json": {"message": "From the API", "conversation": str(conversation.pk)},
            "headers": bearer(user),
            "timeout": 120,
        },
    )
    api_call.start()
    try:
        assert ollama_double.wait_until(
            lambda: bool(ollama_double.last_generation and ollama_double.last_generation.held),
            timeout=60,
        )
        # The server holds the conversation for that reply (its process's heartbeat row, gone
        # with the previous test's database flush, is written again every 2 s).
        poll_until(lambda: not services.claimable(conversation.pk))
        reply.get_by_role("button", name="Regenerate this reply").click()
        banner = page.locator("#banner")
        expect(banner).to_have_attribute("data-code", "generation_running")
        expect(banner).to_contain_text("A reply is still being generated in this conversation")
        # The reply acted on is as it was, and the running one is shown, with its Stop button.
        expect(reply.locator(".msg-body")).to_have_text("Hi.")
        expect(page.locator(REPLY)).to_have_count(2)
        expect(page.locator(REPLY).nth(1)).to_have_class(re.compile(r"\bstreaming\b"))
        expect(page.locator("#stop")).to_be_visible()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chat-generation-running.png"))
        ollama_double.release(held)
        expect(page.locator(REPLY).nth(1)).to_have_attribute("data-status", "complete")
        expect(page.locator(REPLY).nth(1).locator(".msg-body")).to_have_text(
            "".join(words(6, "api")).strip()
        )
    finally:
        ollama_double.release(held)
        api_call.join(120)
    assert len(ollama_double.generations) == 1  # the regenerate was refused
    assert not problems, problems


# --------------------------------------------------------------------------- layout


def tree_showcase(user) -> Conversation:
    """A question answered twice (two models), then a question asked in two versions: the reply
    shown was stopped, the other one ran out of tokens."""
    conversation = Conversation.objects.create(
        owner=user, title="Colours and versions", model="llama3.2:3b"
    )
    figures = {
        "status": "complete",
        "prompt_eval_count": 40,
        "eval_count": 60,
        "eval_duration": 1_000_000_000,
        "total_duration": 1_400_000_000,
        "tokens_per_second": 60.0,
        "time_to_first_token": 0.2,
        "queue_wait": 0.0,
        "done_reason": "stop",
    }
    q1 = Message.objects.create(conversation=conversation, role="user", content="Name a colour")
    Message.objects.create(
        conversation=conversation, parent=q1, role="assistant", content="Blue.",
        model="qwen2.5:0.5b", **figures,
    )  # fmt: skip
    a1 = Message.objects.create(
        conversation=conversation, parent=q1, role="assistant",
        content="**Green**, like a field in spring, and a very long word: "
        "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichen.",
        model="llama3.2:3b", **figures,
    )  # fmt: skip
    q2 = Message.objects.create(
        conversation=conversation, parent=a1, role="user", content="A shorter answer, please"
    )
    Message.objects.create(
        conversation=conversation, parent=q2, role="assistant", content="Green, the colour of",
        model="llama3.2:3b", **{**figures, "done_reason": "length"},
    )  # fmt: skip
    q3 = Message.objects.create(
        conversation=conversation, parent=a1, role="user",
        content="Tell me more about that colour, in a few sentences",
    )  # fmt: skip
    a3 = Message.objects.create(
        conversation=conversation, parent=q3, role="assistant",
        content="Green sits between blue and yellow in the spectrum; it is the colour",
        status="cancelled", model="llama3.2:3b",
    )  # fmt: skip
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=a3)
    return conversation


def test_tree_on_a_phone_and_by_keyboard(daphne, ollama_double, new_context, user):
    conversation = tree_showcase(user)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    desktop = new_context()
    log_in(desktop, daphne, user)
    page, problems = open_chat(desktop, daphne, f"/?c={conversation.pk}")
    replies = page.locator(REPLY)
    expect(replies).to_have_count(2)
    expect(replies.first.locator(".pager-count")).to_have_text("2/2")
    expect(page.locator(QUESTION).nth(1).locator(".pager-count")).to_have_text("2/2")
    expect(replies.nth(1).get_by_role("button", name="Continue this reply")).to_be_visible()
    expect(replies.first.get_by_role("button", name="Continue this reply")).to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / "chat-tree-desktop.png"))

    # The model menu by keyboard: opens on Enter with its first model focused, arrows move,
    # Escape closes it and gives the focus back.
    toggle = replies.first.get_by_role("button", name="Regenerate with another model")
    toggle.focus()
    page.keyboard.press("Enter")
    menu = page.get_by_role("menu", name="Regenerate with")
    items = menu.get_by_role("menuitem")
    expect(items.first).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    expect(items.last).to_be_focused()
    page.screenshot(path=str(SCREENSHOTS / "chat-tree-menu-desktop.png"))
    page.keyboard.press("Escape")
    expect(menu).to_have_count(0)
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    # A click elsewhere closes it too.
    toggle.click()
    expect(menu).to_be_visible()
    page.locator("#chat-title").click()
    expect(menu).to_have_count(0)
    assert not problems, problems

    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    log_in(phone, daphne, user)
    page, problems = open_chat(phone, daphne, f"/?c={conversation.pk}")
    replies = page.locator(REPLY)
    expect(replies.first.locator(".pager-count")).to_have_text("2/2")
    no_horizontal_overflow(page)
    page.screenshot(path=str(SCREENSHOTS / "chat-tree-phone.png"))

    # Every action of a reply fits, with room to tap.
    for name in ("Copy the reply as Markdown", "Regenerate this reply", "Continue this reply"):
        button = replies.nth(1).get_by_role("button", name=name)
        expect(button).to_be_in_viewport()
        box = button.bounding_box()
        assert box is not None and box["height"] >= 32 and box["x"] + box["width"] <= PHONE["width"]

    # The menu of the last reply opens above its button, within the screen.
    toggle = replies.nth(1).get_by_role("button", name="Regenerate with another model")
    toggle.click()
    menu = page.get_by_role("menu", name="Regenerate with")
    expect(menu).to_be_in_viewport()
    box = menu.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    no_horizontal_overflow(page)
    page.screenshot(path=str(SCREENSHOTS / "chat-tree-phone-menu.png"))
    page.keyboard.press("Escape")
    expect(menu).to_have_count(0)

    # The editor, full width.
    question = page.locator(QUESTION).nth(1)
    question.get_by_role("button", name="Edit this message").click()
    editor = question.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_visible()
    expect(question.get_by_role("button", name="Save & send")).to_be_in_viewport()
    no_horizontal_overflow(page)
    page.screenshot(path=str(SCREENSHOTS / "chat-tree-phone-edit.png"))
    question.get_by_role("button", name="Cancel").click()
    expect(editor).to_have_count(0)

    # The question's other version, by its pager.
    question.get_by_role("button", name="Previous version of this message").click()
    expect(question.locator(".msg-body")).to_have_text("A shorter answer, please")
    expect(replies.nth(1).locator(".msg-body")).to_have_text("Green, the colour of")
    # Complete, but cut by max_tokens (done_reason "length"): it can go on too.
    expect(replies.nth(1).get_by_role("button", name="Continue this reply")).to_be_visible()
    expect(replies.nth(1).locator(".badge")).to_have_count(0)
    no_horizontal_overflow(page)
    assert not problems, problems
