"""The web chat in headless Chromium against the app in a real Daphne process and the Ollama
double: log in, pick a model, stream, stop, reload and reconnect mid-reply, untrusted Markdown,
error messages, the conversation list, the phone layout."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from django.contrib.sessions.models import Session
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message
from tests.support.live import ARTIFACTS, bearer, set_server_password

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"
REPLY = "#messages .msg-assistant"


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


def open_chat(context, server, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(f"{server.url}{path}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def reply_text(page: Page, index: int = -1) -> str:
    return page.locator(REPLY).nth(index).locator(".msg-body").inner_text()


def wait_for_text(page: Page, minimum: int = 1) -> None:
    page.wait_for_function(
        """(minimum) => {
             const replies = document.querySelectorAll('#messages .msg-assistant .msg-body');
             const last = replies[replies.length - 1];
             return last && last.textContent.length >= minimum;
           }""",
        arg=minimum,
    )


def last_reply(conversation: Conversation) -> Message:
    reply = conversation.messages.filter(role="assistant").order_by("-id").first()
    assert reply is not None, "the conversation has no reply"
    return reply


# --------------------------------------------------------------------------- streaming


def test_log_in_pick_a_model_and_stream(daphne, ollama_double, new_context, user, password):
    set_server_password(user, password)
    context = new_context()
    page = context.new_page()
    problems = watch_errors(page)

    # The app's own strict CSP applies: an inline script or style would log a violation.
    page.goto(f"{daphne.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.fill("#id_username", user.email)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{daphne.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("#conn")).to_have_text("Connected")

    # The picker lists the models with their size and whether they are loaded.
    qwen = page.locator('#model option[value="qwen2.5:0.5b"]')
    expect(qwen).to_have_text(re.compile(r"qwen2\.5:0\.5b · 0\.40 GB · .*not loaded"))
    expect(page.locator('#model option[value="llama3.2:3b"]')).to_contain_text("2.0 GB")
    page.select_option("#model", "qwen2.5:0.5b")

    tokens = words(30)
    ollama_double.script(tokens=tokens, token_delay=0.06)
    send(page, "Count for me, please")
    expect(page.locator("#messages .msg-user")).to_have_text("Count for me, please")
    expect(page.locator("#stop")).to_be_visible()

    # The text grows while the reply is still being generated.
    wait_for_text(page, 6)
    first = len(reply_text(page))
    expect(page.locator(REPLY)).to_have_class(re.compile(r"\bstreaming\b"))
    wait_for_text(page, first + 20)
    assert ollama_double.last_generation is not None
    assert not ollama_double.last_generation.completed, "the reply grew only after it finished"

    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    assert reply_text(page).strip() == "".join(tokens).strip()
    expect(page.locator("#send")).to_be_visible()
    assert ollama_double.last_request("/api/chat").body["model"] == "qwen2.5:0.5b"

    conversation = Conversation.objects.get(owner=user)
    assert conversation.model == "qwen2.5:0.5b"
    assert last_reply(conversation).status == "complete"
    expect(page).to_have_url(re.compile(rf"\?c={conversation.pk}$"))
    # The new conversation appears in the sidebar, highlighted.
    expect(page.locator("#conversations .conv.active")).to_have_text(
        re.compile("Count for me, please")
    )
    expect(page.locator("#chat-title")).to_have_text("Count for me, please")

    # The figures of the reply, on demand.
    figures = page.locator(f"{REPLY} .figures")
    expect(figures).to_be_hidden()
    page.locator(f"{REPLY} .details-toggle").click()
    expect(figures).to_be_visible()
    expect(figures).to_contain_text("Tokens/s")
    expect(figures).to_contain_text("Time to first token")
    expect(figures).to_contain_text("30 generated")
    expect(figures).to_contain_text("Queue wait")

    # After the reply the model is loaded, and the picker says so.
    expect(qwen).to_contain_text("● loaded")
    expect(page.locator("#model-dot")).to_have_class(re.compile(r"\bloaded\b"))
    assert not problems, problems


def test_settings_are_saved_per_conversation_and_used(daphne, ollama_double, new_context, user):
    conversation = Conversation.objects.create(owner=user, title="Tuned")
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne, f"/?c={conversation.pk}")
    expect(page.locator("#chat-title")).to_have_text("Tuned")

    page.click("#settings-toggle")
    page.fill("#system-prompt", "Answer like a pirate.")
    page.fill("#opt-temperature", "3")
    page.click("#settings-save")
    expect(page.locator("#settings-status")).to_contain_text("between 0 and 2")
    page.fill("#opt-temperature", "0.2")
    page.fill("#opt-max_tokens", "64")
    page.fill("#opt-num_ctx", "4096")
    page.fill("#opt-top_p", "0.9")
    page.click("#settings-save")
    expect(page.locator("#settings-status")).to_have_text("Saved.")
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Answer like a pirate."
    assert conversation.options == {
        "temperature": 0.2,
        "max_tokens": 64,
        "num_ctx": 4096,
        "top_p": 0.9,
    }

    ollama_double.script(reply="Arr.")
    send(page, "Hello")
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    body = ollama_double.last_request("/api/chat").body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert body["options"] == {"temperature": 0.2, "num_predict": 64, "num_ctx": 4096, "top_p": 0.9}

    # They come back with the conversation.
    page.reload()
    page.click("#settings-toggle")
    expect(page.locator("#system-prompt")).to_have_value("Answer like a pirate.")
    expect(page.locator("#opt-num_ctx")).to_have_value("4096")


def test_stop_a_reply(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne)
    tokens = words(200)
    ollama_double.script(tokens=tokens, token_delay=0.05)
    send(page, "Go on forever")
    wait_for_text(page, 10)
    page.click("#stop")

    expect(page.locator(REPLY)).to_have_attribute("data-status", "cancelled")
    expect(page.locator(f"{REPLY} .badge")).to_have_text("Stopped")
    expect(page.locator("#send")).to_be_visible()
    assert ollama_double.wait_until(
        lambda: ollama_double.last_generation.client_disconnected, timeout=60
    )
    reply = last_reply(Conversation.objects.get(owner=user))
    assert reply.status == "cancelled"
    assert 0 < len(reply.content) < len("".join(tokens))
    shown = reply_text(page).strip()
    assert shown and "".join(tokens).startswith(shown)


def test_reload_mid_reply_resumes(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne)
    tokens = words(50, "tok")
    # The reply pauses after 20 tokens until the test lets it go on: the reload lands in the
    # middle of it however slow the machine (a token delay raced the reload).
    held = ollama_double.script(tokens=tokens, hold_after=20)
    first_part = "".join(tokens[:20]).strip()
    send(page, "A long answer please")
    wait_for_text(page, len(first_part))
    assert ollama_double.wait_until(lambda: ollama_double.last_generation.held, timeout=60)
    expect(page).to_have_url(re.compile(r"\?c="))

    page.reload()
    expect(page.locator("#messages .msg-user")).to_have_text("A long answer please")
    expect(page.locator(REPLY)).to_have_class(re.compile(r"\bstreaming\b"))
    # While Ollama is paused the page has what was saved so far (saves follow tokens, every
    # CHAT_FLUSH_INTERVAL): some of the first part; the rest comes with the next tokens.
    assert first_part.startswith(reply_text(page).strip())
    assert not ollama_double.last_generation.completed

    ollama_double.release(held)
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    assert reply_text(page).strip() == "".join(tokens).strip()  # nothing lost, nothing twice
    assert len(ollama_double.generations) == 1  # resumed, not sent again
    assert last_reply(Conversation.objects.get(owner=user)).status == "complete"


def test_connection_drop_reconnects_and_resumes(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = context.new_page()
    sockets = []

    def through(ws):
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws/chat/$"), through)
    page.goto(f"{daphne.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    page.evaluate(
        """() => {
             window.__states = [];
             const conn = document.getElementById('conn');
             new MutationObserver(() => window.__states.push(conn.dataset.state))
               .observe(conn, {attributes: true, attributeFilter: ['data-state']});
           }"""
    )
    tokens = words(40, "piece")
    ollama_double.script(tokens=tokens, token_delay=0.05)
    send(page, "Stream through a bad network")
    wait_for_text(page, 10)

    sockets[-1].close()  # the connection breaks mid-reply
    expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
    assert len(sockets) == 2
    states = page.evaluate("window.__states")
    assert "reconnecting" in states and states[-1] == "connected", states
    assert reply_text(page).strip() == "".join(tokens).strip()
    assert len(ollama_double.generations) == 1


def test_queue_position_is_shown(daphne, ollama_double, new_context, user, make_user):
    ollama_double.script(tokens=words(25), token_delay=0.05)  # bob's reply holds the slot
    other = make_user("bob@example.com")
    busy = threading.Thread(
        target=httpx.post,
        args=(f"{daphne.url}/api/chat/",),
        kwargs={
            "json": {"message": "hold the slot"},
            "headers": bearer(other),
            "timeout": 30,
        },
    )
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne)
    busy.start()
    try:
        assert ollama_double.wait_until(lambda: ollama_double.in_flight == 1, timeout=60)
        send(page, "Me next")
        # Said once, in the reply it is about: not again in the status line.
        expect(page.locator(f"{REPLY} .msg-note")).to_have_text(
            re.compile(r"^The GPU is busy: you are 1st in line(, about \d+ (s|min) to wait)?\.$")
        )
        expect(page.locator("#chat-status")).to_be_hidden()
        expect(page.locator(REPLY)).to_have_attribute("data-status", "complete")
        expect(page.locator("#chat-status")).to_be_hidden()
    finally:
        busy.join(30)
    page.locator(f"{REPLY} .details-toggle").click()
    waited = page.locator(f"{REPLY} .figures dt:text-is('Queue wait') + dd").inner_text()
    assert float(waited.split()[0]) > 0.1  # the wait it reported


# --------------------------------------------------------------------------- untrusted text

XSS_REPLY = """Here is <script>window.__xss=1</script> and <img src=x onerror="window.__xss=1">.

A [click](javascript:window.__xss=1) link, a [spaced]( javascript:window.__xss=1 ) one, \
an [encoded](JaVaScRiPt:window.__xss=1) one and a [safe one](https://example.com/safe).

![pixel](https://example.com/track.png)

```python
def greet(name):
    return f"hello {name}"
```
"""


def test_untrusted_markdown_does_nothing(daphne, ollama_double, new_context, user):
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    log_in(context, daphne, user)
    page = open_chat(context, daphne)
    problems = watch_errors(page)
    ollama_double.script(reply=XSS_REPLY, token_delay=0.002)
    send(page, "Say something nasty")
    reply = page.locator(REPLY)
    expect(reply).to_have_attribute("data-status", "complete")

    assert page.evaluate("typeof window.__xss") == "undefined"
    messages = page.locator("#messages")
    assert messages.locator("script").count() == 0
    assert messages.locator("img").count() == 0
    assert messages.locator("[onerror]").count() == 0
    # The markup shows as text, exactly as the model wrote it.
    expect(reply).to_contain_text("<script>window.__xss=1</script>")
    expect(reply).to_contain_text('<img src=x onerror="window.__xss=1">')
    # Links keep only http(s)/mailto addresses; the others keep their words, not their target.
    hrefs = messages.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/safe", "https://example.com/track.png"], hrefs
    for name in ("click", "spaced", "encoded"):
        expect(reply.locator(".md-unsafe-link", has_text=name)).to_have_count(1)
    safe = reply.get_by_role("link", name="safe one")
    expect(safe).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(safe).to_have_attribute("target", "_blank")
    # Clicking the neutralised links does nothing either.
    reply.locator(".md-unsafe-link", has_text="click").click()
    assert page.evaluate("typeof window.__xss") == "undefined"

    # The code block is highlighted, and its button copies the code.
    code = reply.locator(".code-block pre code")
    expect(code).to_have_class(re.compile(r"\bhljs\b.*|.*\blanguage-python\b"))
    expect(code.locator("span.hljs-keyword", has_text="def")).to_have_count(1)
    expect(reply.locator(".code-lang")).to_have_text("python")
    reply.locator(".copy-btn").click()
    expect(reply.locator(".copy-btn")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == 'def greet(name):\n    return f"hello {name}"'
    assert not problems, problems


# --------------------------------------------------------------------------- errors


def test_missing_model_is_explained(daphne, ollama_double, new_context, user):
    conversation = Conversation.objects.create(owner=user, title="Ghost", model="ghost:1b")
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne, f"/?c={conversation.pk}")
    expect(page.locator("#model option:checked")).to_have_text("ghost:1b (not installed)")
    send(page, "Anyone there?")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("The model is not installed on the Ollama server")
    expect(banner).to_have_attribute("data-code", "model_not_found")
    # Nothing was sent: the message is back in the box, ready to go with another model.
    expect(page.locator("#prompt")).to_have_value("Anyone there?")
    expect(page.locator("#messages .msg")).to_have_count(0)
    assert not ollama_double.requests_to("/api/chat")


def test_session_expiry_asks_to_log_in_again(daphne, ollama_double, new_context, user):
    context = new_context()
    log_in(context, daphne, user)
    page = context.new_page()
    sockets = []

    def through(ws):
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws/chat/$"), through)
    page.goto(f"{daphne.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    # The page's first loads are done: the 401 must come from the socket's reconnect.
    expect(page.locator("#conv-empty")).to_be_visible()

    Session.objects.all().delete()  # the session ends (expiry, logout elsewhere)
    sockets[-1].close()  # and the socket reconnects without one
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Your session expired, log in again")
    expect(page.locator("#conn")).to_have_text("Signed out")
    expect(page.locator("#prompt")).to_be_disabled()
    time.sleep(0.8)
    assert len(sockets) == 2, "it must not keep reconnecting once the session is gone"
    banner.get_by_role("link", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))


# --------------------------------------------------------------------------- conversations


def test_rename_delete_and_search_conversations(daphne, ollama_double, new_context, user):
    alpha = Conversation.objects.create(owner=user, title="Alpha plan")
    plan = Message.objects.create(conversation=alpha, role="user", content="Plan alpha")
    step = Message.objects.create(
        conversation=alpha, parent=plan, role="assistant", content="**Step one**", status="complete"
    )
    Conversation.objects.filter(pk=alpha.pk).update(current_leaf=step)  # the branch shown
    beta = Conversation.objects.create(owner=user, title="Beta notes")
    Conversation.objects.create(owner=user, title="Gamma notes")
    context = new_context()
    log_in(context, daphne, user)
    page = open_chat(context, daphne)
    items = page.locator("#conversations .conv")
    expect(items).to_have_count(3)

    page.fill("#search", "notes")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("notes")
    page.fill("#search", "nothing like it")
    expect(page.locator("#conv-empty")).to_be_visible()
    page.fill("#search", "")
    expect(items).to_have_count(3)

    # Open one: its messages, rendered.
    items.filter(has_text="Alpha plan").locator(".conv-link").click()
    expect(page).to_have_url(re.compile(rf"\?c={alpha.pk}$"))
    expect(page.locator(f"{REPLY} strong")).to_have_text("Step one")

    # Rename.
    alpha_item = items.filter(has_text="Alpha plan")
    alpha_item.locator(".conv-rename").click()
    page.fill(".conv-rename-input", "Renamed plan")
    page.keyboard.press("Enter")
    expect(items.filter(has_text="Renamed plan")).to_have_count(1)
    expect(page.locator("#chat-title")).to_have_text("Renamed plan")
    alpha.refresh_from_db()
    assert alpha.title == "Renamed plan"

    # Delete, after confirming.
    page.once("dialog", lambda dialog: dialog.accept())
    items.filter(has_text="Beta notes").locator(".conv-delete").click()
    expect(items).to_have_count(2)
    assert not Conversation.objects.filter(pk=beta.pk).exists()
    # Deleting the open conversation leaves a new chat.
    page.once("dialog", lambda dialog: dialog.accept())
    items.filter(has_text="Renamed plan").locator(".conv-delete").click()
    expect(items).to_have_count(1)
    expect(page.locator("#chat-title")).to_have_text("New chat")
    expect(page.locator("#messages .msg")).to_have_count(0)
    assert not Conversation.objects.filter(pk=alpha.pk).exists()


# --------------------------------------------------------------------------- layout

SHOWCASE = """## Three ways to reverse a list

1. **Slicing**: `items[::-1]` makes a copy.
2. **In place**: `items.reverse()` changes the list.
3. *Lazily*: `reversed(items)` gives an iterator.

```python
items = [1, 2, 3]
print(items[::-1])  # [3, 2, 1]
```

| way | copies | cost |
|---|:---:|---:|
| slicing | yes | O(n) |
| reverse() | no | O(n) |

> Pick `reversed()` when you only iterate.
"""


def showcase(user) -> Conversation:
    conversation = Conversation.objects.create(
        owner=user, title="Reverse a list in Python", model="llama3.2:3b"
    )
    Conversation.objects.create(owner=user, title="Trip ideas for the weekend")
    Conversation.objects.create(owner=user, title="SQL window functions")
    question = Message.objects.create(
        conversation=conversation, role="user", content="How do I reverse a list in Python?"
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=SHOWCASE,
        status="complete",
        model="llama3.2:3b",
        prompt_eval_count=31,
        prompt_eval_duration=120_000_000,
        eval_count=96,
        eval_duration=1_600_000_000,
        total_duration=1_900_000_000,
        tokens_per_second=60.0,
        time_to_first_token=0.21,
        queue_wait=0.0,
        done_reason="stop",
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=answer)  # the branch shown
    return conversation


def test_screenshots_desktop_and_phone(daphne, ollama_double, new_context, user):
    conversation = showcase(user)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    desktop = new_context()
    log_in(desktop, daphne, user)
    page = open_chat(desktop, daphne, f"/?c={conversation.pk}")
    expect(page.locator(f"{REPLY} table")).to_be_visible()
    expect(page.locator("#sidebar")).to_be_in_viewport()
    expect(page.locator("#open-sidebar")).to_be_hidden()
    expect(page.locator('#model option[value="llama3.2:3b"]')).to_be_attached()
    page.locator(f"{REPLY} .details-toggle").click()
    expect(page.locator(f"{REPLY} .figures")).to_contain_text("60.0")
    page.fill("#prompt", "And for a tuple?")
    page.screenshot(path=str(SCREENSHOTS / "chat-desktop.png"))

    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    log_in(phone, daphne, user)
    page = open_chat(phone, daphne, f"/?c={conversation.pk}")
    expect(page.locator(f"{REPLY} table")).to_be_visible()
    # The sidebar is a drawer: hidden until the menu button opens it.
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    expect(page.locator("#open-sidebar")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "chat-phone.png"))
    # Nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # One menu button: the site's top bar gives way to the drawer, whose "Site menu" holds its
    # links, all of them reachable; Escape closes the drawer.
    expect(page.locator(".menu-toggle")).to_be_hidden()
    expect(page.locator("#site-nav")).to_be_hidden()
    page.click("#open-sidebar")
    page.locator("#drawer-site summary").click()
    for link in ("Files", "Monitoring", "API", "Password"):
        expect(page.get_by_role("link", name=link, exact=True)).to_be_in_viewport()
    expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(SCREENSHOTS / "chat-phone-menu.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    page.click("#open-sidebar")
    expect(page.locator("#sidebar")).to_be_in_viewport()
    page.wait_for_timeout(250)  # the slide-in transition
    page.screenshot(path=str(SCREENSHOTS / "chat-phone-drawer.png"))
    page.locator("#conversations .conv-link", has_text="SQL window functions").click()
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    expect(page.locator("#chat-title")).to_have_text("SQL window functions")
