"""The pages on a 390 x 844 phone in headless Chromium: nothing wider than the screen (files,
monitoring, chat, API keys), the files as cards, the monitoring charts sized to the screen and
redrawn on resize, one "no NVIDIA GPU" card for a host without one, and one menu button on the
chat (the site's menu inside the chat's drawer)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.services import create_api_key
from chat.models import Conversation
from monitoring.models import GpuSample, HostSample
from tests.support.live import ARTIFACTS
from uploads.models import Upload

from .conftest import DESKTOP, PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"


def fits(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} is {width[0]} px wide on a {width[1]} px screen"


def seed(user) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="Phone layouts", model="m:1b")
    for i, name in enumerate(
        ("quarterly planning meeting notes with a rather long name 2026.md", "photo.png")
    ):
        Upload.objects.create(  # listed only: no file is read
            owner=user,
            original_name=name,
            stored_name=f"{i:032x}.bin",
            size=123_456 * (i + 1),
            content_type="text/markdown" if i == 0 else "image/png",
            kind="text" if i == 0 else "image",
            sha256=f"{i:064x}",
        )
    create_api_key(user, name="a laptop with a long descriptive name", scope="chat")
    now = timezone.now()
    for seconds in range(120, 0, -10):
        at = now - timedelta(seconds=seconds)
        figures = {"ram_total_mb": 32000.0, "ram_used_mb": 9000.0 + seconds, "cpu_percent": 20.0}
        gpu_box = HostSample.objects.create(
            host="a-gpu-box", taken_at=at, gpu_available=True, **figures
        )
        GpuSample.objects.create(
            host_sample=gpu_box,
            host="a-gpu-box",
            taken_at=at,
            index=0,
            uuid="GPU-1",
            name="NVIDIA GeForce RTX 4090",
            memory_used_mb=5120.0,
            memory_total_mb=24564.0,
            utilization_percent=87,
            temperature_c=66,
            power_draw_w=312.5,
            power_limit_w=450.0,
        )
        HostSample.objects.create(
            host="cpu-box", taken_at=at, gpu_available=False,
            gpu_reason="NVML: Driver Not Loaded", **figures,
        )  # fmt: skip
    return conversation


def test_pages_fit_a_phone(daphne, ollama_double, new_context, user):
    conversation = seed(user)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    log_in(context, daphne, user)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    # Files: each file is a card (the table's rows become blocks), nothing wider than the screen.
    page.goto(f"{daphne.url}/uploads/")
    rows = page.locator("#files tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#files thead")).not_to_be_in_viewport()
    for box in (rows.nth(0).bounding_box(), rows.nth(1).bounding_box()):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert rows.first.evaluate("tr => getComputedStyle(tr).display") == "flex"
    expect(rows.first.get_by_role("button", name="Delete")).to_be_in_viewport()
    fits(page)
    page.screenshot(path=str(SCREENSHOTS / "phone-files.png"), full_page=True)

    # API keys: cards too (keys.css).
    page.goto(f"{daphne.url}/accounts/keys/")
    expect(page.locator("table.keys tbody tr")).to_have_count(1)
    fits(page)

    # Monitoring: the GPU host's charts fit the screen; on a host without a GPU one card replaces
    # the GPUs card and the four GPU charts, and the RAM and CPU charts stay.
    page.goto(f"{daphne.url}/monitoring/")
    expect(page.locator("#mon-host")).to_have_value("a-gpu-box")
    expect(page.locator("#chart-gpu-memory path.mon-line")).to_be_attached()
    expect(page.locator("#mon-no-gpu")).to_be_hidden()
    expect(page.locator("[data-gpu-chart]:visible")).to_have_count(4)
    phone_width = page.locator("#chart-ram svg").evaluate("svg => svg.width.baseVal.value")
    chart_box = page.locator("#chart-ram").evaluate("div => div.clientWidth")
    assert phone_width <= chart_box, "the chart is drawn for its container"
    fits(page)
    page.select_option("#mon-host", "cpu-box")
    card = page.locator("#mon-no-gpu")
    expect(card).to_be_visible()
    expect(card.get_by_role("heading")).to_have_text("No NVIDIA GPU on cpu-box")
    expect(card).to_contain_text("NVML: Driver Not Loaded")
    expect(page.locator("#mon-gpu-card")).to_be_hidden()
    expect(page.locator("[data-gpu-chart]:visible")).to_have_count(0)
    expect(page.locator("#chart-ram path.mon-line")).to_be_attached()
    expect(page.locator("#chart-cpu path.mon-line")).to_be_attached()
    fits(page)
    page.screenshot(path=str(SCREENSHOTS / "phone-monitoring-no-gpu.png"), full_page=True)
    # Wider screen, wider charts: they are redrawn for their new container.
    page.set_viewport_size(DESKTOP)
    page.wait_for_function(
        "(before) => document.querySelector('#chart-ram svg').width.baseVal.value > before",
        arg=phone_width,
    )
    page.set_viewport_size(PHONE)

    # Chat: one menu button. The site's top bar gives way to the drawer, which holds its links.
    page.goto(f"{daphne.url}/?c={conversation.pk}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    menu_buttons = page.locator(".menu-toggle:visible, #open-sidebar:visible")
    expect(menu_buttons).to_have_count(1)
    expect(page.locator(".topbar")).to_be_hidden()
    fits(page)
    toggle = page.locator("#open-sidebar")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#sidebar")).to_be_in_viewport()
    page.get_by_text("Site menu").click()
    for link in ("Files", "Monitoring", "API", "API keys", "Password"):
        expect(page.get_by_role("link", name=link, exact=True)).to_be_in_viewport()
    expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
    expect(page.get_by_label("Theme")).to_be_in_viewport()
    page.screenshot(path=str(SCREENSHOTS / "phone-chat-drawer-menu.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    # On a wide screen the menu is back in the top bar.
    page.set_viewport_size(DESKTOP)
    expect(page.locator(".topbar")).to_be_visible()
    expect(page.locator(".topbar").get_by_role("link", name="Files", exact=True)).to_be_visible()
    expect(page.locator("#open-sidebar")).to_be_hidden()
    assert problems == []
