"""Who is on the GPU now, and staff's cancel, across two Daphne processes sharing Redis.

The generations run on one process; staff look and stop them through the other: the view is
read from the shared gate, the stop travels through the channel layer to the process running
the generation, whatever its transport (WebSocket run, SSE stream, REST request), running or
queued. A WebSocket generation whose sockets all went gives its slot to a user waiting
(`CHAT_CANCEL_ABANDONED`), unless a socket on the other process still follows it.
"""

from __future__ import annotations

import asyncio
import pickle

import httpx
import pytest
import redis
from django.db import connections

from chat.models import Conversation, Message
from tests.fullstack.clients import Chat, SseClient, WsClient, of_type
from tests.fullstack.harness import WAIT, wait_until

pytestmark = [pytest.mark.fullstack, pytest.mark.integration, pytest.mark.redis]

ABANDONED_AFTER = 1  # seconds (CHAT_CANCEL_ABANDONED), on top of the lease's GONE_AFTER
STACK_ENV = {
    "OLLAMA_MAX_CONCURRENCY": "1",
    "CHAT_CANCEL_ABANDONED": str(ABANDONED_AFTER),
}
STAFF_EMAIL = "staff@example.com"
STOPPED = f"Stopped by staff ({STAFF_EMAIL})."
TOKENS = ["one ", "two ", "three ", "four"]


@pytest.fixture
def staff(make_user):
    return make_user(STAFF_EMAIL, is_staff=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice@example.com")


@pytest.fixture
def bob(make_user):
    return make_user("bob@example.com")


async def orm(fn, *args, **kwargs):
    """Run `fn` (ORM calls) on a thread, and close that thread's connection after it: a
    connection left open would keep the test database from being dropped."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def monitoring_url(daphne) -> str:
    return daphne.url.replace("http://", "ws://") + "/ws/monitoring/"


async def api(daphne, headers, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(base_url=daphne.url, timeout=WAIT) as client:
        return await client.request(method, path, headers=headers, **kwargs)


def final_reply(message_id: int) -> Message:
    return wait_until(
        lambda: (
            Message.objects.filter(pk=message_id).exclude(status=Message.Status.STREAMING).first()
        ),
        f"the final status of reply {message_id}",
    )


@pytest.mark.timeout(240)
def test_staff_see_and_stop_websocket_generations_of_the_other_process(
    stack, double, staff, alice, bob, headers
):
    held = double.script(tokens=TOKENS, hold_after=2)
    first, second = stack.daphnes

    async def scenario() -> tuple[dict, dict, dict, dict]:
        async with (
            WsClient(first.ws_url, headers(alice), "alice") as a,
            WsClient(first.ws_url, headers(bob), "bob") as b,
            WsClient(monitoring_url(second), headers(staff), "staff-monitor") as monitor,
        ):
            running = await Chat(a, "count").send()
            started = await running.started()
            await running.wait_for(lambda f: running.text()[0] == "one two ", "the first tokens")
            waiting = await Chat(b, "my turn").send()
            await waiting.wait_for(of_type("chat.queued"), "chat.queued")
            queued_conversation = waiting.frames[0]["conversation"]

            # The other process sees both, from the shared gate: over REST and live.
            view = (await api(second, headers(staff), "GET", "/api/monitoring/now/")).json()
            [host] = view["hosts"]
            assert [(r["user_email"], r["conversation"]) for r in host["running"]] == [
                (alice.email, started["conversation"])
            ]
            assert [(q["user_email"], q["position"]) for q in host["queue"]] == [(bob.email, 1)]
            mine = (await api(second, headers(bob), "GET", "/api/monitoring/now/")).json()
            assert (mine["hosts"][0]["others_running"], len(mine["hosts"][0]["queue"])) == (1, 1)
            start = await monitor.send(type="now.subscribe")
            pushed = await monitor.wait_for(
                lambda f: f.get("type") == "monitoring.now" and bool(f["now"]["hosts"][0]["queue"]),
                "a monitoring.now frame with the queue",
                start=start,
            )
            assert pushed["now"]["hosts"][0]["running"][0]["user_email"] == alice.email

            # Staff stop the queued one, then the running one, from the other process.
            for conversation in (queued_conversation, started["conversation"]):
                answer = await api(
                    second,
                    headers(staff),
                    "POST",
                    "/api/monitoring/now/cancel/",
                    json={"conversation": conversation},
                )
                assert answer.status_code == 202, answer.text
                assert answer.json()["here"] is False
            stopped_queued = await waiting.terminal()
            stopped_running = await running.terminal()
            gone = await monitor.wait_for(
                lambda f: (
                    f.get("type") == "monitoring.now"
                    and not f["now"]["hosts"][0]["running"]
                    and not f["now"]["hosts"][0]["queue"]
                ),
                "a monitoring.now frame without them",
                start=start,
            )
            return started, stopped_running, stopped_queued, gone

    started, stopped_running, stopped_queued, _ = asyncio.run(scenario())
    double.release(held)

    for end in (stopped_running, stopped_queued):
        assert (end["type"], end["code"], end["detail"]) == (
            "chat.cancelled",
            "stopped_by_staff",
            STOPPED,
        )
    assert stopped_running["message"] == started["message"]
    reply = final_reply(started["message"])
    assert (reply.status, reply.error_code, reply.content) == (
        "cancelled",
        "stopped_by_staff",
        "one two ",
    )
    assert (final_reply(stopped_queued["message"]).status, stopped_queued["length"]) == (
        "cancelled",
        0,
    )
    assert len(double.generations) == 1  # Bob's never reached Ollama
    assert double.wait_until(lambda: double.last_generation.finished, WAIT)
    assert double.last_generation.client_disconnected


@pytest.mark.timeout(240)
def test_staff_stop_sse_and_rest_generations_of_the_other_process(
    stack, double, staff, alice, bob, headers
):
    held = double.script(tokens=TOKENS, hold_after=2)
    first, second = stack.daphnes

    async def scenario() -> tuple[SseClient, httpx.Response, str]:
        stream = SseClient(first.url, headers(bob), "count", "bob-sse").start()
        await stream.wait_for(lambda e: stream.text()[0] == "one two ", "the first tokens")
        rest = asyncio.create_task(
            api(first, headers(alice), "POST", "/api/chat/", json={"message": "my turn"})
        )
        # Alice's request waits in the queue (its conversation is saved as it joins).
        conversation = await orm(
            wait_until,
            lambda: Conversation.objects.filter(owner=alice).first(),
            "Alice's conversation",
        )
        for target in (str(conversation.pk), stream.frames[0]["conversation"]):
            answer = await api(
                second,
                headers(staff),
                "POST",
                "/api/monitoring/now/cancel/",
                json={"conversation": target},
            )
            assert answer.status_code == 202, answer.text
        await stream.finished()
        return stream, await rest, str(conversation.pk)

    stream, rest, conversation = asyncio.run(scenario())
    double.release(held)

    assert rest.status_code == 409, rest.text
    body = rest.json()
    assert (body["code"], body["detail"], body["conversation"]) == (
        "stopped_by_staff",
        STOPPED,
        conversation,
    )
    assert final_reply(body["message"]).error_code == "stopped_by_staff"

    assert stream.done_marker, stream.describe()
    cancelled = stream.frames[-1]
    assert (cancelled["status"], cancelled["code"], cancelled["detail"]) == (
        "cancelled",
        "stopped_by_staff",
        STOPPED,
    )
    reply = final_reply(cancelled["message"])
    assert (reply.status, reply.content) == ("cancelled", "one two ")
    assert len(double.generations) == 1


def lease(stack, conversation: str) -> float | None:
    """The follow lease of a conversation, as the web processes keep it in the cache (Redis)."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        keys = client.keys(f"*chat.followed.{conversation}")
        raw = client.get(keys[0]) if keys else None
    finally:
        client.close()
    if not isinstance(raw, bytes):
        return None
    try:
        return float(raw)
    except ValueError:
        return float(pickle.loads(raw))  # noqa: S301 - our own cache's value


def renewed(stack, conversation: str, last: float | None):
    """A predicate: the lease's time, once it is not `last` any more."""

    def check() -> float | None:
        value = lease(stack, conversation)
        return value if value != last else None

    return check


@pytest.mark.timeout(240)
def test_an_abandoned_generation_gives_its_slot_up_unless_followed_elsewhere(
    stack, double, alice, bob, headers
):
    held = double.script(tokens=TOKENS, hold_after=2)
    first, second = stack.daphnes

    async def scenario() -> tuple[dict, dict, int]:
        async with WsClient(first.ws_url, headers(bob), "bob") as b:
            async with WsClient(first.ws_url, headers(alice), "alice") as a:
                chat = await Chat(a, "count").send()
                started = await chat.started()
                await chat.wait_for(lambda f: chat.text()[0] == "one two ", "the first tokens")
            conversation = started["conversation"]
            waiting = await Chat(b, "my turn").send()
            await waiting.wait_for(of_type("chat.queued"), "chat.queued")

            # Alice's tab closed, but her other tab (on the other process) follows the reply:
            # it renews the lease, and the generation keeps its slot while Bob waits.
            async with WsClient(second.ws_url, headers(alice), "alice-2") as follower:
                await follower.send(
                    type="chat.resume", conversation=conversation, message=started["message"]
                )
                await follower.wait_for(of_type("chat.started"), "the reply, still streaming")
                renewals, last = 0, lease(stack, conversation)
                while renewals < 4:  # well past GONE_AFTER + ABANDONED_AFTER
                    last = await asyncio.to_thread(
                        wait_until, renewed(stack, conversation, last), "a renewal of the lease"
                    )
                    renewals += 1
                reply = await orm(Message.objects.get, pk=started["message"])
                assert reply.status == "streaming"
            # Every socket has gone now: the slot goes to Bob.
            end = await waiting.wait_for(of_type("chat.started"), "Bob's turn", timeout=60)
            return started, end, renewals

    started, _, _ = asyncio.run(scenario())
    double.release(held)
    reply = final_reply(started["message"])
    assert (reply.status, reply.error_code, reply.content) == ("cancelled", "abandoned", "one two ")
