"""The daily token budget in the web chat: a notice from 80 % of the day's budget on (not
below), refreshed after each reply, and the 429 `budget_exhausted` in words. The budget is the
user's own (`daily_token_budget`), so the shared Daphne process needs no settings of its own."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message
from tests.support.live import ARTIFACTS

from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"
REPLY = "#messages .msg-assistant"
NOTE = "#usage-note"


def give_budget(user, budget: int, used: int) -> None:
    """A budget of `budget` tokens a day, of which `used` went on a reply created now."""
    user.daily_token_budget = budget
    user.save(update_fields=["daily_token_budget"])
    conversation = Conversation.objects.create(owner=user, title="Earlier today")
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="a",
        eval_count=used,
    )


def open_chat(new_context, server, user) -> Page:
    # The reset time is shown on the reader's clock: UTC here, as the server's TIME_ZONE.
    context = new_context(timezone_id="UTC", locale="en-US")
    log_in(context, server, user)
    page = context.new_page()
    page.goto(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def test_a_notice_from_80_percent_on_after_each_reply(daphne, ollama_double, new_context, user):
    give_budget(user, 100, used=75)
    page = open_chat(new_context, daphne, user)
    note = page.locator(NOTE)
    expect(note).to_have_attribute("data-state", "below")  # 75 %: nothing said
    expect(note).to_be_hidden()

    ollama_double.script(tokens=["w "] * 10)
    send(page, "Ten tokens, please")
    expect(page.locator(REPLY).last).to_have_attribute("data-status", "complete")
    expect(note).to_have_attribute("data-state", "warn")  # 85 %
    expect(note).to_be_visible()
    expect(note).to_have_text("You have used 85 % of today's 100 tokens; resets at 00:00.")

    ollama_double.script(tokens=["w "] * 15)
    send(page, "Fifteen more")
    expect(page.locator(REPLY).last).to_have_attribute("data-status", "complete")
    expect(note).to_have_attribute("data-state", "exhausted")
    expect(note).to_have_text(
        "You have used all of today's 100 tokens; the budget resets at 00:00."
    )

    # Over budget: refused before anything is saved, said in words, the message given back.
    generations = len(ollama_double.generations)
    send(page, "And one more")
    banner = page.locator("#banner")
    expect(banner).to_have_attribute("data-code", "budget_exhausted")
    expect(banner.locator(".error-text")).to_have_text(
        "You have used today's budget of 100 tokens. It resets at 00:00: you can chat again then."
    )
    expect(page.locator("#prompt")).to_have_value("And one more")
    assert len(ollama_double.generations) == generations
    assert not Message.objects.filter(content="And one more").exists()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-budget-exhausted.png"))


def test_the_notice_on_opening_the_chat(daphne, ollama_double, new_context, user):
    give_budget(user, 10_000, used=8_500)
    page = open_chat(new_context, daphne, user)
    note = page.locator(NOTE)
    expect(note).to_have_text("You have used 85 % of today's 10,000 tokens; resets at 00:00.")
    expect(note).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-budget-notice.png"))


def test_no_notice_without_a_budget(daphne, ollama_double, new_context, user):
    page = open_chat(new_context, daphne, user)
    expect(page.locator(NOTE)).to_have_attribute("data-state", "unlimited")
    expect(page.locator(NOTE)).to_be_hidden()
