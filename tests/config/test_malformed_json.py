"""JSON from strangers (core.safejson) on REST and the WebSocket: a document nested too deep
(Python's parser recurses: a RecursionError, a 500 or a 1011) or with a huge integer is a
400 `parse_error` on REST and a `chat.error` `invalid_frame` on the socket, which stays open.
The Ollama-compatible proxy's side is in tests/chat/test_ollama_proxy.py."""

from __future__ import annotations

import io

import pytest
from asgiref.sync import sync_to_async
from rest_framework.exceptions import ParseError
from rest_framework.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from config.asgi import application
from config.parsers import JSONParser
from tests.support.websocket import Communicator

DEEP = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"message": "x", "options": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
HUGE_INTEGER = '{"message": "x", "options": {"seed": ' + "9" * 100_000 + "}}"


def test_the_safe_parser_is_drfs_json_parser():
    assert api_settings.DEFAULT_PARSER_CLASSES[0] is JSONParser
    # the other parsers are DRF's defaults, as before
    from rest_framework.parsers import FormParser, MultiPartParser

    assert list(api_settings.DEFAULT_PARSER_CLASSES[1:]) == [FormParser, MultiPartParser]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (DEEP, "deeper than 64 levels"),
        (HUGE_INTEGER, "100000 digits"),
        ('{"a": NaN}', "not JSON compliant"),  # DRF's STRICT_JSON, kept
        ('{"a": [1, {"b": -Infinity}]}', "not JSON compliant"),
        ("{not json", "Expecting property name"),
    ],
)
def test_the_parser_refuses_with_drfs_parse_error(text, fragment):
    with pytest.raises(ParseError) as caught:
        JSONParser().parse(io.BytesIO(text.encode()))
    assert fragment in str(caught.value.detail)


def test_the_parser_reads_ordinary_json():
    text = '{"message": "h\\u00e9", "options": {"seed": -42, "stop": ["]", "{"]}, "x": 1.5}'
    assert JSONParser().parse(io.BytesIO(text.encode())) == {
        "message": "hé",
        "options": {"seed": -42, "stop": ["]", "{"]},
        "x": 1.5,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (DEEP, "deeper than 64"),
        (DEEP_OBJECT, "deeper than 64"),
        (HUGE_INTEGER, "100000 digits"),
    ],
)
@pytest.mark.parametrize("path", ["/api/chat/", "/api/conversations/", "/api/models/load/"])
def test_rest_answers_400_parse_error(auth_client, path, body, fragment):
    response = auth_client.post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "parse_error"
    assert fragment in response.json()["detail"]


@pytest.mark.django_db
def test_rest_answers_400_parse_error_before_logging_in(api_client):
    response = api_client.post("/api/auth/token/", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


# --------------------------------------------------------------------------- the WebSocket


@pytest.fixture
async def socket(ollama, transactional_db):
    from accounts.models import User

    user = await sync_to_async(User.objects.create_user)("ws@example.com", "pw-1234567890")
    token = str(AccessToken.for_user(user))
    communicator = Communicator(
        application, "/ws/chat/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, code = await communicator.connect()
    assert connected, code
    yield communicator
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "frame",
    [
        "[" * 30_000 + "]" * 30_000,  # under the frame size limit, far over Python's recursion
        '{"type": "chat.send", "message": "x", "options": ' + "[" * 5_000 + "]" * 5_000 + "}",
        # 5,000 digits: over Python's int conversion limit (a ValueError json did not wrap)
        '{"type": "chat.send", "message": "x", "options": {"seed": ' + "9" * 5_000 + "}}",
    ],
)
async def test_the_socket_answers_invalid_frame_and_stays_open(socket, frame):
    await socket.send_to(text_data=frame)
    error = await socket.receive_json_from()
    assert error["type"] == "chat.error"
    assert error["code"] == "invalid_frame"
    await socket.send_json_to({"type": "ping"})
    assert (await socket.receive_json_from())["type"] == "pong"
