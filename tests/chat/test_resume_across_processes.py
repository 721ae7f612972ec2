"""A generation started on one Daphne process is resumed on another, over the real Redis."""

import json
import os

import pytest
import redis
from websockets.sync.client import connect

from tests.support.live import DaphneServer, bearer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0] + "/12"


@pytest.fixture
def redis_url():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # the real Redis is required: an error here fails the test
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


def ws_url(server: DaphneServer) -> str:
    return server.url.replace("http://", "ws://") + "/ws/chat/"


def test_resume_on_another_process(transactional_db, ollama_double, user, redis_url):
    tokens = [f"{i:03d}." for i in range(80)]
    ollama_double.script(tokens=tokens, token_delay=0.02)
    env = {
        "OLLAMA_URL": ollama_double.url,
        "OLLAMA_DEFAULT_MODEL": "llama3.2:3b",
        "REDIS_URL": redis_url,
        "CHAT_FLUSH_INTERVAL": "0.2",
    }
    headers = bearer(user)
    with (
        DaphneServer("daphne-first", **env) as first,
        DaphneServer("daphne-second", **env) as second,
    ):
        have = ""
        with connect(ws_url(first), additional_headers=headers) as socket:
            socket.send(json.dumps({"type": "chat.send", "message": "count"}))
            while len(have) < 60:
                frame = json.loads(socket.recv(timeout=10))
                if frame["type"] == "chat.started":
                    started = frame
                if frame["type"] == "chat.token":
                    assert frame["offset"] == len(have)
                    have += frame["content"]

        resumed = ""
        with connect(ws_url(second), additional_headers=headers) as socket:
            socket.send(
                json.dumps(
                    {
                        "type": "chat.resume",
                        "conversation": started["conversation"],
                        "message": started["message"],
                        "offset": len(have),
                    }
                )
            )
            while True:
                frame = json.loads(socket.recv(timeout=10))
                if frame["type"] == "chat.token":
                    assert frame["offset"] == len(have) + len(resumed)
                    resumed += frame["content"]
                if frame["type"] in {"chat.done", "chat.error", "chat.cancelled"}:
                    break
        assert frame["type"] == "chat.done"
        assert have + resumed == "".join(tokens)
        assert ollama_double.last_generation.completed
