"""Leaving the queue through each transport: `chat.stop` on the WebSocket and closing the SSE
stream free the place at once, and the request behind hears its new position."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async

from accounts.models import User
from chat.models import Message
from tests.chat.test_consumer import connect
from tests.support.live import bearer


async def frame_of(communicator, kind: str, **fields) -> dict:
    while True:
        frame = await communicator.receive_json_from(timeout=10)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame


@pytest.mark.django_db(transaction=True)
async def test_chat_stop_while_queued_lets_the_next_one_move_up(ollama, settings):
    settings.OLLAMA_MAX_CONCURRENCY = 1
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    create = sync_to_async(User.objects.create_user)
    alice, bob, carol = [await create(f"{n}@example.com", "pw-1234567890") for n in "abc"]

    holder = await connect(alice)
    await holder.send_json_to({"type": "chat.send", "message": "hold"})
    await frame_of(holder, "chat.token")
    leaving, staying = await connect(bob), await connect(carol)
    await leaving.send_json_to({"type": "chat.send", "message": "leave"})
    queued = await frame_of(leaving, "chat.queued", position=1)
    await staying.send_json_to({"type": "chat.send", "message": "stay"})
    await frame_of(staying, "chat.queued", position=2)

    await leaving.send_json_to({"type": "chat.stop", "conversation": queued["conversation"]})
    await frame_of(leaving, "chat.cancelled", conversation=queued["conversation"])
    await frame_of(staying, "chat.queued", position=1)
    ollama.release(held)
    await frame_of(staying, "chat.done")
    await frame_of(holder, "chat.done")
    for communicator in (holder, leaving, staying):
        await communicator.disconnect()
    stopped = await Message.objects.aget(conversation_id=queued["conversation"], role="assistant")
    assert stopped.status == "cancelled"


@pytest.mark.integration
def test_closing_the_sse_stream_while_queued_lets_the_next_one_move_up(
    daphne, make_user, ollama_double
):
    held = ollama_double.script(tokens=["first ", "reply"], hold_after=1)
    ollama_double.script(tokens=["ok"], times=None)
    alice, bob, carol = (make_user(f"{n}@example.com") for n in ("alice", "bob", "carol"))

    async def events(client, user, message):
        async with client.stream(
            "POST", "/api/chat/stream/", json={"message": message}, headers=bearer(user)
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    yield json.loads(line[6:])

    async def until(stream, predicate) -> dict:
        async for event in stream:
            if predicate(event):
                return event
        raise AssertionError("the stream ended first")

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=daphne.url, timeout=20) as client:
            holder = events(client, alice, "hold")
            await until(holder, lambda e: e["type"] == "content")
            leaving = events(client, bob, "leave")
            await until(leaving, lambda e: e["type"] == "queued" and e["position"] == 1)
            staying = events(client, carol, "stay")
            await until(staying, lambda e: e["type"] == "queued" and e["position"] == 2)
            await leaving.aclose()  # the client goes away while waiting
            await until(staying, lambda e: e["type"] == "queued" and e["position"] == 1)
            ollama_double.release(held)
            await until(staying, lambda e: e["type"] == "metrics")
            await until(holder, lambda e: e["type"] == "metrics")
            await staying.aclose()
            await holder.aclose()

    asyncio.run(scenario())
    assert Message.objects.filter(role="assistant", status="complete").count() == 2
