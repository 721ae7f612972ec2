"""generate(), the one generation service, driven directly against the Ollama test double.

Each transport's tests go through it too; these pin what every transport relies on: the order
of the events, the rows saved, cancellation reported as a `Cancelled` event, and one generation
per conversation. Runs on the embedded defaults and, in the suite's second run, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat import lifecycle, services
from chat.errors import ChatRequestError
from chat.events import Accepted, Cancelled, Done, Failed, Queued, Started, Token
from chat.models import Conversation, Message
from core.ollama import ModelNotFound

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
async def alice(ollama):
    from accounts.models import User

    return await sync_to_async(User.objects.create_user)("alice@example.com", "pw-1234567890")


@pytest.fixture(autouse=True)
def fresh_lifecycle(monkeypatch):
    monkeypatch.setattr(lifecycle, "_state", lifecycle._State())


async def plan_for(user, message="hi", conversation=None):
    return await services.prepare_chat(
        user.pk, services.ChatInput(message=message, conversation_id=conversation)
    )


class Iteration:
    """generate() iterated in a task of its own, as a run or a transport does."""

    def __init__(self, plan: services.GenerationPlan) -> None:
        self.events: list[Any] = []
        self.seen = asyncio.Condition()
        self.task = asyncio.create_task(self._iterate(services.generate(plan)))

    async def _iterate(self, events) -> None:
        async for event in events:
            async with self.seen:
                self.events.append(event)
                self.seen.notify_all()

    async def until(self, predicate) -> None:
        async with self.seen:
            await asyncio.wait_for(self.seen.wait_for(lambda: predicate(self.events)), 10)

    def of(self, kind) -> list:
        return [event for event in self.events if isinstance(event, kind)]


async def run_all(plan: services.GenerationPlan) -> list[Any]:
    return [event async for event in services.generate(plan)]


def tokens(count: int):
    return lambda events: sum(isinstance(e, Token) for e in events) >= count


async def test_events_in_order_and_the_reply_saved(alice, ollama):
    ollama.script(tokens=["Hello", " there"])
    plan = await plan_for(alice)
    events = await run_all(plan)

    assert [type(e) for e in events] == [Accepted, Started, Token, Token, Done]
    accepted, started, *_, done = events
    assert accepted.conversation_id == started.conversation_id == str(plan.conversation_pk)
    assert [(t.text, t.offset) for t in events if isinstance(t, Token)] == [
        ("Hello", 0),
        (" there", 5),
    ]
    assert done.content == "Hello there" and done.metrics["eval_count"] == 2
    reply = await Message.objects.aget(pk=done.message_id)
    assert (reply.status, reply.content, reply.done_reason) == ("complete", "Hello there", "stop")
    conversation = await Conversation.objects.aget(pk=plan.conversation_pk)
    assert conversation.generating_since is None  # the conversation is free again


async def test_cancelling_the_task_yields_cancelled_then_honours_it(alice, ollama):
    held = ollama.script(tokens=["one ", "two ", "three"], hold_after=2)
    run = Iteration(await plan_for(alice))
    await run.until(tokens(2))

    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    ollama.release(held)

    cancelled = run.events[-1]
    assert cancelled == Cancelled(run.of(Started)[0].message_id, "one two ", interrupted=False)
    reply = await Message.objects.aget(pk=cancelled.message_id)
    assert (reply.status, reply.content) == ("cancelled", "one two ")
    await ollama.await_until(lambda: ollama.last_generation.finished, timeout=5)
    assert ollama.last_generation.client_disconnected  # Ollama was told to stop
    conversation = await Conversation.objects.aget(messages=reply)
    assert conversation.generating_since is None


async def test_cancelled_while_queued_gets_an_answer_row(alice, ollama, settings):
    settings.OLLAMA_MAX_CONCURRENCY = 1
    held = ollama.script(tokens=["a", "b"], hold_after=1)
    first = Iteration(await plan_for(alice, "first"))
    await first.until(tokens(1))
    second = Iteration(await plan_for(alice, "second"))
    await second.until(lambda events: any(isinstance(e, Queued) for e in events))

    second.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second.task
    ollama.release(held)
    await first.task

    cancelled = second.events[-1]
    assert isinstance(cancelled, Cancelled) and cancelled.content == ""
    assert cancelled.message_id is not None
    reply = await Message.objects.aget(pk=cancelled.message_id)
    assert (reply.role, reply.status) == ("assistant", "cancelled")
    assert isinstance(first.events[-1], Done)  # the one queued behind it is unaffected


async def test_a_shutdown_cancel_is_interrupted(alice, ollama, monkeypatch):
    held = ollama.script(tokens=["a", "b"], hold_after=1)
    run = Iteration(await plan_for(alice))
    await run.until(tokens(1))
    monkeypatch.setattr(lifecycle, "interrupting", lambda: True)
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    ollama.release(held)

    assert run.events[-1].interrupted
    reply = await Message.objects.aget(pk=run.events[-1].message_id)
    assert (reply.status, reply.error_code) == ("interrupted", "interrupted")


async def test_closing_the_iterator_saves_without_an_event(alice, ollama):
    held = ollama.script(tokens=["a", "b"], hold_after=1)
    events = services.generate(await plan_for(alice))
    seen = []
    async for event in events:
        seen.append(event)
        if isinstance(event, Token):
            break
    await events.aclose()
    ollama.release(held)

    assert not any(isinstance(e, Cancelled) for e in seen)
    started = next(e for e in seen if isinstance(e, Started))
    reply = await Message.objects.aget(pk=started.message_id)
    assert (reply.status, reply.content) == ("cancelled", "a")


async def test_an_error_mid_stream_is_failed_with_the_partial_reply_kept(alice, ollama):
    ollama.script(tokens=["a", "b", "c"], error_after=2)
    events = await run_all(await plan_for(alice))

    failed = events[-1]
    assert isinstance(failed, Failed)
    assert (failed.code, failed.status, failed.content) == ("ollama_stream_error", 502, "ab")
    assert failed.error.as_body()["host"] == ollama.url
    assert failed.message_id is not None
    reply = await Message.objects.aget(pk=failed.message_id)
    assert (reply.status, reply.content, reply.error_code) == ("failed", "ab", failed.code)


async def test_a_missing_model_is_refused_before_anything_is_saved(alice, ollama):
    with pytest.raises(ModelNotFound) as refused:
        await services.prepare_chat(
            alice.pk, services.ChatInput(message="hi", model="no-such-model")
        )
    assert (refused.value.code, refused.value.status) == ("model_not_found", 404)
    assert not await Conversation.objects.aexists()


# --------------------------------------------------------------- one generation per conversation


async def test_a_second_generation_in_a_busy_conversation_is_refused(alice, ollama):
    ollama.script(tokens=["x"])
    first_plan = await plan_for(alice)
    await run_all(first_plan)
    conversation = first_plan.conversation_pk

    held = ollama.script(tokens=["a", "b"], hold_after=1)
    running = Iteration(await plan_for(alice, "again", conversation))
    await running.until(tokens(1))

    with pytest.raises(ChatRequestError) as refused:
        await plan_for(alice, "meanwhile", conversation)
    assert (refused.value.code, refused.value.status) == ("generation_running", 409)

    ollama.release(held)
    await running.task
    assert isinstance(running.events[-1], Done)
    later = [
        event async for event in services.generate(await plan_for(alice, "after", conversation))
    ]
    assert isinstance(later[-1], Done)  # free once the reply is saved


async def test_a_race_past_the_check_is_refused_by_the_claim(alice, ollama):
    ollama.script(tokens=["x"])
    first_plan = await plan_for(alice)
    await run_all(first_plan)
    conversation = first_plan.conversation_pk
    # Both pass prepare_chat's check before either saves: the claim decides.
    one, two = (
        await plan_for(alice, "one", conversation),
        await plan_for(alice, "two", conversation),
    )

    held = ollama.script(tokens=["a", "b"], hold_after=1)
    running = Iteration(one)
    await running.until(tokens(1))
    refused = await run_all(two)
    ollama.release(held)
    await running.task

    assert [type(e) for e in refused] == [Failed]
    assert (refused[0].code, refused[0].status, refused[0].message_id) == (
        "generation_running",
        409,
        None,
    )
    texts = [
        text
        async for text in Message.objects.filter(
            conversation_id=conversation, role="user"
        ).values_list("content", flat=True)
    ]
    assert texts == ["hi", "one"]  # the refused message was not saved


async def test_the_claim_of_a_dead_process_is_let_go(alice, ollama):
    ollama.script(tokens=["x"], times=2)
    first_plan = await plan_for(alice)
    await run_all(first_plan)
    # A process that died mid-generation (no WebProcess row beats for it) left its claim.
    await Conversation.objects.filter(pk=first_plan.conversation_pk).aupdate(
        generating_since=timezone.now(), generating_process=uuid.uuid4()
    )
    events = await run_all(await plan_for(alice, "again", first_plan.conversation_pk))
    assert isinstance(events[-1], Done)
