"""A chat socket's database work goes through config.database, whose threads hand their
connection back after each call. So no frame pays Channels' close-stale-connections hop (under
Daphne that hop also closed the connection the next credential check then opened again: ~0.5
ms of CPU a message, issue 16), and no connection is opened on a thread that nothing would
close."""

from __future__ import annotations

import threading

import pytest
from channels import consumer as channels_consumer
from django.db.backends.signals import connection_created
from rest_framework_simplejwt.tokens import AccessToken

from config.asgi import application
from tests.support.websocket import Communicator

TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}


class Opened:
    """The threads that open a database connection while it listens."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, sender, connection, **kwargs) -> None:
        with self._lock:
            self.threads.append(threading.current_thread().name)


async def _until_end(communicator: Communicator) -> dict:
    while True:
        frame = await communicator.receive_json_from(timeout=10)
        if frame["type"] in TERMINAL:
            assert frame["type"] == "chat.done", frame
            return frame


async def _socket(user) -> Communicator:
    headers = [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_frames_make_no_stale_connection_hop_and_open_only_database_threads(
    user, ollama, monkeypatch
):
    hops = []
    original = channels_consumer.aclose_old_connections

    async def counted():
        hops.append(1)
        await original()

    monkeypatch.setattr(channels_consumer, "aclose_old_connections", counted)
    opened = Opened()
    connection_created.connect(opened)
    try:
        ollama.script(tokens=["Hello", " there"])
        communicator = await _socket(user)
        try:
            await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
            done = await _until_end(communicator)
            # A resume reads the conversation and the reply from the consumer itself.
            await communicator.send_json_to(
                {
                    "type": "chat.resume",
                    "conversation": done["conversation"],
                    "message": done["message"],
                }
            )
            resumed = await _until_end(communicator)
            assert resumed["message"] == done["message"]
        finally:
            await communicator.disconnect()
    finally:
        connection_created.disconnect(opened)
    assert hops == []
    # Only config.database's threads ("db_…") opened connections (if any: on SQLite they keep
    # theirs from earlier tests): they hand them back after every call. A query on asgiref's
    # thread would hold its connection with nothing to close it now that frames skip Channels'
    # hop.
    assert all(name.startswith("db") for name in opened.threads), opened.threads
