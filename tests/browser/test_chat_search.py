"""The sidebar's search in headless Chromium (desktop), against the app in a real Daphne process:
a word found only in a message of an older conversation, in a branch not shown, opens that
conversation on the message's branch with the message in view; and the load test's
conversations are listed only under the sidebar's filter."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.support.live import ARTIFACTS

from .conftest import log_in
from .test_chat_tree import open_chat

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots"


def conversation_with_a_hidden_branch(user) -> tuple[Conversation, Message]:
    """An older conversation, long enough to scroll, whose one mention of "pirate" is in a
    reply that was regenerated (so in a branch not shown)."""
    older = Conversation.objects.create(owner=user, title="Holiday ideas")
    parent = None
    for n in range(12):
        asked = Message.objects.create(
            conversation=older, parent=parent, role="user", content=f"Idea number {n}?"
        )
        parent = Message.objects.create(
            conversation=older, parent=asked, role="assistant", content=f"Idea {n}. " * 40
        )
        if n == 2:
            # Another version of answer 2 mentions the word; the branch shown goes on from
            # the version that does not.
            parent.content = "Visit a museum instead."
            parent.save()
            hidden = Message.objects.create(
                conversation=older,
                parent=asked,
                role="assistant",
                content="Sail with a pirate crew around the islands.",
            )
    Conversation.objects.filter(pk=older.pk).update(current_leaf=parent)
    return older, hidden


def test_search_opens_the_hit_and_the_loadtest_filter(daphne, new_context, make_user):
    user = make_user("searcher@example.com")
    older, hit = conversation_with_a_hidden_branch(user)
    newer = Conversation.objects.create(owner=user, title="Shopping list")
    Message.objects.create(conversation=newer, role="user", content="Milk and bread")
    load = Conversation.objects.create(owner=user, title="[loadtest 1.1] run", source="loadtest")
    Message.objects.create(conversation=load, role="user", content="A pirate load test")

    context = new_context()
    log_in(context, daphne, user)
    page, problems = open_chat(context, daphne)
    conversations = page.locator("#conversations .conv-link")
    expect(conversations).to_have_text(["Shopping list", "Holiday ideas"])

    page.fill("#search", "pirate")
    hits = page.locator("#search-list .search-hit")
    expect(hits).to_have_count(1)  # the load test's message is not among them
    expect(hits.first.locator(".search-hit-title")).to_have_text("Holiday ideas")
    expect(hits.first.locator("mark")).to_have_text("pirate")
    expect(hits.first.locator(".search-hit-snippet")).to_contain_text("Sail with a pirate crew")
    expect(conversations).to_have_count(0)  # no title has the word
    page.screenshot(path=str(SCREENSHOTS / "chat-search-hits.png"))

    hits.first.locator("a").click()
    expect(page.locator("#chat-title")).to_have_text("Holiday ideas")
    target = page.locator("#messages .msg.search-target")
    expect(target).to_contain_text("Sail with a pirate crew")
    expect(target).to_be_in_viewport()
    # Its branch is the one shown now (the server's current leaf moved too).
    expect(page.locator("#messages")).not_to_contain_text("Visit a museum instead.")
    older.refresh_from_db()
    assert older.current_leaf_id == hit.pk  # the branch through it ends with it
    page.screenshot(path=str(SCREENSHOTS / "chat-search-opened.png"))

    # The load test's conversations: hidden, then shown under the filter (and searched there).
    page.fill("#search", "")
    expect(conversations).to_have_text(["Holiday ideas", "Shopping list"])  # newest activity
    page.select_option("#conv-source", "loadtest")
    expect(conversations).to_have_text(["[loadtest 1.1] run"])
    page.fill("#search", "pirate load")
    expect(hits).to_have_count(1)
    expect(hits.first.locator(".search-hit-title")).to_have_text("[loadtest 1.1] run")
    assert problems == []
