"""/ollama/api/...: the official `ollama` client against our gateway in a real Daphne."""

import httpx
import ollama
import pytest

from chat.models import Conversation, Message
from tests.support.live import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def client(daphne, user):
    return ollama.Client(host=f"{daphne.url}/ollama", headers=bearer(user))


def test_list_show_version_and_ps(client, daphne, user, ollama_double):
    names = [m.model for m in client.list().models]
    assert {"llama3.2:3b", "qwen2.5:0.5b", "llava:7b"} <= set(names)
    shown = client.show("llava:7b")
    assert "vision" in shown.capabilities
    version = httpx.get(f"{daphne.url}/ollama/api/version", headers=bearer(user)).json()
    assert version == {"version": "0.12.6"}
    client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hi"}])
    assert "qwen2.5:0.5b" in [m.model for m in client.ps().models]


def test_chat_not_streaming(client, ollama_double, user):
    ollama_double.script(reply="Bonjour !")
    reply = client.chat(
        model="llama3.2:3b",
        messages=[{"role": "system", "content": "French"}, {"role": "user", "content": "Hello"}],
        options={"temperature": 0.3},
    )
    assert reply.message.content == "Bonjour !"
    assert reply.done and reply.done_reason == "stop"
    assert reply.eval_count == 2 and reply.eval_duration > 0
    sent = ollama_double.last_request("/api/chat").json
    # the client's own messages and options reach Ollama unchanged
    assert sent["messages"][0] == {"role": "system", "content": "French"}
    assert sent["options"] == {"temperature": 0.3}
    # and the exchange is recorded for the user
    conversation = Conversation.objects.get(owner=user)
    assert conversation.source == "ollama"
    assert list(conversation.messages.values_list("role", "content", "status")) == [
        ("user", "Hello", "complete"),
        ("assistant", "Bonjour !", "complete"),
    ]


def test_chat_streaming(client, ollama_double):
    ollama_double.script(tokens=["a", "b", "c"])
    parts = list(
        client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert "".join(p.message.content for p in parts) == "abc"
    assert parts[-1].done and parts[-1].eval_count == 3
    assert all(not p.done for p in parts[:-1])


def test_generate(client, ollama_double):
    ollama_double.script(reply="42")
    result = client.generate(model="llama3.2:3b", prompt="the answer?")
    assert result.response == "42"
    streamed = "".join(
        p.response for p in client.generate(model="llama3.2:3b", prompt="x", stream=True)
    )
    assert streamed
    assert ollama_double.last_request("/api/generate").json["prompt"] == "x"
    assert Message.objects.filter(role="user", content="the answer?").exists()


def test_errors_raise_ollamas_own_errors(client, ollama_double):
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope:1b", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    assert "nope:1b" in missing.value.error

    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="llama3.2:3b", messages=[])
    assert bad.value.status_code == 400

    ollama_double.script(tokens=["a", "b", "c"], error_after=1, error_message="boom")
    with pytest.raises(ollama.ResponseError) as mid:
        list(
            client.chat(
                model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert "boom" in mid.value.error

    ollama_double.script(status=503)
    with pytest.raises(ollama.ResponseError) as busy:
        client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "x"}])
    assert busy.value.status_code == 503


def test_a_bearer_token_is_required(daphne, user):
    anonymous = ollama.Client(host=f"{daphne.url}/ollama")
    with pytest.raises(ollama.ResponseError) as caught:
        anonymous.list()
    assert caught.value.status_code == 401
    forged = ollama.Client(host=f"{daphne.url}/ollama", headers={"Authorization": "Bearer x.y.z"})
    with pytest.raises(ollama.ResponseError) as caught:
        forged.list()
    assert caught.value.status_code == 401
    # a session cookie is not enough either: the proxy has no CSRF protection to lean on
    response = httpx.post(f"{daphne.url}/ollama/api/chat", json={"model": "llama3.2:3b"})
    assert response.status_code == 401
    assert "error" in response.json()


def test_thinking_and_tool_calls_are_relayed(client, ollama_double):
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ollama_double.script(reply="Sunny.", thinking="Let me think.", tool_calls=[call])
    reply = client.chat(
        model="qwen3:0.6b", messages=[{"role": "user", "content": "Weather?"}], think=True
    )
    assert reply.message.content == "Sunny."
    assert reply.message.thinking == "Let me think."
    assert reply.message.tool_calls[0].function.name == "get_weather"

    ollama_double.script(reply="Sunny.", thinking="Hmm.", tool_calls=[call])
    parts = list(
        client.chat(
            model="qwen3:0.6b",
            messages=[{"role": "user", "content": "Weather?"}],
            think=True,
            stream=True,
        )
    )
    assert "".join(p.message.thinking or "" for p in parts) == "Hmm."
    assert any(p.message.tool_calls for p in parts)
    assert "".join(p.message.content for p in parts) == "Sunny."
