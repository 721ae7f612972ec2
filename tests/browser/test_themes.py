"""Light and dark themes in headless Chromium: every page's text meets WCAG AA contrast in both
palettes (measured in the page), screenshots of both, and the theme picker (remembered across a
reload, shared with Django admin's toggle, following the system while it says "System",
highlight.js and the monitoring charts switching with it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.services import create_api_key
from chat.models import Conversation, Message
from monitoring.models import HostSample
from tests.support.live import ARTIFACTS
from uploads.models import Upload

from .conftest import PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"

# The in-page measurement (contrast.js beside this file), evaluated as one function.
CONTRAST_JS = (Path(__file__).with_name("contrast.js")).read_text(encoding="utf-8")

CODE_REPLY = """Reverse a list:

```python
items = [1, 2, 3]
print(items[::-1])  # [3, 2, 1]
```

| way | copies |
|---|---|
| slicing | yes |

> Pick `reversed()` when you only iterate.
"""


def seed(user) -> Conversation:
    """A conversation with code, a table and figures; files; a key; a host without a GPU."""
    conversation = Conversation.objects.create(owner=user, title="Reverse a list", model="m:1b")
    Conversation.objects.create(owner=user, title="Trip ideas for the weekend")
    question = Message.objects.create(
        conversation=conversation, role="user", content="How do I reverse a list?"
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=CODE_REPLY,
        status="complete",
        model="llama3.2:3b",
        eval_count=96,
        eval_duration=1_600_000_000,
        tokens_per_second=60.0,
        time_to_first_token=0.21,
        done_reason="stop",
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=answer)
    files = (("notes.md", "text/markdown", "text"), ("photo.png", "image/png", "image"))
    for i, (name, content_type, kind) in enumerate(files):
        Upload.objects.create(  # listed only: no file is read
            owner=user,
            original_name=name,
            stored_name=f"{i:032x}.bin",
            size=1234 * (i + 1),
            content_type=content_type,
            kind=kind,
            sha256=f"{i:064x}",
        )
    create_api_key(user, name="laptop", scope="read")
    now = timezone.now()
    for seconds in range(120, 0, -10):
        HostSample.objects.create(
            host="cpu-box",
            taken_at=now - timedelta(seconds=seconds),
            ram_total_mb=16000.0,
            ram_used_mb=4000.0 + seconds,
            cpu_percent=10.0 + seconds / 20,
            cpu_count=8,
            gpu_available=False,
            gpu_reason="NVML: Driver Not Loaded",
        )
    return conversation


def low_contrast(page: Page) -> list[dict]:
    seen = page.evaluate(CONTRAST_JS)
    assert len(seen) > 5, "the page shows text"
    return [item for item in seen if item["ratio"] < item["required"]]


def ready(page: Page, path: str) -> None:
    """Wait for what each page draws after loading (the contrast walk sees the final page)."""
    if path.startswith("/?c="):
        expect(page.locator("#messages .msg-assistant .code-block")).to_be_visible()
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    elif path == "/uploads/":
        expect(page.locator("#files tbody tr")).to_have_count(2)
    elif path == "/monitoring/":
        expect(page.locator("#mon-no-gpu")).to_be_visible()
        expect(page.locator("#chart-cpu path.mon-line")).to_be_attached()
    elif path == "/accounts/keys/":
        expect(page.locator("table.keys tbody tr")).to_have_count(1)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_meets_wcag_aa_in_both_themes(daphne, ollama_double, new_context, user, theme):
    conversation = seed(user)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    failures: dict[str, list[dict]] = {}

    # Logged out: the login page (the theme follows the system: emulated here).
    anonymous = new_context(color_scheme=theme).new_page()
    anonymous.goto(f"{daphne.url}/accounts/login/")
    failures["/accounts/login/"] = low_contrast(anonymous)

    context = new_context(color_scheme=theme)
    log_in(context, daphne, user)
    page = context.new_page()
    shots = {f"/?c={conversation.pk}": "chat", "/uploads/": "files", "/monitoring/": "monitoring"}
    # /admin/ as a normal user: the error page in the site's style (a 404 is DEBUG's own here).
    for path in (*shots, "/accounts/keys/", "/accounts/password/", "/admin/"):
        page.goto(f"{daphne.url}{path}")
        ready(page, path)
        assert page.evaluate("document.documentElement.dataset.theme") == "auto"
        failures[path] = low_contrast(page)
        if path in shots:
            page.screenshot(path=str(SCREENSHOTS / f"theme-{theme}-{shots[path]}.png"))
    # The chat's menus and details open too.
    page.goto(f"{daphne.url}/?c={conversation.pk}")
    ready(page, f"/?c={conversation.pk}")
    page.locator("#messages .msg-assistant .details-toggle").click()
    expect(page.locator("#messages .msg-assistant .figures")).to_be_visible()
    page.click("#settings-toggle")
    expect(page.locator("#settings")).to_be_visible()
    failures["chat with details and settings"] = low_contrast(page)

    phone = new_context(color_scheme=theme, viewport=PHONE, is_mobile=True, has_touch=True)
    log_in(phone, daphne, user)
    small = phone.new_page()
    small.goto(f"{daphne.url}/?c={conversation.pk}")
    ready(small, f"/?c={conversation.pk}")
    small.screenshot(path=str(SCREENSHOTS / f"theme-{theme}-chat-phone.png"))
    failures["chat on a phone"] = low_contrast(small)
    small.click("#open-sidebar")
    small.locator("#drawer-site summary").click()
    expect(small.get_by_role("link", name="Files", exact=True)).to_be_in_viewport()
    failures["chat drawer on a phone"] = low_contrast(small)

    failing = {where: found for where, found in failures.items() if found}
    assert failing == {}, f"text below WCAG AA in the {theme} theme: {failing}"


def colour(page: Page, selector: str, prop: str = "color") -> str:
    # One evaluation finds and reads the element: the dashboard redraws its charts every second.
    value = page.evaluate(
        "([selector, prop]) => getComputedStyle(document.querySelector(selector))[prop]",
        [selector, prop],
    )
    assert value, f"{selector} has no {prop}"
    return value


def test_the_picker_is_remembered_shared_with_admin_and_follows_the_system(
    daphne, ollama_double, new_context, make_user
):
    staff = make_user("ops@example.com", is_staff=True, is_superuser=True)
    conversation = seed(staff)
    context = new_context(color_scheme="dark")
    log_in(context, daphne, staff)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{daphne.url}/?c={conversation.pk}")
    ready(page, f"/?c={conversation.pk}")
    picker = page.get_by_label("Theme")
    keyword = "#messages .code-block .hljs-keyword, #messages .code-block .hljs-built_in"

    # System (the default) follows the emulated dark system: dark page, dark code theme.
    expect(picker).to_have_value("auto")
    dark_bg = colour(page, "body", "backgroundColor")
    dark_keyword = colour(page, keyword)
    page.emulate_media(color_scheme="light")
    expect(page.locator("body")).not_to_have_css("background-color", dark_bg)
    light_bg = colour(page, "body", "backgroundColor")
    assert colour(page, keyword) != dark_keyword
    page.emulate_media(color_scheme="dark")
    expect(page.locator("body")).to_have_css("background-color", dark_bg)

    # A forced Light wins over the dark system, for the page and highlight.js, and is remembered.
    picker.select_option("light")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(page.locator("body")).to_have_css("background-color", light_bg)
    light_keyword = colour(page, keyword)
    assert light_keyword != dark_keyword
    page.reload()
    ready(page, f"/?c={conversation.pk}")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(page.get_by_label("Theme")).to_have_value("light")
    expect(page.locator("body")).to_have_css("background-color", light_bg)
    assert colour(page, keyword) == light_keyword

    # Django admin's own toggle reads the same choice (same key, same values): no clash.
    page.goto(f"{daphne.url}/admin/")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")

    # Dark, on the monitoring page: the drawn charts recolour without a redraw.
    page.goto(f"{daphne.url}/monitoring/")
    ready(page, "/monitoring/")
    line = "#chart-cpu path.mon-line"
    light_line = colour(page, line, "stroke")
    page.get_by_label("Theme").select_option("dark")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.locator("body")).to_have_css("background-color", dark_bg)
    assert colour(page, line, "stroke") != light_line
    # ...and a light system does not override a forced Dark; System follows it again.
    page.emulate_media(color_scheme="light")
    page.reload()
    ready(page, "/monitoring/")
    expect(page.locator("body")).to_have_css("background-color", dark_bg)
    page.get_by_label("Theme").select_option("auto")
    expect(page.locator("body")).to_have_css("background-color", light_bg)
    assert colour(page, line, "stroke") == light_line
    assert problems == []
