"""Which host serves a chat: the model lists of the hosts, fetched once however many ask."""

import asyncio

import pytest

from chat import hosts

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def cold_cache():
    hosts.forget_models()
    yield
    hosts.forget_models()


async def test_a_burst_of_chats_asks_the_host_for_its_models_once(ollama):
    hosts_now = await asyncio.gather(*(hosts.pick_host("llama3.2:3b") for _ in range(20)))
    assert set(hosts_now) == {ollama.url}
    assert len(ollama.requests_to("/api/tags")) == 1


async def test_a_failed_fetch_is_not_kept(ollama, settings):
    settings.OLLAMA_URLS = ["http://127.0.0.1:9"]  # nothing listens there
    first = await hosts.host_models("http://127.0.0.1:9")
    assert first.error is not None and first.models == []
    settings.OLLAMA_URLS = [ollama.url]
    again = await hosts.host_models(ollama.url)
    assert again.error is None and again.models
