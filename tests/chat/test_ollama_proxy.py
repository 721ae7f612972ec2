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


# --------------------------------------------------------------------------- the same rules
#
# The proxy holds Ollama's clients to the rules of every transport: the options' bounds (under
# Ollama's names), no server resource options, the message length, and keep_alive.

HELLO = [{"role": "user", "content": "hello"}]


def refused(call) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as caught:
        call()
    return caught.value


def test_valid_ollama_options_pass_through_unchanged(client, ollama_double):
    options = {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "num_ctx": 4096,
        "num_predict": 128,
        "seed": 7,
        "stop": ["\n\n", "User:"],
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "min_p": 0.05,
        "typical_p": 1.0,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "mirostat": 0,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "num_keep": 4,
    }
    client.chat(model="llama3.2:3b", messages=HELLO, options=options, keep_alive="10m")
    sent = ollama_double.last_request("/api/chat").json
    assert sent["options"] == options
    assert sent["keep_alive"] == "10m"
    client.generate(model="llama3.2:3b", prompt="x", options=options, keep_alive=600)
    sent = ollama_double.last_request("/api/generate").json
    assert sent["options"] == options
    assert sent["keep_alive"] == 600


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        # the finding's figures
        ({"num_ctx": 10_000_000}, ["num_ctx", "between 128 and 1048576"]),
        ({"temperature": 50}, ["temperature", "between 0 and 2"]),
        ({"num_predict": 10**9}, ["num_predict", "between 1 and 131072"]),
        ({"top_p": 2}, ["top_p", "between 0 and 1"]),
        ({"stop": ["x"] * 50}, ["stop", "at most 8"]),
        ({"num_gpu": 999}, ["num_gpu", "server resource setting", "operator"]),
        ({"num_thread": 512}, ["num_thread", "server resource setting"]),
        ({"main_gpu": 1, "low_vram": True}, ["main_gpu", "low_vram"]),
        ({"use_mmap": False}, ["use_mmap", "server resource setting"]),
        ({"numa": True}, ["numa", "server resource setting"]),
        ({"num_batch": 4096}, ["num_batch", "server resource setting"]),
        ({"max_tokens": 5}, ["max_tokens", "unknown option"]),  # REST's name, not Ollama's
    ],
)
def test_options_out_of_bounds_or_the_servers_are_refused(
    client, ollama_double, user, options, fragments
):
    for call in (
        lambda: client.chat(model="llama3.2:3b", messages=HELLO, options=options),
        lambda: client.generate(model="llama3.2:3b", prompt="x", options=options),
    ):
        error = refused(call)
        assert error.status_code == 400
        assert error.error.startswith("invalid options: ")
        for fragment in fragments:
            assert fragment in error.error
    assert not ollama_double.generations  # nothing reached Ollama
    assert not Conversation.objects.filter(owner=user).exists()  # nor was anything saved


def test_a_message_is_held_to_chat_max_message_chars(client, daphne, ollama_double, user, settings):
    limit = settings.CHAT_MAX_MESSAGE_CHARS  # the Daphne process runs on the same default
    too_long = "x" * (limit + 1)
    error = refused(
        lambda: client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": too_long}])
    )
    assert error.status_code == 400
    assert error.error == f"messages[0] (user) has {limit + 1} characters; the limit is {limit}."
    history = [
        {"role": "system", "content": too_long},
        {"role": "user", "content": "hi"},
    ]
    error = refused(lambda: client.chat(model="llama3.2:3b", messages=history))
    assert "messages[0] (system)" in error.error
    for fields in ({"prompt": too_long}, {"prompt": "x", "system": too_long}):
        error = refused(lambda fields=fields: client.generate(model="llama3.2:3b", **fields))
        assert error.status_code == 400
        assert f"has {limit + 1} characters" in error.error
    assert not ollama_double.generations
    assert not Message.objects.filter(conversation__owner=user).exists()

    # the finding's 2,000,000 characters
    response = httpx.post(
        f"{daphne.url}/ollama/api/chat",
        json={"model": "llama3.2:3b", "messages": [{"role": "user", "content": "y" * 2_000_000}]},
        headers=bearer(user),
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": f"messages[0] (user) has 2000000 characters; the limit is {limit}."
    }
    assert not Message.objects.filter(conversation__owner=user).exists()


def test_assistant_history_may_be_longer_but_the_whole_is_bounded(
    client, ollama_double, user, settings
):
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    total_limit = settings.OLLAMA_PROXY_MAX_CHARS
    long_reply = {"role": "assistant", "content": "a" * (limit + 1)}  # a past reply, replayed
    client.chat(model="llama3.2:3b", messages=[*HELLO, long_reply, *HELLO])
    assert len(ollama_double.last_request("/api/chat").json["messages"]) == 3

    history = [{"role": "user", "content": "u" * limit}] * (total_limit // limit + 1)
    error = refused(lambda: client.chat(model="llama3.2:3b", messages=history))
    assert error.status_code == 400
    assert f"the limit is {total_limit}" in error.error
    assert len(ollama_double.generations) == 1


@pytest.fixture
def staff_client(daphne, make_user):
    staff = make_user("root@example.com", is_staff=True)
    return ollama.Client(host=f"{daphne.url}/ollama", headers=bearer(staff))


@pytest.mark.parametrize(
    ("keep_alive", "what"),
    [(0, "unload"), ("0", "unload"), ("10s", "unload"), (-1, "longer than 1h"),
     ("-1m", "longer than 1h"), ("999h", "longer than 1h")],
)  # fmt: skip
def test_unloading_or_pinning_through_the_proxy_is_for_staff(
    client, staff_client, ollama_double, keep_alive, what
):
    for call in (
        lambda: client.chat(model="llama3.2:3b", messages=HELLO, keep_alive=keep_alive),
        lambda: client.generate(model="llama3.2:3b", prompt="x", keep_alive=keep_alive),
    ):
        error = refused(call)
        assert error.status_code == 403
        assert error.error.startswith("Only staff can") and what in error.error
    assert not ollama_double.generations

    staff_client.chat(model="llama3.2:3b", messages=HELLO, keep_alive=keep_alive)
    assert ollama_double.last_request("/api/chat").json["keep_alive"] == keep_alive


def test_a_keep_alive_ollama_would_refuse_is_a_400(client, ollama_double):
    error = refused(lambda: client.chat(model="llama3.2:3b", messages=HELLO, keep_alive="forever"))
    assert error.status_code == 400
    assert "is not a duration" in error.error
    assert not ollama_double.generations


# --------------------------------------------------------------------------- malformed JSON


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"model": "llama3.2:3b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "deeper than"),
        (
            '{"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}], '
            '"options": {"seed": ' + "9" * 100_000 + "}}",
            "100000 digits",
        ),
        ('{"model": "llama3.2:3b", "options": {"seed": ' + "9" * 5_000 + "}}", "5000 digits"),
        ("{not json", "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
    ],
)
def test_malformed_json_is_an_ollama_shaped_400(daphne, user, ollama_double, body, fragment):
    for path in ("/ollama/api/chat", "/ollama/api/generate", "/ollama/api/show"):
        response = httpx.post(
            f"{daphne.url}{path}",
            content=body,
            headers={**bearer(user), "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400, (path, response.text)
        (message,) = response.json().values()
        assert list(response.json()) == ["error"]
        assert message.startswith("invalid JSON in request body") and fragment in message
    assert not ollama_double.generations


def test_a_body_over_djangos_limit_is_an_ollama_shaped_413(daphne, user, ollama_double, settings):
    content = "z" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = httpx.post(
        f"{daphne.url}/ollama/api/chat",
        json={"model": "llama3.2:3b", "messages": [{"role": "user", "content": content}]},
        headers=bearer(user),
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json() == {"error": "the request body is too large"}
    assert not ollama_double.generations
