"""Turns between users, over two Daphne processes sharing the Redis gate (one slot).

User A fills the slot and queues two more requests, one through each process; A's fourth is
refused with `too_many_generations` (queued requests count); user B, a moment later on the
other process, goes ahead of A's queued requests, and A's first waiter hears its new place.
The order of service is read from the replies' ids (a reply row is made when its request gets
the slot): no clock is read.
"""

from __future__ import annotations

import asyncio

import pytest

from chat.models import Message
from tests.fullstack.clients import Chat, WsClient, of_type

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

STACK_ENV = {"OLLAMA_MAX_CONCURRENCY": "1", "CHAT_MAX_GENERATIONS_PER_USER": "3"}


@pytest.mark.timeout(180)
def test_users_take_turns_across_processes(stack, double, make_user, headers):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    held = double.script(tokens=["first ", "reply"], hold_after=1)
    double.script(tokens=["ok"], times=None)
    one, two = stack.daphnes

    async def queued(chat: Chat, position: int) -> dict:
        return await chat.wait_for(
            of_type("chat.queued", position=position), f"chat.queued at {position}"
        )

    async def scenario() -> dict[str, int]:
        async with (
            WsClient(one.ws_url, headers(alice), "A1") as a1,
            WsClient(one.ws_url, headers(alice), "A2") as a2,
            WsClient(two.ws_url, headers(alice), "A3") as a3,
            WsClient(two.ws_url, headers(alice), "A4") as a4,
            WsClient(two.ws_url, headers(bob), "B1") as b1,
        ):
            first = await Chat(a1, "a1").send()
            await first.first_token()  # A holds the slot, paused mid-reply
            second = await Chat(a2, "a2").send()
            await queued(second, 1)
            third = await Chat(a3, "a3").send()
            await queued(third, 2)

            fourth = await Chat(a4, "a4").send()
            refused = await fourth.terminal()
            assert (refused["type"], refused["code"]) == ("chat.error", "too_many_generations")
            assert not [f for f in fourth.frames if f["type"] in {"chat.accepted", "chat.queued"}]

            bobs = await Chat(b1, "b1").send()
            frame = await queued(bobs, 1)  # ahead of both of A's waiting requests
            assert "estimated_wait" in frame
            await queued(second, 2)  # A's first waiter hears that it moved back
            await queued(third, 3)

            double.release(held)
            chats = {"a1": first, "a2": second, "a3": third, "b1": bobs}
            ends = {name: await chat.terminal() for name, chat in chats.items()}
            assert {end["type"] for end in ends.values()} == {"chat.done"}, ends
            return {name: end["message"] for name, end in ends.items()}

    replies = asyncio.run(scenario())
    order = sorted(replies, key=replies.__getitem__)
    assert order == ["a1", "b1", "a2", "a3"]
    # Refused before anything was saved: four questions, four replies.
    assert Message.objects.filter(role="user").count() == 4
    assert Message.objects.filter(role="assistant", status="complete").count() == 4
