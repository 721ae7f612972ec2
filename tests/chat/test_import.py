"""POST /api/conversations/import/ and chat.imports: our JSON (a round trip keeps the tree),
Open WebUI's and ChatGPT's exports (fixtures built from their documented shapes), bad files,
limits, all or nothing, and whose the imported conversations are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import imports
from chat.models import Conversation, Message

from .transfer_helpers import branched_conversation, tree_shape

FIXTURES = Path(__file__).parent / "fixtures"
URL = "/api/conversations/import/"


def parse(document, **limits):
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return imports.parse(
        data,
        max_conversations=limits.get("max_conversations", 100),
        max_messages=limits.get("max_messages", 1000),
    )


def refused(document, **limits) -> str:
    with pytest.raises(imports.InvalidImport) as caught:
        parse(document, **limits)
    return caught.value.detail


def post(client, data: bytes, name: str = "export.json"):
    return client.post(URL, {"file": SimpleUploadedFile(name, data)}, format="multipart")


def ours(*conversations) -> dict:
    return {
        "format": "ollama-gateway/conversations",
        "version": 1,
        "conversations": list(conversations),
    }


def message(id, parent, role="user", content="hi", **fields) -> dict:
    return {"id": id, "parent": parent, "role": role, "content": content, **fields}


# --------------------------------------------------------------------------- parsing (no database)


def test_open_webui_keeps_branches_current_branch_and_system_prompt():
    parsed = parse((FIXTURES / "open_webui_export.json").read_bytes())
    assert parsed.format == "open-webui"
    first, second = parsed.conversations
    assert first.title == "Rust lifetimes" and first.model == "llama3.2:3b"
    assert first.system_prompt == "You are a patient Rust teacher."
    assert [(m.key, m.parent, m.role) for m in first.messages] == [
        ("u1", None, "user"),
        ("a1", "u1", "assistant"),
        ("u2", "a1", "user"),
        ("a3", "u2", "assistant"),
        ("a2", "u1", "assistant"),  # the second version, after the first (childrenIds order)
    ]
    assert first.current == "a3"
    assert first.messages[4].model == "qwen2.5:0.5b"
    assert first.created is not None and first.created.year == 2024
    assert second.title == "Hello" and len(second.messages) == 2 and second.current == "m2"


def test_chatgpt_skips_hidden_and_tool_nodes_and_keeps_the_branch():
    parsed = parse((FIXTURES / "chatgpt_conversations.json").read_bytes())
    assert parsed.format == "chatgpt"
    bread, pirate = parsed.conversations
    assert bread.title == "Sourdough starter" and bread.model == "gpt-4o"
    assert bread.system_prompt == ""  # the hidden, empty system node is skipped
    shape = [(m.key, m.parent, m.role) for m in bread.messages]
    # The custom instructions (hidden) and the tool's output are skipped; the answer after
    # the tool call hangs from the reply that made the call.
    assert shape == [
        ("q1", None, "user"),
        ("r1", "q1", "assistant"),
        ("r2", "q1", "assistant"),
        ("r3", "r2", "assistant"),
    ]
    assert bread.current == "r3"
    assert bread.messages[1].model == "gpt-4o"
    assert pirate.system_prompt == "Talk like a pirate."
    assert pirate.messages[0].content == "[image not imported]\nWhat is in this picture?"
    assert pirate.current == "d"


def test_open_webui_images_files_errors_and_the_older_list_shape():
    chat = {
        "title": "Pictures",
        "chat": {
            "history": {
                "messages": {
                    "q": {
                        "id": "q",
                        "parentId": None,
                        "role": "user",
                        "content": "",
                        "files": [
                            {"type": "image", "url": "data:image/png;base64,AAAA"},
                            {"type": "file", "name": "report.pdf", "size": 3},
                        ],
                    },
                    "a": {
                        "id": "a",
                        "parentId": "q",
                        "role": "assistant",
                        "content": "",
                        "error": {"content": "Ollama: model not found"},
                    },
                },
                "currentId": "a",
            }
        },
    }
    old = {"title": "Old", "chat": {"messages": [{"role": "user", "content": "one"}]}}
    pictures, older = parse([chat, old]).conversations
    question, answer = pictures.messages
    assert question.content == "[image not imported]"
    assert [a["name"] for a in question.attachments] == ["report.pdf"]
    assert (answer.status, answer.error) == ("failed", "Ollama: model not found")
    assert [m.content for m in older.messages] == ["one"] and older.current == "0"


def test_our_file_with_a_missing_current_leaf_shows_the_newest_branch():
    parsed = parse(
        ours(
            {
                "title": "t",
                "messages": [
                    message(1, None),
                    message(2, 1, "assistant", "old"),
                    message(3, 1, "assistant", "new"),
                ],
            }
        )
    )
    assert parsed.conversations[0].current == "3"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"not json at all", "The file is not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[" * 100 + b"]" * 100, "too deeply nested"),
        ({"format": "something-else/v9"}, "Unknown format 'something-else/v9'"),
        ({"hello": "world"}, "Unknown format"),
        ([1, 2, 3], "Unknown format"),
        ([], "no conversations"),
        ({"format": "ollama-gateway/conversations", "version": 7}, "version: 7"),
        (
            ours({"messages": [message(1, None, role="system")]}),
            "conversations[0].messages[0].role: must be user or assistant",
        ),
        (
            ours({"messages": [message(1, None), message(2, 9)]}),
            "has a parent that is not in the file",
        ),
        (ours({"messages": [message(1, 2), message(2, 1)]}), "form a cycle"),
        (ours({"messages": [message(1, None), message(1, None)]}), "used twice"),
        (ours({"messages": [message(1, None, content=5)]}), "messages[0].content: must be text"),
        (ours({"messages": "nope"}), "conversations[0].messages: must be a list"),
        (ours({"messages": [], "options": {"top_p": 5}}), "conversations[0].options"),
        (
            ours({"messages": [message(1, None, "assistant", metrics={"eval_count": -1})]}),
            "metrics.eval_count: must be a non-negative number",
        ),
        (
            ours({"messages": [message(1, None, created_at="yesterday")]}),
            "created_at: is not an ISO 8601 time",
        ),
        (
            [{"mapping": {"x": {"message": {"author": {"role": "robot"}}, "parent": None}}}],
            "author.role: must be user, assistant, system or tool",
        ),
        (
            [
                {
                    "chat": {
                        "history": {
                            "messages": {"a": {"role": "user", "content": "x", "timestamp": "soon"}}
                        }
                    }
                }
            ],
            "timestamp: must be a time",
        ),
    ],
)
def test_bad_files_are_named(document, expected):
    assert expected in refused(document)


def test_count_limits():
    many = ours(*[{"messages": []} for _ in range(4)])
    assert "at most 3 can be imported" in refused(many, max_conversations=3)
    long = ours({"messages": [message(i, i - 1 if i else None) for i in range(11)]})
    assert "more than 10 messages" in refused(long, max_messages=10)


def test_a_long_chain_is_not_recursion():
    chain = ours({"messages": [message(i, i - 1 if i else None) for i in range(5000)]})
    parsed = parse(chain, max_messages=10_000)
    assert len(parsed.conversations[0].messages) == 5000
    assert parsed.conversations[0].current == "4999"


# --------------------------------------------------------------------------- the endpoint


@pytest.mark.django_db
def test_round_trip_of_our_json_keeps_the_tree(auth_client, user):
    original = branched_conversation(user)
    exported = auth_client.get(f"/api/conversations/{original.pk}/export/").content
    response = post(auth_client, exported)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["format"], body["imported"], body["messages"]) == ("ollama-gateway", 1, 5)
    copy = Conversation.objects.get(pk=body["conversations"][0]["id"])
    assert copy.pk != original.pk and copy.owner == user
    assert (copy.title, copy.model, copy.system_prompt, copy.options) == (
        original.title,
        original.model,
        original.system_prompt,
        original.options,
    )
    assert tree_shape(copy) == tree_shape(original)
    assert copy.created_at == original.created_at
    reply = copy.messages.get(content__startswith="Go to")
    assert (reply.eval_count, reply.tokens_per_second, reply.done_reason) == (9, 12.5, "stop")
    assert reply.created_at == original.messages.get(content__startswith="Go to").created_at
    # Attachment records stay as a description only: never linked to an upload.
    question = copy.messages.get(content="Where should I eat?")
    assert question.attachments == [
        {
            "name": "notes.txt",
            "content_type": "text/plain",
            "size": 12,
            "kind": "text",
            "imported": True,
        }
    ]
    # The messages the chat lists for it: the branch shown, as in the original.
    listed = auth_client.get(f"/api/conversations/{copy.pk}/messages/").json()["results"]
    assert [m["content"] for m in listed] == [
        "Where should I eat?",
        "Go to **Alfama** for fado and food.",
        "And dessert?",
        "Pastéis de nata, of course.",
    ]
    assert (
        listed[1]["siblings"] == sorted(listed[1]["siblings"]) and len(listed[1]["siblings"]) == 2
    )


@pytest.mark.django_db
def test_all_conversations_file_round_trip(auth_client, user):
    branched_conversation(user, "one")
    branched_conversation(user, "two")
    from tests.chat.test_export import _body

    exported = _body(auth_client.get("/api/conversations/export/"))
    response = post(auth_client, exported)
    assert response.status_code == 201 and response.json()["imported"] == 2
    assert Conversation.objects.filter(owner=user).count() == 4
    assert Message.objects.filter(conversation__owner=user).count() == 20


@pytest.mark.django_db
def test_open_webui_and_chatgpt_files(auth_client, user):
    response = post(auth_client, (FIXTURES / "open_webui_export.json").read_bytes())
    assert response.status_code == 201, response.content
    assert [c["title"] for c in response.json()["conversations"]] == ["Rust lifetimes", "Hello"]
    rust = Conversation.objects.get(owner=user, title="Rust lifetimes")
    assert rust.system_prompt == "You are a patient Rust teacher." and rust.source == "chat"
    assert rust.current_leaf is not None and rust.current_leaf.content.startswith("```rust")
    assert rust.messages.count() == 5
    assert rust.created_at.year == 2024

    response = post(auth_client, (FIXTURES / "chatgpt_conversations.json").read_bytes())
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["format"], body["imported"], body["messages"]) == ("chatgpt", 2, 6)
    bread = Conversation.objects.get(owner=user, title="Sourdough starter")
    assert bread.current_leaf is not None
    assert bread.current_leaf.content == "Feed it 1:1:1 starter, flour, water."
    parent = bread.current_leaf.parent
    assert parent is not None and parent.content == "Let me look that up."


@pytest.mark.django_db
def test_all_or_nothing(auth_client, user):
    good = {"title": "fine", "messages": [message(1, None), message(2, 1, "assistant", "ok")]}
    broken = {"title": "broken", "messages": [message(1, None, role="wizard")]}
    response = post(auth_client, json.dumps(ours(good, good, broken)).encode())
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_import"
    assert body["detail"] == "conversations[2].messages[0].role: must be user or assistant"
    assert not Conversation.objects.exists() and not Message.objects.exists()


@pytest.mark.django_db
def test_a_failure_while_saving_leaves_nothing(auth_client, user, monkeypatch):
    good = {"title": "fine", "messages": [message(1, None)]}
    calls = {"n": 0}
    real_create = Conversation.objects.create

    def create(**fields):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the database went away")
        return real_create(**fields)

    monkeypatch.setattr(Conversation.objects, "create", create)
    response = post(auth_client, json.dumps(ours(good, good, good)).encode())
    assert response.status_code == 500 and calls["n"] == 3
    assert not Conversation.objects.exists() and not Message.objects.exists()


@pytest.mark.django_db
def test_imported_conversations_are_the_importers_only(auth_client, user, make_user):
    bob = make_user("bob@example.com")
    theirs = branched_conversation(bob)
    exported = json.loads(
        json.dumps(
            {
                "format": "ollama-gateway/conversation",
                "version": 1,
                "conversation": {
                    "id": str(theirs.pk),  # an id that exists: never reused
                    "title": "mine now",
                    "messages": [message(theirs.messages.earliest("id").pk, None)],
                },
            }
        )
    )
    response = post(auth_client, json.dumps(exported).encode())
    assert response.status_code == 201
    mine = Conversation.objects.get(title="mine now")
    assert mine.owner == user and mine.pk != theirs.pk
    assert theirs.messages.count() == 5 and Conversation.objects.filter(owner=bob).count() == 1


@pytest.mark.django_db
def test_size_limit_and_missing_file(auth_client, settings):
    settings.IMPORT_MAX_BYTES = 100
    response = post(auth_client, b"[" + b" " * 200 + b"]")
    assert response.status_code == 413 and response.json()["code"] == "file_too_large"
    response = auth_client.post(URL, {}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "invalid_import"
    assert "'file'" in response.json()["detail"]


def test_import_needs_a_login(api_client):
    assert post(api_client, b"[]").status_code == 401


@pytest.mark.django_db
def test_imported_messages_are_searchable(auth_client, user):
    post(auth_client, (FIXTURES / "chatgpt_conversations.json").read_bytes())
    hits = auth_client.get("/api/search/", {"q": "parrot"}).json()["results"]
    assert [h["kind"] for h in hits] == ["message"]
    assert Message.objects.get(pk=hits[0]["message"]).content == "Arr, a parrot!"


@pytest.mark.django_db
def test_imports_are_throttled(auth_client, settings):
    settings.UPLOAD_RATE = "2/min"
    small = json.dumps(ours({"messages": [message(1, None)]})).encode()
    assert [post(auth_client, small).status_code for _ in range(3)] == [201, 201, 429]
