"""The conversation as a tree: regenerate, edit and continue over REST (JSON and SSE), the
branch shown, and the history the model gets (the branch, never the others).

Runs on the embedded defaults and, in the suite's second run, on PostgreSQL.
"""

from __future__ import annotations

import json

import httpx
import pytest

from chat.models import Conversation, Message
from tests.support.live import bearer

pytestmark = pytest.mark.django_db


def chat(client, **body):
    response = client.post("/api/chat/", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def act(client, message_id, kind, **body):
    return client.post(f"/api/messages/{message_id}/{kind}/", body, format="json")


def branch(client, conversation, **params):
    response = client.get(f"/api/conversations/{conversation}/messages/", params)
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def sent_messages(ollama) -> list[tuple[str, str]]:
    body = ollama.last_request("/api/chat").json
    return [(m["role"], m["content"]) for m in body["messages"]]


def start(client, ollama):
    """A conversation of two exchanges: Q1 A1 Q2 A2."""
    ollama.script(reply="First answer.")
    first = chat(client, message="First question")
    ollama.script(reply="Second answer.")
    second = chat(client, message="Second question", conversation=first["conversation"])
    return first["conversation"], first["message"], second["message"]


def test_regenerate_adds_a_sibling_and_shows_it(auth_client, ollama):
    conversation, _, reply = start(auth_client, ollama)
    ollama.script(reply="Another second answer.")
    response = act(auth_client, reply, "regenerate")
    assert response.status_code == 200, response.json()
    new = response.json()
    assert new["response"] == "Another second answer." and new["message"] != reply

    shown = branch(auth_client, conversation)
    assert [m["content"] for m in shown] == [
        "First question",
        "First answer.",
        "Second question",
        "Another second answer.",
    ]
    assert shown[-1]["siblings"] == [reply, new["message"]] and shown[-1]["sibling_index"] == 1
    assert shown[-1]["parent"] == shown[-2]["id"]
    # The model was asked the same question after the same history; the old reply is kept.
    assert sent_messages(ollama)[-1] == ("user", "Second question")
    assert ("assistant", "Second answer.") not in sent_messages(ollama)
    assert Message.objects.get(pk=reply).content == "Second answer."
    everything = branch(auth_client, conversation, branch="all")
    assert len(everything) == 5


def test_regenerate_with_another_model(auth_client, ollama):
    _, _, reply = start(auth_client, ollama)
    response = act(auth_client, reply, "regenerate", model="qwen2.5:0.5b")
    assert response.status_code == 200, response.json()
    assert response.json()["model"] == "qwen2.5:0.5b"
    assert ollama.last_request("/api/chat").json["model"] == "qwen2.5:0.5b"


def test_edit_adds_a_user_sibling_and_answers_it(auth_client, ollama):
    conversation, first_reply, reply = start(auth_client, ollama)
    question = Message.objects.get(pk=reply).parent_id
    ollama.script(reply="Edited answer.")
    response = act(auth_client, question, "edit", message="Second question, better put")
    assert response.status_code == 200, response.json()

    shown = branch(auth_client, conversation)
    assert [m["content"] for m in shown][-2:] == ["Second question, better put", "Edited answer."]
    assert shown[-2]["siblings"] == [question, shown[-2]["id"]]
    assert shown[-2]["parent"] == first_reply
    assert sent_messages(ollama) == [
        ("user", "First question"),
        ("assistant", "First answer."),
        ("user", "Second question, better put"),
    ]
    # Switching back shows the original branch, whole.
    response = auth_client.post(
        f"/api/conversations/{conversation}/branch/", {"message": question}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert [m["id"] for m in branch(auth_client, conversation)][-1] == reply


def test_a_message_after_a_regenerate_follows_the_branch_shown(auth_client, ollama):
    conversation, _, reply = start(auth_client, ollama)
    ollama.script(reply="Version two.")
    act(auth_client, reply, "regenerate")
    ollama.script(reply="Third answer.")
    chat(auth_client, message="Third question", conversation=conversation)
    assert sent_messages(ollama)[-3:] == [
        ("user", "Second question"),
        ("assistant", "Version two."),
        ("user", "Third question"),
    ]


def test_continue_appends_to_the_same_reply(auth_client, ollama):
    ollama.script(reply="Once upon a time there was")
    first = chat(auth_client, message="Tell a story", options={"max_tokens": 3})
    reply = Message.objects.get(pk=first["message"])
    assert reply.done_reason == "length"
    before = reply.content
    ollama.script(reply=" a dragon.")
    response = act(auth_client, reply.pk, "continue")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["message"] == reply.pk
    assert body["response"] == before + " a dragon."
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("complete", before + " a dragon.")
    assert body["eval_count"] == first["eval_count"] + 3  # the figures cover the whole reply
    assert sent_messages(ollama)[-2:] == [("user", "Tell a story"), ("assistant", before)]


@pytest.mark.integration
def test_continue_streams_with_offsets_that_go_on(daphne, user, ollama_double):
    ollama_double.script(tokens=["one ", "two ", "three"], error_after=2)
    first = httpx.post(
        f"{daphne.url}/api/chat/", json={"message": "Count"}, headers=bearer(user), timeout=10
    ).json()
    reply = Message.objects.get(pk=first["message"])
    assert (reply.status, reply.content) == ("failed", "one two ")
    ollama_double.script(tokens=["three ", "four"])
    with httpx.stream(
        "POST",
        f"{daphne.url}/api/messages/{reply.pk}/continue/?stream=1",
        json={},
        headers=bearer(user),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    contents = [(e["offset"], e["content"]) for e in events if e["type"] == "content"]
    assert contents[0][0] == len("one two ")
    assert events[-1]["type"] == "metrics" and events[-1]["message"] == reply.pk
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("complete", "one two three four")


@pytest.mark.parametrize(
    ("target", "kind", "code"),
    [
        ("question", "regenerate", "wrong_message_role"),
        ("question", "continue", "wrong_message_role"),
        ("reply", "edit", "wrong_message_role"),
        ("reply", "continue", "nothing_to_continue"),
    ],
)
def test_actions_that_make_no_sense_are_refused(auth_client, ollama, target, kind, code):
    _, _, reply = start(auth_client, ollama)
    message = Message.objects.get(pk=reply)
    message_id = message.parent_id if target == "question" else reply
    response = act(auth_client, message_id, kind, message="x")
    assert (response.status_code, response.json()["code"]) == (400, code)


def test_an_edit_validates_like_a_message(auth_client, ollama):
    _, _, reply = start(auth_client, ollama)
    question = Message.objects.get(pk=reply).parent_id
    response = act(auth_client, question, "edit", message="   ")
    assert (response.status_code, response.json()["code"]) == (400, "empty_message")
    response = act(auth_client, question, "edit")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_input")


def test_another_users_message_is_not_found(auth_client, ollama, make_user):
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    _, _, reply = start(auth_client, ollama)
    other = APIClient()
    token = RefreshToken.for_user(make_user("bob@example.com")).access_token
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    for kind in ("regenerate", "continue", "edit"):
        response = act(other, reply, kind, message="x")
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    conversation = Message.objects.get(pk=reply).conversation_id
    response = other.post(
        f"/api/conversations/{conversation}/branch/", {"message": reply}, format="json"
    )
    assert response.status_code == 404


def test_an_action_in_a_busy_conversation_is_refused(auth_client, ollama):
    conversation, _, reply = start(auth_client, ollama)
    Message.objects.create(conversation_id=conversation, role="assistant", status="streaming")
    Conversation.objects.filter(pk=conversation).update(
        generating_since=Message.objects.get(pk=reply).created_at
    )
    response = act(auth_client, reply, "regenerate")
    assert (response.status_code, response.json()["code"]) == (409, "generation_running")
