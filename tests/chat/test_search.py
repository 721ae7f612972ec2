"""GET /api/search/: full-text search over one's own titles and messages (chat.search), on
SQLite (FTS5 kept by triggers) and PostgreSQL (GIN indexes); and the `loadtest` source."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import search_index
from chat.models import Conversation, Message
from chat.search import fts5_query, marked

pytestmark = pytest.mark.django_db

SEARCH = "/api/search/"


def find(client, q, **params):
    response = client.get(SEARCH, {"q": q, **params})
    assert response.status_code == 200, response.content
    return response.json()


def marks(hit) -> list[str]:
    """The marked parts of a hit's snippet (offsets in code points)."""
    points = list(hit["snippet"])
    return ["".join(points[start:end]) for start, end in hit["highlights"]]


def exchange(conversation, question, answer, parent=None):
    asked = Message.objects.create(
        conversation=conversation, parent=parent, role="user", content=question
    )
    reply = Message.objects.create(
        conversation=conversation, parent=asked, role="assistant", content=answer
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=reply)
    return asked, reply


def test_finds_messages_and_titles_with_marked_snippets(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="Sea stories")
    asked, reply = exchange(
        conversation, "Talk like a pirate 🦜, please", "Arr! Every pirate loves the sea."
    )
    hits = find(auth_client, "pirate")
    assert hits["count"] == 2
    newest, older = hits["results"]
    assert (newest["kind"], newest["message"], newest["role"]) == ("message", reply.pk, "assistant")
    assert (older["message"], older["role"]) == (asked.pk, "user")
    assert newest["conversation"] == {"id": str(conversation.pk), "title": "Sea stories"}
    # Plain text with code-point offsets: the emoji before the match does not shift it.
    assert older["snippet"] == "Talk like a pirate 🦜, please"
    assert [m.lower() for m in marks(older)] == ["pirate"]
    assert marks(newest) == ["pirate"]

    title = find(auth_client, "stories")["results"]
    assert [(h["kind"], h["message"], h["role"]) for h in title] == [("title", None, None)]
    assert marks(title[0]) == ["stories"]
    # Words are stemmed: "pirates" finds "pirate".
    assert find(auth_client, "pirates")["count"] == 2
    # One kind only (the web chat's sidebar lists titles itself, and asks for messages).
    both = find(auth_client, "pirate or stories")
    assert sorted(h["kind"] for h in both["results"]) == ["message", "message", "title"]
    assert find(auth_client, "pirate or stories", kind="message")["count"] == 2
    assert find(auth_client, "pirate or stories", kind="title")["count"] == 1


def test_only_your_own_messages_are_searched(auth_client, user, make_user):
    bob = make_user("bob@example.com")
    mine = Conversation.objects.create(owner=user, title="mine")
    theirs = Conversation.objects.create(owner=bob, title="kraken notes")
    exchange(mine, "What is a kraken?", "A sea monster.")
    exchange(theirs, "kraken kraken", "The kraken is Bob's secret.")
    hits = find(auth_client, "kraken")["results"]
    assert [h["conversation"]["id"] for h in hits] == [str(mine.pk)]
    assert "secret" not in str(find(auth_client, "secret"))


def test_every_branch_edits_and_streaming_replies(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="Branches")
    asked, first = exchange(conversation, "Name a bird", "An albatross.")
    # A regenerated reply: the first one stays, in a branch no longer shown.
    second = Message.objects.create(
        conversation=conversation, parent=asked, role="assistant", content="A puffin."
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=second)
    hits = find(auth_client, "albatross")["results"]
    assert [h["message"] for h in hits] == [first.pk]

    # Changed text is found by its new words, no longer by its old ones.
    Message.objects.filter(pk=second.pk).update(content="A cormorant.")
    assert find(auth_client, "puffin")["count"] == 0
    assert [h["message"] for h in find(auth_client, "cormorant")["results"]] == [second.pk]

    # A reply being generated is found once it is saved as finished.
    streaming = Message.objects.create(
        conversation=conversation, parent=asked, role="assistant", status="streaming", content=""
    )
    Message.objects.filter(pk=streaming.pk).update(content="A flamingo so far")
    assert find(auth_client, "flamingo")["count"] == 0
    Message.objects.filter(pk=streaming.pk).update(status="complete", content="A flamingo.")
    assert [h["message"] for h in find(auth_client, "flamingo")["results"]] == [streaming.pk]
    # ...and a continued one leaves the index while it streams again, then comes back.
    Message.objects.filter(pk=streaming.pk).update(status="streaming")
    assert find(auth_client, "flamingo")["count"] == 0
    Message.objects.filter(pk=streaming.pk).update(status="cancelled", content="A flamingo, pink")
    assert find(auth_client, "pink")["count"] == 1


def test_edit_through_the_api_is_found_by_its_new_text(auth_client, ollama):
    ollama.script(reply="Noted.")
    response = auth_client.post("/api/chat/", {"message": "My cat is grey"}, format="json")
    assert response.status_code == 200, response.json()
    question = Message.objects.get(pk=response.json()["message"]).parent_id
    ollama.script(reply="Noted again.")
    response = auth_client.post(
        f"/api/messages/{question}/edit/", {"message": "My cat is ginger"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert [h["role"] for h in find(auth_client, "ginger")["results"]] == ["user"]
    # The first version is still in the tree, so still found.
    assert find(auth_client, "grey")["count"] == 2  # the title ("My cat is grey") and the text


def test_deleted_and_cleared_conversations_are_not_found(auth_client, user):
    gone = Conversation.objects.create(owner=user, title="walrus facts")
    exchange(gone, "Tell me about the walrus", "A walrus has tusks.")
    cleared = Conversation.objects.create(owner=user, title="Other")
    exchange(cleared, "walrus again", "Yes, walrus.")
    assert find(auth_client, "walrus")["count"] == 5
    assert auth_client.delete(f"/api/conversations/{gone.pk}/").status_code == 204
    assert auth_client.post(f"/api/conversations/{cleared.pk}/clear/").status_code == 200
    assert find(auth_client, "walrus")["count"] == 0
    Conversation.objects.filter(pk=cleared.pk).update(title="Walrus, renamed")
    assert [h["kind"] for h in find(auth_client, "walrus")["results"]] == ["title"]
    Conversation.objects.filter(pk=cleared.pk).update(title="Other again")
    assert find(auth_client, "walrus")["count"] == 0


HOSTILE = [
    '"',
    '""',
    '"unclosed phrase',
    "*",
    "pira*",
    "AND(",
    "OR",
    "NOT",
    "NEAR",
    "NEAR(a b, 2)",
    "content:pirate",
    "{content}: x",
    "^start",
    "a AND OR NOT b",
    "((((",
    "-",
    "--x",
    "-pirate",
    "'; DROP TABLE chat_message; --",
    "\\",
    "%_",
    "\u210c\U0001d522 zwölf café 日本語 مرحبا",  # Fraktur letters, then other scripts
    "\u200b\ufeff",
    "\ue000pirate\ue001",
    "a\x00b",
    "e\u0301",
]


@pytest.mark.parametrize("q", HOSTILE)
def test_query_syntax_never_fails(auth_client, user, q):
    conversation = Conversation.objects.create(owner=user, title="t")
    exchange(conversation, "pirate café zwölf", "日本語 text")
    response = auth_client.get(SEARCH, {"q": q})
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert response.json()["code"] == "empty_query"
    else:
        assert isinstance(response.json()["results"], list)


def test_empty_and_too_long_queries_are_refused(auth_client):
    for q in ("", "   ", "\n\t"):
        response = auth_client.get(SEARCH, {"q": q})
        assert (response.status_code, response.json()["code"]) == (400, "empty_query")
    assert auth_client.get(SEARCH).json()["code"] == "empty_query"
    response = auth_client.get(SEARCH, {"q": "x" * 201})
    assert (response.status_code, response.json()["code"]) == (400, "query_too_long")
    assert auth_client.get(SEARCH, {"q": "x" * 200}).status_code == 200
    response = auth_client.get(SEARCH, {"q": "x", "source": "nope"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_source")


def test_search_needs_a_login(api_client):
    assert api_client.get(SEARCH, {"q": "x"}).status_code == 401


def test_phrases_alternatives_and_exclusions(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="t")
    exchange(conversation, "red apple pie", "green apple tart")
    assert find(auth_client, '"apple pie"')["count"] == 1
    assert find(auth_client, '"pie apple"')["count"] == 0
    assert find(auth_client, "pie or tart")["count"] == 2
    assert find(auth_client, "apple -tart")["count"] == 1
    assert find(auth_client, "-apple")["count"] == 0  # nothing to look for: no hit, no error


def test_fts5_query_quotes_everything():
    assert (
        fts5_query('say "hello world" or hi -bye')
        == '("say" AND ("hello world" OR "hi")) NOT "bye"'
    )
    assert fts5_query('NEAR(a "b"') == '"NEAR(a" AND "b"'
    assert fts5_query("* - ()") is None
    assert fts5_query("-only") is None
    assert marked("a\ue000b\ue001c\ue001") == ("abc", [[1, 2]])


def test_pages_newest_first(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="t")
    made = [
        Message.objects.create(conversation=conversation, role="user", content=f"otter {n}").pk
        for n in range(25)
    ]
    first = find(auth_client, "otter", page_size=10)
    assert first["count"] == 25 and first["next"] and first["previous"] is None
    seen = [h["message"] for h in first["results"]]
    page = 2
    while len(seen) < 25:
        seen += [
            h["message"] for h in find(auth_client, "otter", page_size=10, page=page)["results"]
        ]
        page += 1
    assert seen == made[::-1]
    response = auth_client.get(SEARCH, {"q": "otter", "page": 9})
    assert response.status_code == 404  # like every list: a page past the end
    ranked = find(auth_client, "otter", order="relevance", page_size=100)
    assert sorted(h["message"] for h in ranked["results"]) == sorted(made)


def test_a_fixed_number_of_queries(auth_client, user):
    def queries(q: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert find(auth_client, q)["results"]
        return len(captured)

    for n in range(3):
        conversation = Conversation.objects.create(owner=user, title=f"heron {n}")
        for m in range(10):
            exchange(conversation, f"heron {m}", f"heron {m} reply")
    Conversation.objects.create(owner=user, title="egret")
    one, many = queries("egret"), queries("heron")  # 1 hit; a full page of 20 (of 63)
    assert one == many
    # Authentication (the user), the count, the page and the page's snippets.
    assert many <= 4


def test_loadtest_conversations_are_hidden_unless_asked_for(auth_client, user):
    chat = Conversation.objects.create(owner=user, title="swordfish chat")
    load = Conversation.objects.create(owner=user, title="swordfish load", source="loadtest")
    exchange(load, "[loadtest 1.1] swordfish", "ok")
    listed = auth_client.get("/api/conversations/").json()
    assert [c["id"] for c in listed["results"]] == [str(chat.pk)]
    only = auth_client.get("/api/conversations/", {"source": "loadtest"}).json()
    assert [c["id"] for c in only["results"]] == [str(load.pk)]
    # Hidden from the list, not gone: it opens, renames and deletes as any other.
    assert auth_client.get(f"/api/conversations/{load.pk}/").json()["source"] == "loadtest"
    assert find(auth_client, "swordfish")["count"] == 1
    assert find(auth_client, "swordfish", source="loadtest")["count"] == 2


def test_a_chat_can_mark_its_new_conversation_loadtest(auth_client, ollama):
    ollama.script(reply="Fine.")
    body = {"message": "[loadtest 1.1] go", "source": "loadtest"}
    response = auth_client.post("/api/chat/", body, format="json")
    assert response.status_code == 200, response.json()
    conversation = Conversation.objects.get(pk=response.json()["conversation"])
    assert conversation.source == "loadtest"
    # Only `loadtest` may be asked for; the other sources belong to their transports.
    response = auth_client.post("/api/chat/", {"message": "x", "source": "openai"}, format="json")
    assert response.status_code == 400 and "source" in response.json()
    # Swagger's or the browsable API's chats are plain chats, listed as always.
    response = auth_client.post("/api/chat/", {"message": "from Swagger"}, format="json")
    assert Conversation.objects.get(pk=response.json()["conversation"]).source == "chat"


def test_the_index_is_the_databases_own(auth_client, user):
    # One test, two bodies: each database's own mechanism, so neither run reports a skip.
    if connection.vendor == "postgresql":
        postgres_searches_through_the_gin_indexes()
    else:
        sqlite_triggers_dropped_by_a_table_remake_come_back(auth_client, user)


def sqlite_triggers_dropped_by_a_table_remake_come_back(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="t")
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER chat_message_fts_insert")
    exchange(conversation, "unindexed narwhal", "ok")  # written while the trigger is gone
    assert find(auth_client, "narwhal")["count"] == 0
    assert search_index.ensure_sqlite_triggers(connection) == ["chat_message_fts_insert"]
    assert find(auth_client, "narwhal")["count"] == 1  # rebuilt
    assert search_index.ensure_sqlite_triggers(connection) == []
    exchange(conversation, "indexed narwhal", "ok")
    assert find(auth_client, "narwhal")["count"] == 2


def postgres_searches_through_the_gin_indexes():
    from django.contrib.postgres.search import SearchQuery

    from chat.search import SEARCH_CONFIG, indexed_messages, indexed_titles

    query = SearchQuery("pirate", search_type="websearch", config=SEARCH_CONFIG)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: no scan is cheaper
        # The expressions the search filters on are the indexes' own (else: a full scan).
        assert "chat_msg_search" in indexed_messages().filter(document=query).explain()
        assert "chat_conv_title_search" in indexed_titles().filter(document=query).explain()


def test_relevance_puts_the_best_match_first(auth_client, user):
    conversation = Conversation.objects.create(owner=user, title="t")
    best = Message.objects.create(
        conversation=conversation, role="user", content="gecko gecko gecko, the gecko"
    )
    newer = Message.objects.create(
        conversation=conversation, role="user", content="a gecko among many other words here"
    )
    newest = [h["message"] for h in find(auth_client, "gecko")["results"]]
    ranked = [h["message"] for h in find(auth_client, "gecko", order="relevance")["results"]]
    assert (newest, ranked) == ([newer.pk, best.pk], [best.pk, newer.pk])
