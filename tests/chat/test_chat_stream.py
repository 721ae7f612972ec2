"""POST /api/chat/stream/ served by a real Daphne process."""

import json
import time

import httpx
import pytest

from chat.models import Message
from tests.support.live import bearer

pytestmark = pytest.mark.integration


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_stream_events_in_order(daphne, user, ollama_double):
    ollama_double.script(tokens=["Hel", "lo", " wor", "ld"], token_delay=0.01)
    with httpx.stream(
        "POST",
        f"{daphne.url}/api/chat/stream/",
        json={"message": "Hi"},
        headers=bearer(user),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response)

    assert events[-1] == "[DONE]"
    kinds = [e["type"] if isinstance(e, dict) else e for e in events]
    assert kinds[:2] == ["status", "status"]
    assert kinds[-2:] == ["metrics", "[DONE]"]
    assert set(kinds[2:-2]) == {"content"}
    accepted, started = events[0], events[1]
    assert accepted["status"] == "accepted" and started["status"] == "started"
    text = ""
    for event in events[2:-2]:  # tokens that queued up may come merged; offsets stay exact
        assert event["offset"] == len(text)
        text += event["content"]
    assert text == "Hello world"
    metrics = events[-2]
    assert metrics["eval_count"] == 4
    assert metrics["tokens_per_second"] > 0
    reply = Message.objects.get(pk=started["message"])
    assert reply.status == "complete" and reply.content == "Hello world"


def test_stream_validation_errors_are_plain_json(daphne, user, ollama_double):
    response = httpx.post(
        f"{daphne.url}/api/chat/stream/",
        json={"message": "x", "model": "missing:7b"},
        headers=bearer(user),
        timeout=10,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


def test_mid_stream_error_is_an_error_event(daphne, user, ollama_double):
    ollama_double.script(tokens=["a", "b", "c"], error_after=2, error_message="model crashed")
    with httpx.stream(
        "POST",
        f"{daphne.url}/api/chat/stream/",
        json={"message": "x"},
        headers=bearer(user),
        timeout=10,
    ) as response:
        events = sse_events(response)
    error = events[-2]
    assert error["type"] == "error"
    assert error["code"] == "ollama_stream_error"
    assert "model crashed" in error["detail"]
    assert events[-1] == "[DONE]"
    reply = Message.objects.get(pk=error["message"])
    assert (reply.status, reply.content) == ("failed", "ab")


def test_client_disconnect_cancels_upstream_and_keeps_the_partial_reply(
    daphne, user, ollama_double
):
    ollama_double.script(tokens=[f"t{i} " for i in range(200)], token_delay=0.05)
    received = ""
    with httpx.stream(
        "POST",
        f"{daphne.url}/api/chat/stream/",
        json={"message": "long one"},
        headers=bearer(user),
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event["type"] == "content":
                    received += event["content"]
                    if len(received) > 15:
                        break
    # the client hung up: the gateway must hang up on Ollama too
    assert ollama_double.wait_until(
        lambda: ollama_double.last_generation and ollama_double.last_generation.finished,
        timeout=10,
    )
    generation = ollama_double.last_generation
    assert generation.client_disconnected
    assert generation.tokens_sent < 200

    deadline = time.monotonic() + 10
    reply = None
    while time.monotonic() < deadline:
        reply = Message.objects.filter(role="assistant").first()
        if reply and reply.status != "streaming":
            break
        time.sleep(0.05)
    assert reply is not None and reply.status == "cancelled"
    assert reply.content.startswith(received)
    assert len(reply.content) >= len(received)
    assert Message.objects.filter(role="user", content="long one").exists()


def test_tokens_faster_than_the_client_are_written_together(daphne, user, ollama_double):
    ollama_double.script(tokens=["x"] * 2000)
    with httpx.stream(
        "POST",
        f"{daphne.url}/api/chat/stream/",
        json={"message": "fast"},
        headers=bearer(user),
        timeout=10,
    ) as response:
        events = sse_events(response)
    contents = [e for e in events if isinstance(e, dict) and e["type"] == "content"]
    assert "".join(e["content"] for e in contents) == "x" * 2000
    assert len(contents) < 2000
