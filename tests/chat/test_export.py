"""GET /api/conversations/<id>/export/ (JSON with every branch, Markdown of the branch shown)
and GET /api/conversations/export/ (all of a user's, streamed)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse

from chat import exports
from chat.models import Conversation

from .transfer_helpers import branched_conversation

pytestmark = pytest.mark.django_db


def url(pk, fmt: str | None = None) -> str:
    return f"/api/conversations/{pk}/export/" + (f"?format={fmt}" if fmt else "")


def test_json_has_every_branch_and_the_settings(auth_client, user):
    conversation = branched_conversation(user)
    response = auth_client.get(url(conversation.pk))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == 'attachment; filename="Trip-to-Lisbon.json"'
    body = json.loads(response.content)
    assert (body["format"], body["version"]) == ("ollama-gateway/conversation", 1)
    exported = body["conversation"]
    assert exported["model"] == "llama3.2:3b"
    assert exported["system_prompt"] == "Be brief."
    assert exported["options"] == {"temperature": 0.5}
    messages = exported["messages"]
    assert len(messages) == 5  # both versions of the first reply
    by_content = {m["content"]: m for m in messages}
    first = by_content["Where should I eat?"]
    old, new = (
        by_content["Try *Time Out Market*."],
        by_content["Go to **Alfama** for fado and food."],
    )
    assert old["parent"] == new["parent"] == first["id"]
    assert exported["current_leaf"] == by_content["Pastéis de nata, of course."]["id"]
    assert new["metrics"]["eval_count"] == 9 and new["metrics"]["tokens_per_second"] == 12.5
    assert new["metrics"]["done_reason"] == "stop" and new["model"] == "qwen2.5:0.5b"
    assert first["attachments"] == [
        {
            "name": "notes.txt",
            "content_type": "text/plain",
            "size": 12,
            "kind": "text",
            "upload": "5f0c5b8e-4a4e-4a57-9e39-6d0f2b1a0c11",
        }
    ]
    assert first["metrics"] is None and first["created_at"]


def test_markdown_shows_the_branch_shown(auth_client, user):
    conversation = branched_conversation(user)
    response = auth_client.get(url(conversation.pk, "md"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="Trip-to-Lisbon.md"'
    text = response.content.decode()
    assert text.startswith("# Trip to Lisbon\n")
    assert "- Model: llama3.2:3b" in text
    assert "Go to **Alfama** for fado and food." in text
    assert "Time Out Market" not in text  # the other version is not on the branch shown
    order = [text.index(s) for s in ("Where should I eat?", "Alfama", "And dessert?", "nata")]
    assert order == sorted(order)
    assert "Attached: notes.txt" in text


def test_unknown_format_and_other_users(auth_client, user, make_user):
    conversation = branched_conversation(user)
    response = auth_client.get(url(conversation.pk, "pdf"))
    assert response.status_code == 400 and response.json()["code"] == "invalid_format"
    theirs = branched_conversation(make_user("bob@example.com"))
    assert auth_client.get(url(theirs.pk)).status_code == 404
    assert auth_client.get(url(theirs.pk, "md")).status_code == 404


def test_safe_filename():
    assert exports.safe_filename('../../etc/passwd"; x', "md") == "etc-passwd-x.md"
    assert exports.safe_filename("", "json") == "conversation.json"
    assert exports.safe_filename("Ünïcode only ☃", "md") == "n-code-only.md"


def _body(response: StreamingHttpResponse) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])  # type: ignore[union-attr]

    return async_to_sync(collect)()


def test_all_conversations_stream_as_one_json_file(auth_client, user, make_user, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK", 2)  # several chunks from a few conversations
    for n in range(5):
        branched_conversation(user, title=f"c{n}")
    Conversation.objects.create(owner=user, title="empty")
    branched_conversation(make_user("bob@example.com"), title="bob's")
    response = auth_client.get("/api/conversations/export/")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and response.is_async
    assert response["Content-Disposition"] == 'attachment; filename="conversations.json"'
    body = json.loads(_body(response))
    assert (body["format"], body["version"]) == ("ollama-gateway/conversations", 1)
    titles = sorted(c["title"] for c in body["conversations"])
    assert titles == ["c0", "c1", "c2", "c3", "c4", "empty"]
    assert all(len(c["messages"]) == 5 for c in body["conversations"] if c["title"] != "empty")


def test_all_conversations_of_a_user_with_none(auth_client):
    body = json.loads(_body(auth_client.get("/api/conversations/export/")))
    assert body["conversations"] == []


def test_export_needs_a_login(api_client, user):
    conversation = branched_conversation(user)
    assert api_client.get(url(conversation.pk)).status_code == 401
    assert api_client.get("/api/conversations/export/").status_code == 401
