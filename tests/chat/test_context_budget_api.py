"""The context a chat sends fills the model's window, on the branch shown, and says so."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def chat(client, **body):
    response = client.post("/api/chat/", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def sent(ollama) -> list[str]:
    return [m["content"] for m in ollama.last_request("/api/chat").json["messages"]]


def test_an_early_message_is_remembered_while_it_fits(auth_client, ollama):
    # The old fixed window of 5 exchanges forgot this by the 7th message.
    first = chat(auth_client, message="My name is Bob.")
    for n in range(7):
        last = chat(auth_client, message=f"Question {n}", conversation=first["conversation"])
    assert sent(ollama)[0] == "My name is Bob."
    context = last["context"]
    assert context["messages_dropped"] == 0
    assert context["messages_sent"] == len(sent(ollama))
    assert context["window"] == 4096 and context["tokens_estimated"] > 0


def test_a_small_window_drops_the_oldest_and_reports_it(auth_client, ollama, settings):
    settings.OLLAMA_CONTEXT_LENGTH = 256  # a budget of 128 tokens once the reply has room
    first = chat(auth_client, message="My name is Bob. " + "x" * 200)
    for n in range(4):
        last = chat(
            auth_client, message=f"Question {n} " + "y" * 150, conversation=first["conversation"]
        )
    assert not any("Bob" in text for text in sent(ollama))
    assert sent(ollama)[-1].startswith("Question 3")
    context = last["context"]
    assert context["window"] == 256 and context["messages_dropped"] > 0
    assert context["messages_sent"] == len(sent(ollama))


def test_the_saved_reply_keeps_its_context_figures(auth_client, ollama):
    reply = chat(auth_client, message="Hi")
    messages = auth_client.get(f"/api/conversations/{reply['conversation']}/messages/").json()
    assert messages["results"][-1]["metrics"]["context"] == reply["context"]
