"""The detached runs (chat.runs) driven directly: what they publish to a conversation's group.

A test channel joins the stream group like a socket does and reads the frames the run
publishes through the channel layer (in-memory here; Redis in the full-stack suite).
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat import lifecycle, runs, services
from chat.errors import ChatRequestError
from chat.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


@pytest.fixture(autouse=True)
def fresh_lifecycle(monkeypatch):
    monkeypatch.setattr(lifecycle, "_state", lifecycle._State())


class Listener:
    """A channel in the conversation's stream group, as a socket's."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = ""

    async def join(self, conversation_id: str) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(runs.stream_group(conversation_id), self.channel)

    async def until(self, kind: str) -> list[dict]:
        frames: list[dict] = []
        while not frames or frames[-1]["type"] != kind:
            frames.append(await asyncio.wait_for(self.layer.receive(self.channel), 10))
        return frames


async def start(user, listener: Listener, message="hi", conversation=None) -> str:
    chat_input = services.ChatInput(message=message, conversation_id=conversation)
    return await runs.start_chat(user.pk, chat_input, listener.join)


async def test_a_run_publishes_every_frame_of_the_reply(alice, ollama):
    ollama.script(tokens=["Hel", "lo"])
    listener = Listener()
    conversation = await start(alice, listener)
    frames = await listener.until("chat.done")

    assert [f["type"] for f in frames][:2] == ["chat.accepted", "chat.started"]
    assert all(f["conversation"] == conversation for f in frames)
    text = "".join(f["content"] for f in frames if f["type"] == "chat.token")
    assert text == "Hello" and frames[-1]["length"] == 5


async def test_a_stopped_run_ends_with_cancelled_and_its_length(alice, ollama):
    held = ollama.script(tokens=["one ", "two ", "three"], hold_after=2)
    listener = Listener()
    conversation = await start(alice, listener)
    frames = await listener.until("chat.started")
    reply_id = frames[-1]["message"]
    await ollama.await_until(
        lambda: ollama.last_generation is not None and ollama.last_generation.tokens_sent == 2,
        timeout=5,
    )

    await runs.cancel(conversation)
    frames = await listener.until("chat.cancelled")
    ollama.release(held)

    assert frames[-1] == {
        "type": "chat.cancelled",
        "conversation": conversation,
        "message": reply_id,
        "length": len((await Message.objects.aget(pk=reply_id)).content),
    }
    assert (await Message.objects.aget(pk=reply_id)).status == "cancelled"


async def test_a_run_cancelled_while_it_publishes_still_reports_the_cancel(
    alice, ollama, monkeypatch
):
    # The cancel lands in the run's own await (publishing a frame), not inside generate():
    # the run hands it to generate(), which saves the reply and reports it.
    held = ollama.script(tokens=["a", "b"], hold_after=1)
    publishing = asyncio.Event()
    stuck = asyncio.Event()
    real = runs.Run._publish

    async def publish(self, frame):
        if frame["type"] == "chat.token" and not publishing.is_set():
            publishing.set()
            await stuck.wait()  # cancelled here
        await real(self, frame)

    monkeypatch.setattr(runs.Run, "_publish", publish)
    listener = Listener()
    conversation = await start(alice, listener)
    await asyncio.wait_for(publishing.wait(), 10)

    await runs.cancel(conversation)
    frames = await listener.until("chat.cancelled")
    ollama.release(held)

    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert reply.status == "cancelled"
    assert runs.local_run(conversation) is None


async def test_one_run_per_conversation(alice, ollama):
    ollama.script(tokens=["x"])
    listener = Listener()
    conversation = await start(alice, listener)
    await listener.until("chat.done")

    held = ollama.script(tokens=["a", "b"], hold_after=1)
    await start(alice, listener, "again", conversation)
    await listener.until("chat.started")
    with pytest.raises(ChatRequestError) as refused:
        await start(alice, listener, "meanwhile", conversation)
    assert (refused.value.code, refused.value.status) == ("generation_running", 409)
    ollama.release(held)
    await listener.until("chat.done")
