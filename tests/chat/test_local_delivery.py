"""A run hands its frames to the sockets of its own process; the channel layer carries them only
to the group's other members (issue 16: no channel-layer hop for a socket beside its run)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from rest_framework_simplejwt.tokens import AccessToken

from chat import runs
from config.asgi import application
from tests.support.websocket import Communicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}
TOKENS = [f" t{i}" for i in range(40)]


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


async def connect(user) -> Communicator:
    headers = [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]
    communicator = Communicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    assert connected, code
    return communicator


async def frames_until_end(communicator: Communicator) -> list[dict]:
    frames: list[dict] = []
    while not frames or frames[-1]["type"] not in TERMINAL:
        frames.append(await communicator.receive_json_from(timeout=10))
    return frames


def text_of(frames: list[dict]) -> str:
    text = ""
    for frame in frames:
        if frame["type"] == "chat.token":
            assert frame["offset"] == len(text), "no character lost or doubled"
            text += frame["content"]
    return text


async def test_a_socket_beside_its_run_gets_every_frame_without_the_layer(
    alice, ollama, monkeypatch
):
    layer = get_channel_layer()
    sent_to_group: list[dict] = []
    real_group_send = layer.group_send

    async def watched_group_send(group, message):
        if group.startswith("chat.stream."):
            sent_to_group.append(message)
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", watched_group_send)
    ollama.script(tokens=TOKENS, token_delay=0.002)
    communicator = await connect(alice)
    try:
        await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
        frames = await frames_until_end(communicator)
    finally:
        await communicator.disconnect()

    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["chat.accepted", "chat.started"] and kinds[-1] == "chat.done"
    assert text_of(frames) == "".join(TOKENS)
    assert kinds.count("chat.accepted") == 1 and kinds.count("chat.started") == 1
    assert sent_to_group == []  # every frame was handed over in the process
    assert runs._followers == {}  # the socket left: nothing keeps it


async def test_another_member_of_the_group_still_gets_the_frames_through_the_layer(alice, ollama):
    """A socket beside the run and a listener on the layer (as a socket of another process
    would be): both get the rest of the reply, once each, exact."""
    held = ollama.script(tokens=TOKENS, hold_after=1)
    layer = get_channel_layer()
    listener = await layer.new_channel()
    communicator = await connect(alice)
    try:
        await communicator.send_json_to({"type": "chat.send", "message": "Hi"})
        frames = [await communicator.receive_json_from(timeout=10)]
        while frames[-1]["type"] != "chat.token":  # the first token; the double holds the rest
            frames.append(await communicator.receive_json_from(timeout=10))
        await layer.group_add(runs.stream_group(frames[0]["conversation"]), listener)
        ollama.release(held)
        frames += await frames_until_end(communicator)
        heard: list[dict] = []
        while not heard or heard[-1]["type"] not in TERMINAL:
            heard.append(await asyncio.wait_for(layer.receive(listener), 10))
    finally:
        await communicator.disconnect()

    text = "".join(TOKENS)
    assert text_of(frames) == text
    assert [f["type"] for f in frames].count("chat.done") == 1
    assert heard[-1]["type"] == "chat.done" and heard[-1]["length"] == len(text)
    tokens = [f for f in heard if f["type"] == "chat.token"]
    assert tokens, "the layer carried the tokens to the other member"
    # It joined after the first token: what it heard is the rest, in order and exact.
    assert tokens[0]["offset"] == len(TOKENS[0])
    assert text_of_from(tokens, len(TOKENS[0])) == text[len(TOKENS[0]) :]


def text_of_from(frames: list[dict], start: int) -> str:
    text = ""
    for frame in frames:
        assert frame["offset"] == start + len(text)
        text += frame["content"]
    return text
