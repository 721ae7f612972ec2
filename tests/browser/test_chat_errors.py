"""What the chat says when Ollama is down or the queue is full, against a Daphne process
configured for it: two Ollama hosts, a dead one first and then the double, and no room in the
queue (OLLAMA_MAX_QUEUE=0)."""

from __future__ import annotations

import threading

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.live import ARTIFACTS, DaphneServer, bearer, free_port

from .conftest import log_in

SCREENSHOTS = ARTIFACTS / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def dead_ollama() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def server(django_db_setup, ollama_double_server, dead_ollama):
    with DaphneServer(
        name="daphne-two-hosts",
        OLLAMA_URLS=f"{dead_ollama},{ollama_double_server.url}",
        OLLAMA_MAX_QUEUE="0",
        OLLAMA_DEFAULT_MODEL="llama3.2:3b",
        # Started while Chromium may be running: the test-only switch stays out of the app.
        DJANGO_ALLOW_ASYNC_UNSAFE="",
    ) as server:
        yield server


def test_ollama_down(server, ollama_double, new_context, user):
    # The first host does not answer and the second fails too: no Ollama at all.
    ollama_double.script(path="/api/tags", status=500, times=None)
    context = new_context()
    log_in(context, server, user)
    page = context.new_page()
    page.goto(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")

    note = page.locator("#models-note")
    expect(note).to_contain_text("Ollama is unreachable")
    expect(page.locator("#model option")).to_have_count(1)  # only "Server default"

    page.fill("#prompt", "Hello?")
    page.click("#send")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Ollama is not reachable")
    expect(banner).to_have_attribute("data-code", "ollama_unreachable")
    expect(page.locator("#prompt")).to_have_value("Hello?")  # given back, to send later
    expect(page.locator("#messages .msg")).to_have_count(0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-ollama-down.png"))


def test_full_queue(server, ollama_double, dead_ollama, new_context, user, make_user):
    context = new_context()
    log_in(context, server, user)
    page = context.new_page()
    page.goto(f"{server.url}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    # One host of two does not answer: said, while the other's models are listed.
    expect(page.locator("#models-note")).to_have_text(f"Unreachable Ollama host: {dead_ollama}")
    expect(page.locator('#model option[value="llama3.2:3b"]')).to_be_attached()

    ollama_double.script(tokens=[f"w{i} " for i in range(30)], token_delay=0.05)
    holder = threading.Thread(
        target=httpx.post,
        args=(f"{server.url}/api/chat/",),
        kwargs={
            "json": {"message": "hold the only slot"},
            "headers": bearer(make_user("bob@example.com")),
            "timeout": 30,
        },
    )
    holder.start()
    try:
        assert ollama_double.wait_until(lambda: ollama_double.in_flight == 1, timeout=60)
        page.fill("#prompt", "Me too")
        page.click("#send")
        banner = page.locator("#banner")
        expect(banner).to_have_attribute("data-code", "queue_full")
        expect(banner).to_contain_text(
            "The server is busy: the queue for this model is full. Try again in"
        )
        expect(page.locator("#prompt")).to_have_value("Me too")
    finally:
        holder.join(30)
    assert len(ollama_double.generations) == 1
