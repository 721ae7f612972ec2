"""/v1/...: the OpenAI-compatible API over plain HTTP, for what a client library hides: the
wire format of the errors and of the stream, the mapping of every parameter to what Ollama
receives, the records, the limits and the gate."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from chat.models import Conversation, Message
from tests.ollama_double.server import tokenize
from tests.support.live import bearer
from tests.support.waiting import hung_up_reply, wait_for

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Hello there"}]
# A 1x1 PNG.
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)


def post(daphne, user, path: str, body, **kwargs) -> httpx.Response:
    headers = {**bearer(user), **kwargs.pop("headers", {})}
    if isinstance(body, bytes | str):
        headers.setdefault("Content-Type", "application/json")
        return httpx.post(
            f"{daphne.url}{path}", content=body, headers=headers, timeout=30, **kwargs
        )
    return httpx.post(f"{daphne.url}{path}", json=body, headers=headers, timeout=30, **kwargs)


def chat(daphne, owner, **fields) -> httpx.Response:
    return post(
        daphne, owner, "/v1/chat/completions", {"model": "llama3.2:3b", "messages": HELLO, **fields}
    )


def assert_openai_error(response: httpx.Response, status: int, kind: str, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (kind, code), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def sse(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", line  # nothing but data lines and the blank lines between
    return events


# --------------------------------------------------------------------------- errors


def test_no_credentials_is_a_401_in_openais_shape(daphne, ollama_double):
    response = httpx.post(
        f"{daphne.url}/v1/chat/completions", json={"model": "llama3.2:3b", "messages": HELLO}
    )
    assert_openai_error(response, 401, "authentication_error", "not_authenticated")
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    response = httpx.get(f"{daphne.url}/v1/models", headers={"Authorization": "Bearer x.y.z"})
    assert_openai_error(response, 401, "authentication_error", "token_not_valid")
    assert not ollama_double.generations


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
        ('{"model": "llama3.2:3b", "x": ' + "[" * 1000 + "]" * 1000 + "}", "deeper than"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_malformed_json(daphne, user, ollama_double, body, fragment):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        error = assert_openai_error(
            post(daphne, user, path, body), 400, "invalid_request_error", "parse_error"
        )
        assert fragment in error["message"]
    assert not ollama_double.requests


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": None}, "model", "invalid_input"),
        ({"model": 7}, "model", "invalid_input"),
        ({"messages": "hi"}, "messages", "invalid_input"),
        ({"messages": []}, "messages", "invalid_input"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_input"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_input"),
        ({"temperature": "hot"}, "temperature", "invalid_input"),
        ({"temperature": 3}, "temperature", "invalid_options"),
        ({"top_p": -0.5}, "top_p", "invalid_options"),
        ({"max_tokens": 10**9}, "max_tokens", "invalid_options"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_options"),
        ({"seed": True}, "seed", "invalid_input"),
        ({"stop": [1, 2]}, "stop", "invalid_input"),
        ({"stop": ["x"] * 20}, "stop", "invalid_options"),
        ({"stream": "yes"}, "stream", "invalid_input"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_input"),
        ({"response_format": {"type": "yaml"}}, "response_format", "invalid_input"),
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"n": 0}, "n", "invalid_input"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"tool_choice": "required"}, "tool_choice", "unsupported_parameter"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", "invalid_input"),
        ({"reasoning_effort": "max"}, "reasoning_effort", "invalid_input"),
    ],
)
def test_malformed_fields_are_400s_naming_the_parameter(
    daphne, user, ollama_double, fields, param, code
):
    error = assert_openai_error(chat(daphne, user, **fields), 400, "invalid_request_error", code)
    assert error["param"] == param
    assert not ollama_double.generations
    assert not Conversation.objects.filter(owner=user).exists()


def test_more_than_one_choice_is_refused_clearly(daphne, user, ollama_double):
    error = assert_openai_error(
        chat(daphne, user, n=4), 400, "invalid_request_error", "unsupported_parameter"
    )
    assert error["message"].startswith("n=4 is not supported: the gateway generates one choice")
    response = post(daphne, user, "/v1/completions", {"model": "llama3.2:3b", "prompt": ["a", "b"]})
    error = assert_openai_error(response, 400, "invalid_request_error", "unsupported_parameter")
    assert error["param"] == "prompt"
    assert not ollama_double.generations


def test_an_over_long_input_is_refused_before_anything_runs(daphne, user, ollama_double, settings):
    limit = settings.CHAT_MAX_MESSAGE_CHARS  # the Daphne process runs on the same default
    error = assert_openai_error(
        chat(daphne, user, messages=[{"role": "user", "content": "x" * (limit + 1)}]),
        400,
        "invalid_request_error",
        "message_too_long",
    )
    assert (
        error["message"] == f"messages[0] (user) has {limit + 1} characters; the limit is {limit}."
    )
    response = post(
        daphne, user, "/v1/completions", {"model": "llama3.2:3b", "prompt": "y" * (limit + 1)}
    )
    assert_openai_error(response, 400, "invalid_request_error", "message_too_long")
    response = post(
        daphne, user, "/v1/embeddings", {"model": "llama3.2:3b", "input": ["ok", "z" * (limit + 1)]}
    )
    error = assert_openai_error(response, 400, "invalid_request_error", "message_too_long")
    assert error["message"].startswith("input[1] has")
    content = "w" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = chat(daphne, user, messages=[{"role": "user", "content": content}])
    assert_openai_error(response, 413, "invalid_request_error", "request_too_large")
    assert not ollama_double.requests_to("/api/chat") and not ollama_double.requests_to(
        "/api/embed"
    )
    assert not Message.objects.exists()


def test_an_exhausted_budget_is_a_429_in_openais_shape(daphne, user, ollama_double):
    user.daily_token_budget = 10
    user.save(update_fields=["daily_token_budget"])
    conversation = Conversation.objects.create(owner=user, title="earlier")
    Message.objects.create(conversation=conversation, role="assistant", eval_count=10)
    for response in (
        chat(daphne, user),
        post(daphne, user, "/v1/embeddings", {"model": "llama3.2:3b", "input": "x"}),
    ):
        error = assert_openai_error(response, 429, "rate_limit_error", "budget_exhausted")
        assert "daily budget is 10" in error["message"]
        assert int(response.headers["retry-after"]) > 0
    assert not ollama_double.requests_to("/api/chat")
    assert not ollama_double.requests_to("/api/embed")


def test_unknown_paths_and_methods(daphne, user):
    for path in ("/v1/nope", "/v1/chat", "/ollama/v1/responses"):
        response = httpx.post(f"{daphne.url}{path}", headers=bearer(user))
        assert_openai_error(response, 404, "not_found_error", "not_found")
    response = httpx.get(f"{daphne.url}/v1/chat/completions", headers=bearer(user))
    assert_openai_error(response, 405, "invalid_request_error", "method_not_allowed")


# --------------------------------------------------------------------------- the mapping


def test_sampling_parameters_reach_ollama_under_its_names(daphne, user, ollama_double):
    response = chat(
        daphne,
        user,
        temperature=0.4,
        top_p=0.9,
        max_tokens=64,
        seed=7,
        stop="\n\n",
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        user="someone",  # accepted and ignored, as are OpenAI's other bookkeeping fields
        metadata={"a": "b"},
    )
    assert response.status_code == 200, response.text
    assert ollama_double.last_request("/api/chat").json["options"] == {
        "temperature": 0.4,
        "top_p": 0.9,
        "num_predict": 64,
        "seed": 7,
        "stop": ["\n\n"],
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
    }
    # max_completion_tokens wins over the older max_tokens; a list of stops stays a list
    chat(daphne, user, max_tokens=10, max_completion_tokens=20, stop=["END", "STOP"])
    assert ollama_double.last_request("/api/chat").json["options"] == {
        "num_predict": 20,
        "stop": ["END", "STOP"],
    }
    # nothing set: no defaults are imposed (the model's own apply)
    chat(daphne, user)
    sent = ollama_double.last_request("/api/chat").json
    assert "options" not in sent and "format" not in sent and "tools" not in sent


def test_the_stop_sequence_is_honoured(daphne, user, ollama_double):
    ollama_double.script(reply="one two END three")
    response = chat(daphne, user, stop="END")
    assert response.json()["choices"][0]["message"]["content"] == "one two "


def test_response_format_json(daphne, user, ollama_double):
    response = chat(daphne, user, response_format={"type": "json_object"})
    assert ollama_double.last_request("/api/chat").json["format"] == "json"
    content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content)["reply"].startswith("This is llama3.2:3b")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat(
        daphne,
        user,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert ollama_double.last_request("/api/chat").json["format"] == schema
    chat(daphne, user, response_format={"type": "text"})
    assert "format" not in ollama_double.last_request("/api/chat").json


def test_content_parts_and_images(daphne, user, ollama_double):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "text", "text": "in this picture?"},
            ],
        },
    ]
    response = post(
        daphne, user, "/v1/chat/completions", {"model": "llava:7b", "messages": messages}
    )
    assert response.status_code == 200, response.text
    sent = ollama_double.last_request("/api/chat").json["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is\nin this picture?", "images": [PIXEL]},
    ]
    assert base64.b64decode(sent[1]["images"][0]).startswith(b"\x89PNG")
    # recorded with the question's text
    question = Message.objects.get(conversation__owner=user, role="user")
    assert question.content == "What is\nin this picture?"

    # a model without vision: Ollama's refusal, as a 400
    response = post(
        daphne, user, "/v1/chat/completions", {"model": "llama3.2:3b", "messages": messages}
    )
    error = assert_openai_error(response, 400, "invalid_request_error", "bad_request")
    assert "does not support vision" in error["message"]

    # the gateway fetches no URL, and checks what it is given
    for url, fragment in [
        ("https://example.com/cat.png", "fetches no URL"),
        ("data:image/png;base64,not*base64", "not valid base64"),
    ]:
        bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
        response = post(
            daphne, user, "/v1/chat/completions", {"model": "llava:7b", "messages": bad}
        )
        error = assert_openai_error(response, 400, "invalid_request_error", "invalid_input")
        assert fragment in error["message"] and error["param"] == "messages[0].content[0]"
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    response = post(daphne, user, "/v1/chat/completions", {"model": "llava:7b", "messages": audio})
    assert_openai_error(response, 400, "invalid_request_error", "unsupported_parameter")
    assert len(ollama_double.generations) == 1


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_round_trip(daphne, user, ollama_double):
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ollama_double.script(reply="", tool_calls=[call])
    question = {"role": "user", "content": "Weather in Paris?"}
    response = chat(daphne, user, messages=[question], tools=[WEATHER_TOOL])
    assert response.status_code == 200, response.text
    assert ollama_double.last_request("/api/chat").json["tools"] == [WEATHER_TOOL]
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

    # the client runs the tool and sends the result back
    ollama_double.script(reply="Sunny, 24°C.")
    messages = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"sky": "sunny"}'},
    ]
    response = chat(daphne, user, messages=messages, tools=[WEATHER_TOOL])
    assert response.json()["choices"][0]["message"]["content"] == "Sunny, 24°C."
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert ollama_double.last_request("/api/chat").json["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"sky": "sunny"}', "tool_name": "get_weather"},
    ]
    # tool_choice "none": the tools are not offered
    chat(daphne, user, tools=[WEATHER_TOOL], tool_choice="none")
    assert "tools" not in ollama_double.last_request("/api/chat").json

    # malformed arguments of a past call
    broken = [{**tool_call, "function": {"name": "get_weather", "arguments": "{oops"}}]
    response = chat(
        daphne,
        user,
        messages=[question, {"role": "assistant", "content": "", "tool_calls": broken}],
    )
    error = assert_openai_error(response, 400, "invalid_request_error", "invalid_input")
    assert error["param"] == "messages[1].tool_calls[0]"


def test_tool_calls_stream_as_deltas(daphne, user, ollama_double):
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ollama_double.script(reply="", tool_calls=[call])
    with httpx.stream(
        "POST",
        f"{daphne.url}/v1/chat/completions",
        json={"model": "llama3.2:3b", "messages": HELLO, "tools": [WEATHER_TOOL], "stream": True},
        headers=bearer(user),
        timeout=30,
    ) as response:
        events = sse(response)
    chunks = events[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]) for c in calls] == [
        (0, {"name": "get_weather", "arguments": '{"city": "Oslo"}'})
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_effort_is_ollamas_think(daphne, user, ollama_double):
    ollama_double.script(reply="Yes.", thinking="Hmm, let me see.")
    response = post(
        daphne,
        user,
        "/v1/chat/completions",
        {"model": "qwen3:0.6b", "messages": HELLO, "reasoning_effort": "high"},
    )
    assert ollama_double.last_request("/api/chat").json["think"] == "high"
    message = response.json()["choices"][0]["message"]
    assert (message["content"], message["reasoning"]) == ("Yes.", "Hmm, let me see.")


# --------------------------------------------------------------------------- the stream


def test_the_stream_on_the_wire(daphne, user, ollama_double):
    ollama_double.script(tokens=["Hel", "lo", " you"])
    with httpx.stream(
        "POST",
        f"{daphne.url}/v1/chat/completions",
        json={
            "model": "llama3.2:3b",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=bearer(user),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse(response)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk, _ = events
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for chunk in chunks:
        assert set(chunk) == {"id", "object", "created", "model", "choices", "usage"}
        assert chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None
        (choice,) = chunk["choices"]
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello you"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    reply = Message.objects.get(conversation__owner=user, role="assistant")
    assert reply.prompt_eval_count is not None
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": reply.prompt_eval_count,
        "completion_tokens": 3,
        "total_tokens": reply.prompt_eval_count + 3,
    }


def test_errors_before_the_first_token_keep_their_status(daphne, user, ollama_double):
    ollama_double.script(status=503)
    response = chat(daphne, user, stream=True)
    error = assert_openai_error(response, 503, "server_error", "ollama_busy")
    assert "server busy" in error["message"]
    assert int(response.headers["retry-after"]) > 0


def test_a_mid_stream_error_is_an_error_event(daphne, user, ollama_double):
    ollama_double.script(tokens=["a", "b", "c"], error_after=2, error_message="model crashed")
    with httpx.stream(
        "POST",
        f"{daphne.url}/v1/chat/completions",
        json={"model": "llama3.2:3b", "messages": HELLO, "stream": True},
        headers=bearer(user),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = sse(response)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert (error["type"], error["code"]) == ("server_error", "ollama_stream_error")
    assert "model crashed" in error["message"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == "ab"
    reply = Message.objects.get(conversation__owner=user, role="assistant")
    assert (reply.status, reply.content, reply.error_code) == (
        "failed",
        "ab",
        "ollama_stream_error",
    )


def test_a_client_that_disconnects_cancels_and_keeps_the_partial_reply(daphne, user, ollama_double):
    held = ollama_double.script(tokens=["first ", "second ", "third"], hold_after=2)
    with httpx.stream(
        "POST",
        f"{daphne.url}/v1/chat/completions",
        json={"model": "llama3.2:3b", "messages": HELLO, "stream": True},
        headers=bearer(user),
        timeout=30,
    ) as response:
        received = ""
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            if received == "first second ":
                break
    # the client hung up: the gateway hangs up on Ollama, and saves what it had
    reply = hung_up_reply(ollama_double, held, user)
    assert reply.content == "first second "


# --------------------------------------------------------------------------- records and the gate


def test_a_chat_is_recorded_as_a_conversation_of_its_own(daphne, user, ollama_double):
    ollama_double.script(reply="Fine, thanks.")
    history = [
        {"role": "system", "content": "Polite."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert chat(daphne, user, messages=history).status_code == 200
    ollama_double.script(reply="Again.")
    assert chat(daphne, user, messages=history).status_code == 200
    conversations = Conversation.objects.filter(owner=user, source="openai")
    assert conversations.count() == 2  # one per request, as the Ollama proxy does
    conversation = conversations.order_by("created_at").first()
    assert conversation is not None
    assert conversation.title.startswith("How are you?")
    question, reply = conversation.messages.order_by("id")
    assert (question.role, question.content) == ("user", "How are you?")
    assert (reply.role, reply.content, reply.status) == ("assistant", "Fine, thanks.", "complete")
    assert reply.model == "llama3.2:3b" and reply.ollama_host == ollama_double.url
    assert reply.eval_count == len(tokenize("Fine, thanks."))
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.queue_wait is not None and reply.time_to_first_token is not None
    assert reply.tokens_per_second and reply.tokens_per_second > 0
    # the monitoring API sees it like any other reply
    rows = httpx.get(
        f"{daphne.url}/api/monitoring/requests/", headers=bearer(user), timeout=30
    ).json()
    assert reply.pk in [row["id"] for row in rows["results"]]


def test_a_v1_request_waits_its_turn_at_the_gate(daphne, make_user, ollama_double):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    held = ollama_double.script(tokens=["first ", "reply"], hold_after=1)
    ollama_double.script(reply="second reply")

    def queued(user) -> list:
        now = httpx.get(f"{daphne.url}/api/monitoring/now/", headers=bearer(user), timeout=30)
        return [entry for host in now.json()["hosts"] for entry in host["queue"]]

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=daphne.url, timeout=30) as client:
            async with client.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "llama3.2:3b", "messages": HELLO, "stream": True},
                headers=bearer(alice),
            ) as first:
                lines = first.aiter_lines()
                async for line in lines:
                    if "first" in line:
                        break
                waiting = asyncio.create_task(
                    client.post(
                        "/v1/chat/completions",
                        json={"model": "llama3.2:3b", "messages": HELLO},
                        headers=bearer(bob),
                    )
                )
                entries = await asyncio.to_thread(wait_for, lambda: queued(bob))
                assert entries[0]["position"] == 1 and entries[0]["user"] == bob.pk
                assert len(ollama_double.generations) == 1  # Ollama never saw the second
                ollama_double.release(held)
                rest = [line async for line in lines]
                assert "data: [DONE]" in rest
            second = await waiting
            assert second.status_code == 200
            assert second.json()["choices"][0]["message"]["content"] == "second reply"

    asyncio.run(scenario())
    assert [g.completed for g in ollama_double.generations] == [True, True]
    reply = Message.objects.get(conversation__owner=bob, role="assistant")
    assert reply.queue_wait and reply.queue_wait > 0
