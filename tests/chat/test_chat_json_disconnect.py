"""A client that hangs up on `POST /api/chat/` before its answer cancels the generation, as
on SSE and /ollama/ (the view is a coroutine, config/async_api_view.py): Ollama is hung up on
and the reply is saved `cancelled` with what it had."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from rest_framework_simplejwt.tokens import AccessToken

from tests.support.waiting import hung_up_reply


def test_a_json_chat_client_that_hangs_up_cancels_and_keeps_the_partial_reply(
    daphne, user, ollama_double
):
    held = ollama_double.script(tokens=["first ", "second ", "third"], hold_after=2)
    where = urlsplit(daphne.url)
    body = json.dumps({"message": "Hi"}).encode()
    request = (
        f"POST /api/chat/ HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Authorization: Bearer {AccessToken.for_user(user)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((where.hostname, where.port), timeout=30) as client:
        client.sendall(request)
        # Two tokens are out and Ollama holds the rest: the answer cannot have come yet.
        assert ollama_double.wait_until(
            lambda: bool(ollama_double.last_generation and ollama_double.last_generation.held),
            timeout=20,
        )
    reply = hung_up_reply(ollama_double, held, user)
    # What the gateway had read of the two tokens when it was cancelled: the client cannot
    # see how far that was (no byte is answered before the end).
    assert "first second ".startswith(reply.content)
