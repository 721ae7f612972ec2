"""Fair sharing through generate(): turns between users, priorities, queued requests counted
against the per-user limit, and the estimated wait. On the embedded defaults (the local gate)
and, in the suite's second run, on PostgreSQL; across two processes with Redis in
tests/fullstack/test_turns_across_processes.py."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from accounts.models import GroupPolicy, User
from accounts.selectors import queue_weight
from chat import estimates, hosts, lifecycle
from chat.errors import ChatRequestError
from chat.events import Done, Failed, Queued, Started
from chat.models import Conversation, Message
from tests.chat.test_generate import Iteration, plan_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def one_slot(settings, ollama, monkeypatch):
    monkeypatch.setattr(lifecycle, "_state", lifecycle._State())
    settings.OLLAMA_MAX_CONCURRENCY = 1
    settings.CHAT_MESSAGES_PER_MINUTE = 0
    estimates.forget()
    yield
    estimates.forget()


async def make(email: str, **fields) -> User:
    return await sync_to_async(User.objects.create_user)(email, "pw-1234567890", **fields)


async def queued_at(run: Iteration, position: int) -> None:
    await run.until(
        lambda events: any(isinstance(e, Queued) and e.position == position for e in events)
    )


async def test_a_user_with_one_request_goes_ahead_of_another_users_queue(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 0
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    alice, bob = await make("alice@example.com"), await make("bob@example.com")

    runs = {"a1": Iteration(await plan_for(alice, "a1"))}
    await runs["a1"].until(lambda events: any(isinstance(e, Started) for e in events))
    for index, name in enumerate(["a2", "a3", "a4"], start=1):
        runs[name] = Iteration(await plan_for(alice, name))
        await queued_at(runs[name], index)
    runs["b1"] = Iteration(await plan_for(bob, "b1"))
    await queued_at(runs["b1"], 1)
    # Each of alice's waiting requests hears it moved back one place.
    for index, name in enumerate(["a2", "a3", "a4"], start=2):
        await queued_at(runs[name], index)

    ollama.release(held)
    await asyncio.gather(*(run.task for run in runs.values()))
    replies = {name: run.of(Done)[0].message_id for name, run in runs.items()}
    assert sorted(replies, key=replies.__getitem__) == ["a1", "b1", "a2", "a3", "a4"]


async def test_queued_requests_count_against_the_per_user_limit(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 3
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    alice = await make("alice@example.com")

    first = Iteration(await plan_for(alice, "1"))
    await first.until(lambda events: any(isinstance(e, Started) for e in events))
    waiting = [Iteration(await plan_for(alice, str(n))) for n in (2, 3)]
    for position, run in enumerate(waiting, start=1):
        await queued_at(run, position)

    # The fourth is refused before anything is saved or queued (every transport checks first).
    with pytest.raises(ChatRequestError) as refused:
        await plan_for(alice, "4")
    assert (refused.value.code, refused.value.status) == ("too_many_generations", 429)
    assert "queued or being generated" in refused.value.detail

    ollama.release(held)
    await asyncio.gather(first.task, *(run.task for run in waiting))
    assert await Message.objects.filter(role="assistant", status="complete").acount() == 3


async def test_requests_planned_at_once_cannot_all_pass_the_limit(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 2
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    alice = await make("alice@example.com")
    # Four plans made while nothing is accepted yet: each passed the early check.
    plans = [await plan_for(alice, str(n)) for n in range(4)]
    runs = [Iteration(plans[0])]
    await runs[0].until(lambda events: any(isinstance(e, Started) for e in events))
    runs.append(Iteration(plans[1]))
    await queued_at(runs[1], 1)
    for plan in plans[2:]:
        run = Iteration(plan)
        await run.task  # refused where it claims its conversation: never queued
        [failed] = run.of(Failed)
        assert (failed.error.code, failed.error.status) == ("too_many_generations", 429)
        assert not run.of(Queued)
    stats = await hosts.get_gate().stats(ollama.url)
    assert (stats.in_flight, stats.queued) == (1, 1)
    ollama.release(held)
    await asyncio.gather(runs[0].task, runs[1].task)
    assert await Message.objects.filter(role="user").acount() == 2
    assert await Conversation.objects.acount() == 2  # the refused left nothing behind


async def test_exempt_users_may_queue_beyond_the_limit(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 1
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    root = await sync_to_async(User.objects.create_superuser)("root@example.com", "pw-1234567890")
    first = Iteration(await plan_for(root, "1"))
    await first.until(lambda events: any(isinstance(e, Started) for e in events))
    second = Iteration(await plan_for(root, "2"))
    await queued_at(second, 1)
    ollama.release(held)
    await asyncio.gather(first.task, second.task)
    assert second.of(Done)


async def test_priority_gives_more_turns(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 0
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    holder = await make("holder@example.com")
    vip = await make("vip@example.com", priority=2)
    plain = await make("plain@example.com")

    first = Iteration(await plan_for(holder, "x"))
    await first.until(lambda events: any(isinstance(e, Started) for e in events))
    runs = {}
    for name, who in [("v1", vip), ("v2", vip), ("v3", vip), ("p1", plain), ("p2", plain)]:
        runs[name] = Iteration(await plan_for(who, name))
        await runs[name].until(lambda events: any(isinstance(e, Queued) for e in events))
    ollama.release(held)
    await asyncio.gather(first.task, *(run.task for run in runs.values()))
    replies = {name: run.of(Done)[0].message_id for name, run in runs.items()}
    assert sorted(replies, key=replies.__getitem__) == ["v1", "p1", "v2", "v3", "p2"]


def test_queue_weight_prefers_the_users_own_priority_then_the_groups(db):
    user = User.objects.create_user("someone@example.com", "pw-1234567890")
    assert queue_weight(user.pk) == 1
    team, leads = Group.objects.create(name="team"), Group.objects.create(name="leads")
    GroupPolicy.objects.create(group=team, priority=2)
    GroupPolicy.objects.create(group=leads, priority=5)
    user.groups.add(team, leads)
    assert queue_weight(user.pk) == 5  # the highest of the groups'
    user.priority = 3
    user.save()
    assert queue_weight(user.pk) == 3  # the user's own wins
    assert queue_weight(10**9) == 1


def test_priorities_outside_one_to_ten_are_refused_by_the_database(db):
    from django.db import IntegrityError, transaction

    user = User.objects.create_user("someone@example.com", "pw-1234567890")
    for bad in (0, 11):
        with pytest.raises(IntegrityError), transaction.atomic():
            User.objects.filter(pk=user.pk).update(priority=bad)
    group = Group.objects.create(name="g")
    with pytest.raises(IntegrityError), transaction.atomic():
        GroupPolicy.objects.create(group=group, priority=0)


async def test_estimated_wait_from_the_models_recent_replies(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 0
    alice, bob = await make("alice@example.com"), await make("bob@example.com")

    # No history of this model on this host: no estimate.
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"])
    first = Iteration(await plan_for(alice, "1"))
    await first.until(lambda events: any(isinstance(e, Started) for e in events))
    second = Iteration(await plan_for(bob, "2"))
    await queued_at(second, 1)
    assert second.of(Queued)[0].estimated_wait is None
    ollama.release(held)
    await asyncio.gather(first.task, second.task)

    # With history: the position times the mean of total_duration, over the slots.
    await Message.objects.filter(role="assistant").aupdate(total_duration=4_000_000_000)
    estimates.forget()
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=2)
    third = Iteration(await plan_for(alice, "3"))
    await third.until(lambda events: any(isinstance(e, Started) for e in events))
    fourth = Iteration(await plan_for(bob, "4"))
    await queued_at(fourth, 1)
    fifth = Iteration(await plan_for(await make("carol@example.com"), "5"))
    await queued_at(fifth, 2)
    assert fourth.of(Queued)[0].estimated_wait == 4.0
    assert fifth.of(Queued)[-1].estimated_wait == 8.0
    ollama.release(held)
    await asyncio.gather(third.task, fourth.task, fifth.task)


def test_wait_for_rounds_up_to_a_tenth_and_divides_by_the_slots():
    assert estimates.wait_for(3, 1, None) is None
    assert estimates.wait_for(3, 2, 1.0) == 1.5
    assert estimates.wait_for(1, 3, 1.0) == 0.4


async def test_a_request_cancelled_while_queued_leaves_at_once(ollama, settings):
    settings.CHAT_MAX_GENERATIONS_PER_USER = 0
    held = ollama.script(tokens=["first ", "reply"], hold_after=1)
    ollama.script(tokens=["ok"], times=None)
    alice, bob, carol = [await make(f"{n}@example.com") for n in ("alice", "bob", "carol")]
    first = Iteration(await plan_for(alice, "a"))
    await first.until(lambda events: any(isinstance(e, Started) for e in events))
    leaving = Iteration(await plan_for(bob, "b"))
    await queued_at(leaving, 1)
    staying = Iteration(await plan_for(carol, "c"))
    await queued_at(staying, 2)

    leaving.task.cancel()
    await asyncio.gather(leaving.task, return_exceptions=True)
    await queued_at(staying, 1)  # moved up without waiting for a slot to free
    stats = await hosts.get_gate().stats(ollama.url)
    assert (stats.in_flight, stats.queued) == (1, 1)
    snapshot = await hosts.get_gate().snapshot(ollama.url)
    assert [e.user for e in snapshot.waiting] == [str(carol.pk)]
    ollama.release(held)
    await asyncio.gather(first.task, staying.task)
    assert staying.of(Done)
