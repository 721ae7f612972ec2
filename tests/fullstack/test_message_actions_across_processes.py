"""Regenerate and continue from the other process: the frames reach a socket of the first
one (through Redis), the new version is saved beside the old one, and a continued reply goes
on in the same message with its offsets counting on.
"""

from __future__ import annotations

import asyncio

import pytest

from chat.models import Message
from tests.fullstack.clients import Chat, WsClient, of_type

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]


@pytest.mark.timeout(120)
def test_regenerate_and_continue_from_the_other_process(stack, double, user, headers):
    first, second = stack.daphnes

    async def scenario() -> tuple[int, int, int]:
        async with (
            WsClient(first.ws_url, headers(user), "A") as a,
            WsClient(second.ws_url, headers(user), "B") as b,
        ):
            double.script(tokens=["one ", "two"])
            opening = await Chat(a, "hello").send()
            done = await opening.terminal()
            reply, conversation = done["message"], done["conversation"]

            double.script(tokens=["uno ", "dos"])
            start = await b.send(type="chat.regenerate", message=reply)
            regenerated = await b.wait_for(of_type("chat.done"), "chat.done", start=start)
            # A follows the conversation: it sees the new version too.
            await a.wait_for(of_type("chat.done", message=regenerated["message"]), "A's chat.done")

            double.script(tokens=["one ", "two ", "three"], error_after=2)
            broken = await Chat(a, "count").send(conversation=conversation)
            failed = await broken.terminal()
            assert failed["code"] == "ollama_stream_error"

            double.script(tokens=["three"])
            start = await b.send(type="chat.continue", message=failed["message"])
            started = await b.wait_for(of_type("chat.started"), "chat.started", start=start)
            assert started["offset"] == len("one two ")
            await b.wait_for(of_type("chat.done", message=failed["message"]), "done", start=start)
            return reply, regenerated["message"], failed["message"]

    reply, regenerated, continued = asyncio.run(scenario())
    old, new = Message.objects.get(pk=reply), Message.objects.get(pk=regenerated)
    assert (old.content, new.content) == ("one two", "uno dos")
    assert old.parent_id == new.parent_id
    saved = Message.objects.get(pk=continued)
    assert (saved.status, saved.content) == ("complete", "one two three")
