"""A chat message costs a fixed, small number of SQL queries, whatever the reply's length.

Issue 16: no write per token. The generation's queries run on the database threads
(config.database), not on the test's thread, so `django_assert_max_num_queries` (which watches
one thread's connection) would miss them: every cursor of every thread is counted here.
Flushes of a streaming reply are by time (at most one per CHAT_FLUSH_INTERVAL), never by
token; the interval is set long here so that the count does not depend on how fast the
machine is, and a last test shows the flush by time does not turn into a write per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.backends.utils import CursorWrapper
from rest_framework_simplejwt.tokens import AccessToken

from config.asgi import application
from tests.support.websocket import Communicator

# What one new-conversation chat message costs, exactly, so that a statement added (or
# saved) shows here. Over REST: the user (JWT); their standing (budget and queue weight, one
# statement); the generations they hold (the limit); then one transaction: the user's row
# locked (PostgreSQL only: SQLite's transactions are already serial), the generations again,
# the user message, the conversation (with it as its current leaf); a second: the reply row
# and the current leaf; a third: the final save of the reply and the conversation. SQLite
# counts each transaction's BEGIN too. Over a socket, one more: it reads the user at connect
# and checks its credential before acting. Issue 16: 16 and 17 on SQLite before.
EXPECTED = {"sqlite": {"rest": 13, "websocket": 14}, "postgresql": {"rest": 11, "websocket": 12}}
SHORT, LONG = 3, 500
TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def add(self, sql: str) -> None:
        with self._lock:
            self.statements.append(sql)

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def writes(self) -> int:
        return sum(
            1 for s in self.statements if s.lstrip().upper().startswith(("INSERT", "UPDATE"))
        )


@contextlib.contextmanager
def count_queries(monkeypatch) -> Iterator[QueryCounter]:
    """Every query of every thread while the block runs."""
    counter = QueryCounter()
    execute, executemany = CursorWrapper.execute, CursorWrapper.executemany

    def counted_execute(self, sql, params=None):
        counter.add(str(sql))
        return execute(self, sql, params)

    def counted_executemany(self, sql, param_list):
        counter.add(str(sql))
        return executemany(self, sql, param_list)

    with monkeypatch.context() as patch:
        patch.setattr(CursorWrapper, "execute", counted_execute)
        patch.setattr(CursorWrapper, "executemany", counted_executemany)
        yield counter


def listing(statements: list[str]) -> str:
    """The statements, one a line (shortened), for a failure's message."""
    return "\n".join(f"{i + 1:2}. {sql[:160]}" for i, sql in enumerate(statements))


def tokens(count: int) -> list[str]:
    return [f" t{i}" for i in range(count)]


# --------------------------------------------------------------------------- REST


@pytest.mark.django_db(transaction=True)
def test_rest_chat_queries_do_not_grow_with_the_reply(auth_client, ollama, settings, monkeypatch):
    settings.CHAT_FLUSH_INTERVAL = 60.0
    counts, statements = {}, []
    for length in (SHORT, LONG):
        ollama.script(tokens=tokens(length))
        with count_queries(monkeypatch) as counter:
            response = auth_client.post("/api/chat/", {"message": "Hi"}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["response"] == "".join(tokens(length))
        counts[length] = counter.count
        statements = counter.statements
    assert counts[LONG] == counts[SHORT], counts
    assert counts[SHORT] == EXPECTED[connection.vendor]["rest"], listing(statements)


# --------------------------------------------------------------------------- WebSocket


async def _ws_chat(user, length: int, ollama) -> str:
    ollama.script(tokens=tokens(length))
    headers = [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
        text = ""
        while True:
            frame = await communicator.receive_json_from(timeout=10)
            if frame["type"] == "chat.token":
                text += frame["content"]
            if frame["type"] in TERMINAL:
                assert frame["type"] == "chat.done", frame
                break
        # The final save runs before chat.done is published; nothing is written after it.
        await asyncio.sleep(0)
        return text
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_websocket_chat_queries_do_not_grow_with_the_reply(
    user, ollama, settings, monkeypatch
):
    settings.CHAT_FLUSH_INTERVAL = 60.0
    counts, statements = {}, []
    for length in (SHORT, LONG):
        with count_queries(monkeypatch) as counter:
            text = await _ws_chat(user, length, ollama)
        assert text == "".join(tokens(length))
        counts[length] = counter.count
        statements = counter.statements
    assert counts[LONG] == counts[SHORT], counts
    assert counts[SHORT] == EXPECTED[connection.vendor]["websocket"], listing(statements)


# --------------------------------------------------------------------------- flushes


@pytest.mark.django_db(transaction=True)
def test_streaming_flushes_by_time_not_by_token(auth_client, ollama, settings, monkeypatch):
    """500 tokens over ~0.5 s with a flush interval of 0.1 s: a handful of flushes, not 500."""
    settings.CHAT_FLUSH_INTERVAL = 0.1
    ollama.script(tokens=tokens(LONG), token_delay=0.001)
    with count_queries(monkeypatch) as counter:
        response = auth_client.post("/api/chat/", {"message": "Hi"}, format="json")
    assert response.status_code == 200, response.content
    assert counter.writes < LONG / 10, (counter.writes, counter.statements[-5:])


def test_counter_sees_queries_of_other_threads(db, monkeypatch):
    """The counter is honest: a query on a database thread counts."""
    from accounts.models import User
    from config import database

    with count_queries(monkeypatch) as counter:
        asyncio.run(database.run_detached(lambda: User.objects.count()))
    assert counter.count >= 1
