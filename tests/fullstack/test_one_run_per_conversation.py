"""One generation per conversation, across processes: a second `chat.send` to a conversation
whose reply is still being generated on the other Daphne is refused with `generation_running`
(WebSocket and REST alike), and the conversation takes messages again once the reply is saved.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.fullstack.clients import Chat, WsClient, of_type
from tests.fullstack.harness import WAIT

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]


@pytest.mark.timeout(120)
def test_a_busy_conversation_refuses_a_second_generation_from_the_other_process(
    stack, double, user, headers
):
    double.script(tokens=["first "], times=1)
    held = double.script(tokens=["one ", "two ", "three"], hold_after=1)
    first, second = stack.daphnes

    async def scenario() -> None:
        async with (
            WsClient(first.ws_url, headers(user), "A") as a,
            WsClient(second.ws_url, headers(user), "B") as b,
        ):
            opening = await Chat(a, "hello").send()
            conversation = (await opening.terminal())["conversation"]
            running = await Chat(a, "count").send(conversation=conversation)
            await running.first_token()

            refused = await Chat(b, "meanwhile").send(conversation=conversation)
            error = await refused.wait_for(of_type("chat.error"), "chat.error")
            assert (error["code"], error["conversation"]) == ("generation_running", conversation)
            async with httpx.AsyncClient(timeout=WAIT) as http:
                response = await http.post(
                    second.url + "/api/chat/",
                    json={"message": "meanwhile", "conversation": conversation},
                    headers=headers(user),
                )
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "generation_running"

            double.release(held)
            assert (await running.terminal())["type"] == "chat.done"
            after = await Chat(b, "after").send(conversation=conversation)
            assert (await after.terminal())["type"] == "chat.done"

    asyncio.run(scenario())
