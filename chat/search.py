"""Full-text search over a user's own conversations: titles and every message of every branch.

PostgreSQL: `websearch_to_tsquery` over the GIN indexes of chat.search_index, highlighted with
`ts_headline`. SQLite: FTS5 (chat.search_index), with the same syntax read by `fts5_query`:
words (all of them must be there), "quoted phrases", `or` between alternatives, `-word` to leave
out. Whatever the user types is data, never query syntax: nothing typed raises an error.

A hit is a title or a message, newest first (or best first: `order="relevance"`, PostgreSQL's
ts_rank or SQLite's bm25). Its snippet is plain text with the matches given
as [start, end) offsets in code points, so that a client marks them without parsing HTML.

Three queries whatever the page holds: the count, the page (ids and times), and the page's
details with their snippets (so that snippets are made for the page only, never every match).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from uuid import UUID

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import (
    BigIntegerField,
    CharField,
    F,
    FloatField,
    QuerySet,
    TextField,
    Value,
)
from django.db.models.functions import Cast, Left, Right
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.errors import ChatRequestError
from chat.models import Conversation, Message
from chat.search_index import SEARCH_CONFIG

MAX_QUERY_CHARS = 200
SNIPPET_WORDS = 24
EDGE = 80  # characters of a text's start and end compared with its snippet (PostgreSQL)

# Private-use characters around each match while the database builds a snippet; taken out (and
# turned into offsets) before the snippet leaves the server.
START, STOP = "\ue000", "\ue001"

ORDERS = ("newest", "relevance")
KINDS = ("title", "message")


def clean_query(raw: str | None) -> str:
    """The query as searched: control characters (NUL among them) dropped, spaces collapsed;
    `empty_query` or `query_too_long` (400) when there is nothing to search or too much."""
    text = "".join(
        " " if unicodedata.category(c) in {"Cc", "Zl", "Zp"} else c
        for c in raw or ""
        if c not in (START, STOP)
    )
    text = " ".join(text.split())
    if not text:
        raise ChatRequestError("empty_query", "Type something to search for (`q`).", 400)
    if len(text) > MAX_QUERY_CHARS:
        raise ChatRequestError(
            "query_too_long",
            f"The search is {len(text)} characters long; the longest is {MAX_QUERY_CHARS}.",
            400,
        )
    return text


# --------------------------------------------------------------------------- FTS5 queries

_TERM = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w", re.UNICODE)


def _phrase(text: str) -> str | None:
    # A string in double quotes is a phrase of whatever tokens FTS5's tokenizer finds in it:
    # operators, stars, colons and parentheses inside are plain text.
    if not _WORD.search(text):
        return None  # punctuation only: no token, nothing to look for
    return '"' + text.replace('"', '""') + '"'


def fts5_query(text: str) -> str | None:
    """The FTS5 MATCH expression for what the user typed, read like PostgreSQL's websearch
    syntax; None when it asks for nothing that can be found (only exclusions, or no words)."""
    groups: list[list[str]] = []  # AND of ORs
    excluded: list[str] = []
    joining = False  # the previous word was `or`
    for match in _TERM.finditer(text):
        negate, quoted, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None and bare.lower() == "or":
            joining = bool(groups)
            continue
        if bare is not None and bare.startswith("-") and len(bare) > 1:
            negate, bare = "-", bare[1:]
        phrase = _phrase(quoted if quoted is not None else bare)
        if phrase is None:
            continue
        if negate:
            excluded.append(phrase)
        elif joining and groups:
            groups[-1].append(phrase)
        else:
            groups.append([phrase])
        joining = False
    if not groups:
        return None
    expression = " AND ".join(
        group[0] if len(group) == 1 else "(" + " OR ".join(group) + ")" for group in groups
    )
    if excluded:
        expression = f"({expression})" + "".join(f" NOT {phrase}" for phrase in excluded)
    return expression


# --------------------------------------------------------------------------- snippets


def marked(snippet: str) -> tuple[str, list[list[int]]]:
    """Plain text and the [start, end) code-point offsets of the parts between the markers."""
    text: list[str] = []
    spans: list[list[int]] = []
    start: int | None = None
    length = 0
    for char in snippet:
        if char == START:
            start = length
        elif char == STOP:
            if start is not None and length > start:
                spans.append([start, length])
            start = None
        else:
            text.append(char)
            length += 1
    return "".join(text), spans


@dataclass
class Hit:
    kind: str  # "title" or "message"
    conversation_id: Any
    message_id: int | None
    created_at: Any
    conversation_title: str = ""
    role: str | None = None
    snippet: str = ""
    highlights: list[list[int]] = field(default_factory=list)


# --------------------------------------------------------------------------- the backends


def _hex(conversation_id: Any) -> str:
    # SQLite keeps a UUID as 32 hex digits.
    return conversation_id.hex if isinstance(conversation_id, UUID) else str(conversation_id)


class Search:
    """A search as a sliceable sequence for Django's paginator: `count()`, then `[a:b]`."""

    ordered = True

    def __init__(
        self,
        user_id: int,
        text: str,
        *,
        source: str | None,
        order: str = "newest",
        kind: str | None = None,
    ):
        self.user_id = user_id
        self.text = text
        self.kind = kind if kind in KINDS else None  # None: titles and messages
        # No source: every conversation but the load test's (as the conversation list does).
        self.source = source
        self.order = order if order in ORDERS else "newest"
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            if connection.vendor == "postgresql":
                self._count = self._pg_matches().count()
            else:
                self._count = self._sqlite_count()
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice) -> list[Hit]:
        if not isinstance(index, slice):
            raise TypeError("a search is read by pages")
        offset = index.start or 0
        limit = (index.stop if index.stop is not None else offset + 100) - offset
        if limit <= 0:
            return []
        if connection.vendor == "postgresql":
            return self._pg_page(offset, limit)
        return self._sqlite_page(offset, limit)

    # ------------------------------------------------------------------ PostgreSQL

    def _pg_query(self) -> SearchQuery:
        return SearchQuery(self.text, search_type="websearch", config=SEARCH_CONFIG)

    def _pg_conversations(self, queryset: QuerySet[Any], prefix: str = "") -> QuerySet[Any]:
        if self.source:
            return queryset.filter(**{f"{prefix}source": self.source})
        return queryset.exclude(**{f"{prefix}source": Conversation.Source.LOADTEST})

    def _pg_matches(self) -> QuerySet[Any]:
        query = self._pg_query()
        # The same expressions as chat.search_index's indexes (and the message index's
        # condition, status <> 'streaming'), so that the planner can use them.
        messages = self._pg_conversations(
            indexed_messages().filter(conversation__owner_id=self.user_id), "conversation__"
        )
        titles = self._pg_conversations(indexed_titles().filter(owner_id=self.user_id))
        if fts5_query(self.text) is None:
            # Nothing to look for (only exclusions, or no word): as on SQLite, no hit, rather
            # than every message but the excluded ones (which no index can serve).
            messages, titles = messages.none(), titles.none()
        if self.kind == "title":
            messages = messages.none()
        elif self.kind == "message":
            titles = titles.none()
        relevance = self.order == "relevance"
        fields = ("kind", "hit_message", "hit_conversation", "hit_created", "rank")
        message_rows = (
            messages.filter(document=query)
            .annotate(
                kind=Value("message", output_field=CharField()),
                hit_message=F("id"),
                hit_conversation=F("conversation_id"),
                hit_created=F("created_at"),
                rank=SearchRank(F("document"), query) if relevance else _zero(),
            )
            .order_by()
            .values_list(*fields)
        )
        title_rows = (
            titles.filter(document=query)
            .annotate(
                kind=Value("title", output_field=CharField()),
                hit_message=Value(None, output_field=BigIntegerField()),
                hit_conversation=F("id"),
                hit_created=F("created_at"),
                rank=SearchRank(F("document"), query) if relevance else _zero(),
            )
            .order_by()
            .values_list(*fields)
        )
        return message_rows.union(title_rows, all=True)

    def _pg_page(self, offset: int, limit: int) -> list[Hit]:
        ordering = ["-hit_created", "-hit_message"]
        if self.order == "relevance":
            ordering = ["-rank", *ordering]
        rows = self._pg_matches().order_by(*ordering)[offset : offset + limit]
        hits = [Hit(kind, conv, msg, created) for kind, msg, conv, created, _rank in rows]
        if not hits:
            return hits
        query = self._pg_query()

        def headline(expression: str) -> SearchHeadline:
            return SearchHeadline(
                expression,
                query,
                config=SEARCH_CONFIG,
                start_sel=START,
                stop_sel=STOP,
                max_words=SNIPPET_WORDS,
                min_words=SNIPPET_WORDS // 2,
                max_fragments=1,
            )

        fields = (
            *("kind", "hit_message", "hit_conversation", "text", "hit_role", "hit_title"),
            *("head", "tail"),
        )
        messages = (
            Message.objects.filter(pk__in=[h.message_id for h in hits if h.message_id])
            .annotate(
                kind=Value("message", output_field=CharField()),
                hit_message=F("id"),
                hit_conversation=F("conversation_id"),
                text=headline("content"),
                hit_role=F("role"),
                hit_title=F("conversation__title"),
                head=Left("content", EDGE),
                tail=Right("content", EDGE),
            )
            .values_list(*fields)
        )
        title_ids = [hit.conversation_id for hit in hits if not hit.message_id]
        titles = (
            Conversation.objects.filter(pk__in=title_ids)
            .annotate(
                kind=Value("title", output_field=CharField()),
                hit_message=Value(None, output_field=BigIntegerField()),
                hit_conversation=F("id"),
                text=headline("title"),
                hit_role=Value(None, output_field=CharField()),
                hit_title=F("title"),
                head=Cast(Left("title", EDGE), TextField()),
                tail=Cast(Right("title", EDGE), TextField()),
            )
            .values_list(*fields)
        )
        # Only the page's rows are highlighted (ts_headline reads the whole text).
        _fill(hits, messages.union(titles, all=True))
        return hits

    # ------------------------------------------------------------------ SQLite (FTS5)

    def _sqlite_matches(self, match: str, *, ranked: bool = False) -> tuple[str, list[Any]]:
        # bm25() only where the order needs it (it is worked out for every match).
        message_rank = "bm25(chat_message_fts)" if ranked else "0"
        title_rank = "bm25(chat_conversation_fts)" if ranked else "0"
        if self.source:
            source_sql, source_params = "c.source = %s", [self.source]
        else:
            source_sql, source_params = "c.source <> %s", [Conversation.Source.LOADTEST]
        messages = f"""
            SELECT 'message' AS kind, m.id AS message_id, m.conversation_id AS conversation_id,
                   m.created_at AS created, {message_rank} AS rank
            FROM chat_message_fts
            JOIN chat_message m ON m.id = chat_message_fts.rowid
            JOIN chat_conversation c ON c.id = m.conversation_id
            WHERE chat_message_fts MATCH %s AND c.owner_id = %s AND {source_sql}
        """  # noqa: S608 (fixed SQL only; the values are parameters)
        titles = f"""
            SELECT 'title' AS kind, NULL AS message_id, c.id AS conversation_id,
                   c.created_at AS created, {title_rank} AS rank
            FROM chat_conversation_fts
            JOIN chat_conversation_fts_key k ON k.key = chat_conversation_fts.rowid
            JOIN chat_conversation c ON c.id = k.conversation_id
            WHERE chat_conversation_fts MATCH %s AND c.owner_id = %s AND {source_sql}
        """  # noqa: S608
        params = [match, self.user_id, *source_params]
        if self.kind == "message":
            return messages, params
        if self.kind == "title":
            return titles, params
        return f"{messages} UNION ALL {titles}", params * 2

    def _sqlite_count(self) -> int:
        match = fts5_query(self.text)
        if match is None:
            return 0
        sql, params = self._sqlite_matches(match)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({sql})", params)  # noqa: S608
            return int(cursor.fetchone()[0])

    def _sqlite_page(self, offset: int, limit: int) -> list[Hit]:
        match = fts5_query(self.text)
        if match is None:
            return []
        sql, params = self._sqlite_matches(match, ranked=self.order == "relevance")
        order = "created DESC, message_id DESC"
        if self.order == "relevance":
            order = f"rank, {order}"  # bm25() is lower for better matches
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT kind, message_id, conversation_id, created FROM ({sql}) "  # noqa: S608
                f"ORDER BY {order} LIMIT %s OFFSET %s",
                [*params, limit, offset],
            )
            rows = cursor.fetchall()
        hits = [
            Hit(kind, UUID(conversation), message, _sqlite_datetime(created))
            for kind, message, conversation, created in rows
        ]
        if not hits:
            return hits
        message_ids = [hit.message_id for hit in hits if hit.message_id]
        title_ids = [_hex(hit.conversation_id) for hit in hits if not hit.message_id]
        # snippet() and highlight() need the MATCH of their own table in their query: the
        # page's rows are found again by rowid, and only they are highlighted.
        sql = f"""
            SELECT 'message', m.id, m.conversation_id,
                   snippet(chat_message_fts, 0, %s, %s, '…', %s), m.role, c.title
            FROM chat_message_fts
            JOIN chat_message m ON m.id = chat_message_fts.rowid
            JOIN chat_conversation c ON c.id = m.conversation_id
            WHERE chat_message_fts MATCH %s AND chat_message_fts.rowid IN ({_marks(message_ids)})
            UNION ALL
            SELECT 'title', NULL, k.conversation_id,
                   highlight(chat_conversation_fts, 0, %s, %s), NULL, c.title
            FROM chat_conversation_fts
            JOIN chat_conversation_fts_key k ON k.key = chat_conversation_fts.rowid
            JOIN chat_conversation c ON c.id = k.conversation_id
            WHERE chat_conversation_fts MATCH %s AND k.conversation_id IN ({_marks(title_ids)})
        """  # noqa: S608 (placeholders only)
        params = [START, STOP, SNIPPET_WORDS, match, *message_ids]
        params += [START, STOP, match, *title_ids]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            details = [
                (kind, message, UUID(conversation), text, role, title, None, None)
                for kind, message, conversation, text, role, title in cursor.fetchall()
            ]
        _fill(hits, details)
        return hits


def indexed_messages() -> QuerySet[Any]:
    """Messages with the `document` that PostgreSQL's index chat_msg_search holds."""
    return Message.objects.exclude(status=Message.Status.STREAMING).annotate(
        document=SearchVector("content", config=SEARCH_CONFIG)
    )


def indexed_titles() -> QuerySet[Any]:
    """Conversations with the `document` of PostgreSQL's index chat_conv_title_search."""
    return Conversation.objects.annotate(document=SearchVector("title", config=SEARCH_CONFIG))


def _zero() -> Value:
    return Value(0.0, output_field=FloatField())


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values)) or "NULL"


def _sqlite_datetime(value: Any) -> Any:
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)  # Django keeps UTC in SQLite
    return value


def _fill(hits: Sequence[Hit], details: Any) -> None:
    """Each hit's snippet, role and conversation title from the page's details query."""
    by_message: dict[int, tuple[str, str | None, str]] = {}
    by_title: dict[Any, tuple[str, str]] = {}
    for kind, message, conversation, text, role, title, head, tail in details:
        snippet = _with_ellipses(text or "", head, tail)
        if kind == "message":
            by_message[message] = (snippet, role, title or "")
        else:
            by_title[conversation] = (snippet, title or "")
    for hit in hits:
        if hit.message_id:
            text, hit.role, hit.conversation_title = by_message.get(hit.message_id, ("", None, ""))
        else:
            text, hit.conversation_title = by_title.get(hit.conversation_id, ("", ""))
        hit.snippet, hit.highlights = marked(text)


def _with_ellipses(snippet: str, head: str | None, tail: str | None) -> str:
    """PostgreSQL's ts_headline cuts a fragment without saying so (SQLite's snippet() adds
    "…"): an ellipsis where the fragment does not begin or end where the text does."""
    if head is None or tail is None:
        return snippet
    plain = snippet.replace(START, "").replace(STOP, "").strip()
    if not plain:
        return snippet
    if not head.lstrip().startswith(plain[: EDGE // 4].lstrip()):
        snippet = "…" + snippet
    if not tail.rstrip().endswith(plain[-(EDGE // 4) :].rstrip()):
        snippet += "…"
    return snippet
