"""The Redis gate through the whole app: two Daphne processes share one slot per host."""

import json
import threading

import httpx
import pytest

from tests.support.live import DaphneServer, bearer
from tests.support.redis_db import flushed, redis_test_url

pytestmark = [pytest.mark.integration, pytest.mark.redis]

REDIS_URL = redis_test_url(13)


@pytest.fixture
def redis_url():
    yield from flushed(REDIS_URL)


def stream_chat(url: str, headers: dict, results: list, index: int) -> None:
    events = []
    with httpx.stream(
        "POST",
        f"{url}/api/chat/stream/",
        json={"message": f"m{index}"},
        headers=headers,
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    results[index] = events


def test_two_daphne_processes_never_exceed_one_generation(
    transactional_db, ollama_double, user, redis_url
):
    ollama_double.configure(num_parallel=8)  # the double would accept more: the gate must not
    ollama_double.script(tokens=["x"] * 10, token_delay=0.03, times=None)
    env = {
        "OLLAMA_URL": ollama_double.url,
        "OLLAMA_DEFAULT_MODEL": "llama3.2:3b",
        "REDIS_URL": redis_url,
        "OLLAMA_MAX_CONCURRENCY": "1",
        "CHAT_MAX_GENERATIONS_PER_USER": "0",  # one user sends all six: the gate is the test
    }
    with DaphneServer("daphne-a", **env) as first, DaphneServer("daphne-b", **env) as second:
        headers = bearer(user)
        results: list = [None] * 6
        threads = [
            threading.Thread(
                target=stream_chat,
                args=((first if i % 2 else second).url, headers, results, i),
            )
            for i in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert ollama_double.max_in_flight == 1
    assert len(ollama_double.generations) == 6
    for events in results:
        assert events is not None
        assert events[-1]["type"] == "metrics"
        assert "".join(e["content"] for e in events if e["type"] == "content") == "x" * 10
    queued = [e for events in results for e in events if e["type"] == "queued"]
    assert queued, "requests that waited were told their position"
    assert max(e["position"] for e in queued) >= 2
    in_flight_at_start = {events[-1]["in_flight_at_start"] for events in results}
    assert in_flight_at_start == {1}
