"""POST /api/chat/ and /api/chat/simple/ against the Ollama test double over real HTTP."""

import pytest

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

CHAT = "/api/chat/"


def chat(client, **body):
    return client.post(CHAT, body, format="json")


def test_reply_with_all_figures(auth_client, ollama, user):
    ollama.script(tokens=["Hello", " there", ",", " friend", "."], load_duration=0.05)
    response = chat(auth_client, message="Hi!", options={"temperature": 0.2, "max_tokens": 50})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["response"] == "Hello there, friend."
    assert body["model"] == "llama3.2:3b"
    assert body["done_reason"] == "stop"

    generation = ollama.last_generation
    final = generation.request  # what the gateway sent
    assert final.json["options"] == {"temperature": 0.2, "num_predict": 50}
    # Ollama's raw figures are passed through, the derived ones computed from them.
    assert body["eval_count"] == 5
    assert body["tokens_per_second"] == pytest.approx(
        body["eval_count"] / body["eval_duration"] * 1e9
    )
    assert body["prompt_tokens_per_second"] == pytest.approx(
        body["prompt_eval_count"] / body["prompt_eval_duration"] * 1e9
    )
    assert body["total_tokens"] == body["prompt_eval_count"] + body["eval_count"]
    assert body["eval_duration_seconds"] == pytest.approx(body["eval_duration"] / 1e9)
    assert body["load_duration"] >= 0.05e9  # the model was cold
    assert body["total_duration"] >= body["load_duration"] + body["eval_duration"]
    assert body["time_to_first_token_seconds"] > 0
    assert body["queue_wait_seconds"] >= 0
    assert body["in_flight_at_start"] == 1
    for key in ("gpu_usage_before", "gpu_usage_after", "ram_usage_before", "ram_usage_after"):
        assert key in body
    assert body["ram_usage_before"]["total_mb"] > 0
    assert "ram_used_mb_delta" in body["resource_delta"]

    conversation = Conversation.objects.get(pk=body["conversation"])
    assert conversation.owner == user
    assert conversation.title == "Hi!"
    user_msg, reply = conversation.messages.order_by("id")
    assert (user_msg.role, user_msg.content) == ("user", "Hi!")
    assert reply.pk == body["message"]
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Hello there, friend."
    assert reply.eval_count == 5
    assert reply.tokens_per_second == pytest.approx(body["tokens_per_second"])
    assert reply.resources is not None
    assert reply.resources["ram_usage_before"]["total_mb"] > 0


def test_simple_reply(auth_client, ollama):
    ollama.script(reply="Just this.")
    response = auth_client.post("/api/chat/simple/", {"message": "Hi"}, format="json")
    assert response.status_code == 200
    assert set(response.json()) == {"response", "conversation"}
    assert response.json()["response"] == "Just this."


def test_context_window_sent_to_ollama(auth_client, ollama, user):
    conversation = Conversation.objects.create(
        owner=user, system_prompt="You are terse.", context_exchanges=2
    )
    for n in range(1, 5):
        ollama.script(reply=f"a{n}")
        assert (
            chat(auth_client, message=f"q{n}", conversation=str(conversation.pk)).status_code == 200
        )
    ollama.script(reply="a5")
    chat(auth_client, message="q5", conversation=str(conversation.pk))
    sent = ollama.last_request("/api/chat").json["messages"]
    assert sent == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "a3"},
        {"role": "user", "content": "q4"},
        {"role": "assistant", "content": "a4"},
        {"role": "user", "content": "q5"},
    ]


def test_conversation_defaults_and_request_overrides(auth_client, ollama, user):
    conversation = Conversation.objects.create(
        owner=user, model="qwen2.5:0.5b", options={"temperature": 0.1, "seed": 7}
    )
    chat(auth_client, message="x", conversation=str(conversation.pk), options={"seed": 9})
    sent = ollama.last_request("/api/chat").json
    assert sent["model"] == "qwen2.5:0.5b"
    assert sent["options"] == {"temperature": 0.1, "seed": 9}


def test_system_given_with_a_new_conversation_is_kept(auth_client, ollama):
    body = chat(auth_client, message="x", system="Speak French.", model="qwen2.5:0.5b").json()
    conversation = Conversation.objects.get(pk=body["conversation"])
    assert conversation.system_prompt == "Speak French."
    assert conversation.model == "qwen2.5:0.5b"
    chat(auth_client, message="y", conversation=body["conversation"])
    sent = ollama.last_request("/api/chat").json
    assert sent["messages"][0] == {"role": "system", "content": "Speak French."}


# --------------------------------------------------------------------------- validation


def test_empty_message(auth_client, ollama):
    response = chat(auth_client, message="   ")
    assert response.status_code == 400
    # docs/api.md's contract: the code the WebSocket sends too.
    assert response.json() == {"detail": "The message is empty.", "code": "empty_message"}
    assert not ollama.requests_to("/api/chat")


def test_message_over_the_limit(auth_client, ollama, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    response = chat(auth_client, message="x" * 11)
    assert response.status_code == 400
    assert response.json()["code"] == "message_too_long"
    assert "limit is 10" in response.json()["detail"]


def test_bad_options_are_named(auth_client, ollama):
    response = chat(auth_client, message="x", options={"temperature": 3, "bogus": 1})
    assert response.status_code == 400
    errors = response.json()["options"]
    assert "between 0 and 2" in errors["temperature"]
    assert "unknown option" in errors["bogus"]
    assert not Message.objects.exists()


def test_unknown_model_is_a_404_naming_it(auth_client, ollama):
    response = chat(auth_client, message="x", model="nope:1b")
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
    assert '"nope:1b"' in response.json()["detail"]
    assert not Message.objects.exists()


def test_someone_elses_conversation_is_a_404(auth_client, ollama, make_user):
    theirs = Conversation.objects.create(owner=make_user("bob@example.com"))
    response = chat(auth_client, message="x", conversation=str(theirs.pk))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not theirs.messages.exists()


def test_unauthenticated(api_client, ollama):
    assert chat(api_client, message="x").status_code == 401


# --------------------------------------------------------------------------- Ollama failures


def test_ollama_unreachable_names_the_host(auth_client, settings, db):
    from tests.support.live import free_port

    url = f"http://127.0.0.1:{free_port()}"
    settings.OLLAMA_URLS = [url]
    response = chat(auth_client, message="x", model="llama3.2:3b")
    assert response.status_code == 502
    assert response.json()["code"] == "ollama_unreachable"
    assert url in response.json()["detail"]
    assert not Message.objects.exists()


def test_ollama_busy_is_a_503_with_retry_after(auth_client, ollama):
    ollama.script(status=503)
    response = chat(auth_client, message="x")
    assert response.status_code == 503
    assert response.json()["code"] == "ollama_busy"
    assert int(response["Retry-After"]) >= 1
    reply = Message.objects.get(role="assistant")
    assert reply.status == Message.Status.FAILED
    assert reply.error_code == "ollama_busy"


def test_mid_stream_error_keeps_what_was_generated(auth_client, ollama):
    ollama.script(
        tokens=["one", " two", " three", " four"],
        error_after=2,
        error_message="an error was encountered while running the model",
    )
    response = chat(auth_client, message="x")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "ollama_stream_error"
    assert "while running the model" in body["detail"]
    assert body["partial_response"] == "one two"
    reply = Message.objects.get(pk=body["message"])
    assert reply.status == Message.Status.FAILED
    assert reply.content == "one two"
    assert Message.objects.filter(role="user", content="x").exists()


def test_dropped_connection_is_saved_as_failed_with_partial_text(auth_client, ollama):
    ollama.script(tokens=["a", "b", "c", "d"], drop_after=3)
    response = chat(auth_client, message="x")
    assert response.status_code == 502
    reply = Message.objects.get(role="assistant")
    assert reply.status == Message.Status.FAILED
    assert reply.content == "abc"
    assert reply.error_code == "ollama_protocol_error"


def test_read_timeout(auth_client, ollama, settings):
    settings.OLLAMA_READ_TIMEOUT = 0.3
    ollama.script(tokens=["a", "b"], token_delay=1.0)
    from core.ollama import close_all  # noqa: F401 - timeouts apply to new clients

    response = chat(auth_client, message="x")
    assert response.status_code == 504
    assert response.json()["code"] == "ollama_timeout"


def test_max_tokens_truncates_with_done_reason_length(auth_client, ollama):
    ollama.script(tokens=["a"] * 20)
    body = chat(auth_client, message="x", options={"max_tokens": 5}).json()
    assert body["done_reason"] == "length"
    assert body["eval_count"] == 5
    assert body["response"] == "aaaaa"


# --------------------------------------------------------------------------- the gate


def test_gate_full_refuses_at_once_and_saves_nothing(auth_client, ollama, settings):
    import asyncio
    import threading

    from chat import hosts

    settings.OLLAMA_MAX_CONCURRENCY = 1
    settings.OLLAMA_MAX_QUEUE = 0
    gate = hosts.get_gate()
    holding = threading.Event()
    release = threading.Event()

    def hold_slot():
        async def run():
            async with gate.reserve(ollama.url) as reservation:
                await reservation.acquired()
                holding.set()
                while not release.is_set():
                    await asyncio.sleep(0.01)

        asyncio.run(run())

    holder = threading.Thread(target=hold_slot)
    holder.start()
    try:
        assert holding.wait(5)
        response = chat(auth_client, message="x")
    finally:
        release.set()
        holder.join(5)
    assert response.status_code == 503
    assert response.json()["code"] == "queue_full"
    assert int(response["Retry-After"]) >= 1
    assert not Message.objects.exists()
    assert not ollama.requests_to("/api/chat")


def test_without_a_configured_default_the_first_installed_model_answers(
    auth_client, ollama, settings
):
    settings.OLLAMA_DEFAULT_MODEL = ""
    ollama.remove_model("llama3.2:3b")
    response = chat(auth_client, message="x")
    assert response.status_code == 200, response.json()
    first = ollama.last_request("/api/tags")  # what Ollama listed first is what was used
    assert response.json()["model"] == ollama.last_request("/api/chat").json["model"]
    assert first is not None and response.json()["model"] != "llama3.2:3b"


def test_no_model_installed_at_all(auth_client, ollama, settings):
    settings.OLLAMA_DEFAULT_MODEL = ""
    for name in ollama.installed_models:
        ollama.remove_model(name)
    response = chat(auth_client, message="x")
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
    assert "pull one first" in response.json()["detail"]
