"""/v1/...: the official `openai` client against the gateway in a real Daphne."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from accounts.services import create_api_key
from chat.models import Conversation, Message
from tests.ollama_double.server import embedding_of, tokenize
from tests.support.live import bearer

pytestmark = pytest.mark.integration

HELLO: Any = [{"role": "user", "content": "Hello there"}]


def client_for(daphne, credential: str, base: str = "/v1") -> openai.OpenAI:
    # No retries: a test sees the gateway's first answer (the client retries 429 and 5xx).
    return openai.OpenAI(base_url=f"{daphne.url}{base}", api_key=credential, max_retries=0)


@pytest.fixture
def client(daphne, user) -> openai.OpenAI:
    return client_for(daphne, bearer(user)["Authorization"].split()[1])


def test_chat_not_streaming(client, ollama_double, user):
    ollama_double.script(reply="Bonjour à tous !")
    completion = client.chat.completions.create(
        model="llama3.2:3b",
        messages=[{"role": "system", "content": "French"}, *HELLO],
        temperature=0.2,
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "llama3.2:3b"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "Bonjour à tous !"
    assert choice.finish_reason == "stop"
    sent = ollama_double.last_request("/api/chat").json
    assert sent["messages"] == [
        {"role": "system", "content": "French"},
        {"role": "user", "content": "Hello there"},
    ]
    assert sent["options"] == {"temperature": 0.2}
    # usage is Ollama's own counts
    reply = Message.objects.get(conversation__owner=user, role="assistant")
    assert (
        completion.usage.completion_tokens == reply.eval_count == len(tokenize("Bonjour à tous !"))
    )
    assert reply.eval_count is not None and reply.prompt_eval_count is not None
    assert completion.usage.prompt_tokens == reply.prompt_eval_count > 0
    assert completion.usage.total_tokens == reply.eval_count + reply.prompt_eval_count
    assert Conversation.objects.get(owner=user).source == "openai"


def test_chat_streaming_with_usage(client, ollama_double, user):
    ollama_double.script(tokens=["Once", " upon", " a", " time"])
    stream = client.chat.completions.create(
        model="llama3.2:3b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Once upon a time"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    # the usage chunk comes last, with no choices; the others carry usage null
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 4
    assert last.usage.prompt_tokens > 0
    assert all(c.usage is None for c in body)
    reply = Message.objects.get(conversation__owner=user, role="assistant")
    assert (reply.content, reply.status, reply.eval_count) == ("Once upon a time", "complete", 4)


def test_chat_streaming_without_usage(client, ollama_double):
    ollama_double.script(tokens=["a", "b"])
    chunks = list(client.chat.completions.create(model="llama3.2:3b", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "ab"
    assert all(c.usage is None and c.choices for c in chunks)


def test_completions(client, ollama_double, user):
    ollama_double.script(reply="42, of course.")
    completion = client.completions.create(
        model="llama3.2:3b", prompt="The answer is", max_tokens=50, suffix="!"
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "42, of course."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len(tokenize("42, of course."))
    sent = ollama_double.last_request("/api/generate").json
    assert (sent["prompt"], sent["suffix"], sent["options"]) == (
        "The answer is",
        "!",
        {"num_predict": 50},
    )

    ollama_double.script(tokens=["x", "y", "z"])
    chunks = list(client.completions.create(model="llama3.2:3b", prompt="go", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "xyz"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert Conversation.objects.filter(owner=user, source="openai").count() == 2


def test_max_tokens_ends_with_length(client, ollama_double):
    ollama_double.script(tokens=["1", "2", "3", "4", "5"])
    completion = client.chat.completions.create(
        model="llama3.2:3b", messages=HELLO, max_completion_tokens=2
    )
    assert completion.choices[0].message.content == "12"
    assert completion.choices[0].finish_reason == "length"
    assert ollama_double.last_request("/api/chat").json["options"] == {"num_predict": 2}


def test_embeddings(client, ollama_double, user):
    texts = ["the first text", "and a second one"]
    # the client asks for base64 unless told otherwise, and decodes it
    result = client.embeddings.create(model="llama3.2:3b", input=texts)
    assert result.object == "list" and result.model == "llama3.2:3b"
    assert [d.index for d in result.data] == [0, 1]
    for text, item in zip(texts, result.data, strict=True):
        assert item.embedding == pytest.approx(embedding_of("llama3.2:3b", text), abs=1e-6)
    count = sum(len(tokenize(t)) for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == count
    assert ollama_double.last_request("/api/embed").json["input"] == texts

    floats = client.embeddings.create(
        model="llama3.2:3b", input="one", encoding_format="float", dimensions=8
    )
    assert floats.data[0].embedding == pytest.approx(
        embedding_of("llama3.2:3b", "one", dimensions=8)
    )
    assert ollama_double.last_request("/api/embed").json["dimensions"] == 8

    # recorded without their content, with the figures
    records = Message.objects.filter(
        conversation__owner=user, conversation__source="openai"
    ).order_by("id")
    assert [(m.role, m.content, m.status) for m in records] == [("assistant", "", "complete")] * 2
    assert records[0].prompt_eval_count == count and records[0].eval_count == 0
    assert records[0].conversation.title == "embeddings: llama3.2:3b"
    assert not Message.objects.filter(content__contains="first text").exists()


def test_models(client, ollama_double):
    listed = {m.id: m for m in client.models.list()}
    assert {"llama3.2:3b", "qwen2.5:0.5b", "llava:7b", "qwen3:0.6b"} <= set(listed)
    model = listed["llama3.2:3b"]
    assert model.object == "model" and model.owned_by == "library" and model.created > 0
    assert client.models.retrieve("llava:7b").id == "llava:7b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:1b")


def test_an_unknown_model_is_not_found(client, ollama_double, user):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope:1b", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "not_found_error"
    assert "nope:1b" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope:1b", messages=HELLO, stream=True)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope:1b", input="x")
    assert not ollama_double.generations
    assert not Conversation.objects.filter(owner=user).exists()


def test_bad_credentials_are_an_authentication_error(daphne, ollama_double):
    for credential in ("x.y.z", "og_not_a_key"):
        with pytest.raises(openai.AuthenticationError) as caught:
            client_for(daphne, credential).chat.completions.create(
                model="llama3.2:3b", messages=HELLO
            )
        assert caught.value.type == "authentication_error"
    assert not ollama_double.generations


def test_a_bad_request_is_a_bad_request_error(client, ollama_double):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="llama3.2:3b", messages=HELLO, n=3)
    assert caught.value.param == "n" and caught.value.code == "unsupported_parameter"
    assert "n=3" in caught.value.message


def test_a_personal_api_key_drives_the_client(daphne, user, ollama_double):
    _, chat_key = create_api_key(user, name="editor", scope="chat")
    ollama_double.script(reply="keyed")
    reply = client_for(daphne, chat_key).chat.completions.create(
        model="llama3.2:3b", messages=HELLO
    )
    assert reply.choices[0].message.content == "keyed"

    _, read_key = create_api_key(user, name="dashboard", scope="read")
    reader = client_for(daphne, read_key)
    assert any(m.id == "llama3.2:3b" for m in reader.models.list())
    with pytest.raises(openai.PermissionDeniedError) as caught:
        reader.chat.completions.create(model="llama3.2:3b", messages=HELLO)
    assert caught.value.code == "insufficient_scope"
    assert len(ollama_double.generations) == 1


def test_the_same_api_under_ollama_v1(daphne, user, ollama_double):
    """Where Ollama serves its own OpenAI API, a client pointed at `/ollama/v1` gets ours."""
    ollama_double.script(reply="same")
    client = client_for(daphne, bearer(user)["Authorization"].split()[1], base="/ollama/v1")
    reply = client.chat.completions.create(model="llama3.2:3b", messages=HELLO)
    assert reply.choices[0].message.content == "same"
    assert Conversation.objects.get(owner=user).source == "openai"
