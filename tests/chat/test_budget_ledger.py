"""Deleting messages does not give their tokens back (chat.budgets.carry_deleted, UsageCarry).

Whatever deletes messages (the API's delete and clear, the admin's deletes) carries the tokens
of the day's replies it deletes into the day's ledger row, by the budget's own rule; the budget
check and GET /api/usage/ add that row. A day's clock is pinned, as in test_budgets.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test import Client
from django.urls import reverse

from chat import budgets, services
from chat.errors import ChatRequestError
from chat.models import Conversation, Message, UsageCarry
from tests.chat.test_budgets import BEFORE_MIDNIGHT, CHAT, MIDNIGHT, USAGE, clock, spend

__all__ = ["clock"]  # the pinned clock fixture, shared with test_budgets.py

TODAY = BEFORE_MIDNIGHT.date()


def detail(conversation: Conversation | Message) -> str:
    pk = conversation.conversation_id if isinstance(conversation, Message) else conversation.pk
    return f"/api/conversations/{pk}/"


def carried(user) -> dict:
    return dict(UsageCarry.objects.filter(user=user).values_list("day", "tokens"))


def usage_tokens(auth_client) -> int:
    response = auth_client.get(USAGE)
    assert response.status_code == 200, response.json()
    return response.json()["tokens"]


def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    return client


# --------------------------------------------------------------------------- the API


@pytest.mark.django_db
def test_deleting_the_conversations_keeps_the_budget_spent(
    auth_client, user, ollama, settings, clock
):
    settings.CHAT_DAILY_TOKEN_BUDGET = 100
    spend(user, 99, BEFORE_MIDNIGHT)
    chat = auth_client.post(CHAT, {"message": "one more"}, format="json")  # one token left
    assert chat.status_code == 200, chat.json()
    used = usage_tokens(auth_client)
    assert used == 99 + chat.json()["eval_count"] > 100
    assert auth_client.post(CHAT, {"message": "x"}, format="json").status_code == 429

    for conversation in Conversation.objects.filter(owner=user):
        assert auth_client.delete(detail(conversation)).status_code == 204
    assert not Message.objects.filter(conversation__owner=user).exists()

    refused = auth_client.post(CHAT, {"message": "x"}, format="json")
    assert refused.status_code == 429, refused.json()
    assert (refused.json()["code"], refused.json()["used"]) == ("budget_exhausted", used)
    assert usage_tokens(auth_client) == used
    assert carried(user) == {TODAY: used}
    assert len(ollama.requests_to("/api/chat")) == 1  # only the one allowed reached Ollama

    clock.now = MIDNIGHT  # the next day starts from nothing
    assert usage_tokens(auth_client) == 0
    assert auth_client.post(CHAT, {"message": "x"}, format="json").status_code == 200


@pytest.mark.django_db
def test_clearing_keeps_the_budget_spent(auth_client, user, ollama, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 100
    reply = spend(user, 100, BEFORE_MIDNIGHT)
    response = auth_client.post(f"{detail(reply)}clear/")
    assert response.json() == {"deleted": 2}
    assert usage_tokens(auth_client) == 100
    assert auth_client.post(CHAT, {"message": "x"}, format="json").json()["code"] == (
        "budget_exhausted"
    )
    # Clearing the now empty conversation, or deleting it, adds nothing.
    assert auth_client.post(f"{detail(reply)}clear/").json() == {"deleted": 0}
    assert auth_client.delete(detail(reply)).status_code == 204
    assert carried(user) == {TODAY: 100}


@pytest.mark.django_db
def test_a_reply_being_generated_refuses_the_delete(auth_client, user, clock):
    reply = spend(user, None, BEFORE_MIDNIGHT, status="streaming", content="so far")
    response = auth_client.delete(detail(reply))
    assert response.status_code == 409
    assert response.json()["code"] == "generation_running"
    assert Message.objects.filter(conversation__owner=user).count() == 2
    assert not carried(user)


@pytest.mark.django_db
@pytest.mark.parametrize("counts_prompt", [False, True])
def test_a_deletion_carries_what_the_budget_counted(user, settings, clock, counts_prompt):
    """One rule (budgets.counted) for both: every status, the stopped reply's characters / 4,
    the prompt's tokens with CHAT_BUDGET_COUNTS_PROMPT; questions count nothing."""
    settings.CHAT_BUDGET_COUNTS_PROMPT = counts_prompt
    day = budgets.day_bounds(BEFORE_MIDNIGHT)
    spend(user, 100, BEFORE_MIDNIGHT, prompt_eval_count=40)
    spend(user, 20, BEFORE_MIDNIGHT, status="cancelled", prompt_eval_count=7)
    spend(user, None, BEFORE_MIDNIGHT, status="cancelled", content="x" * 9)  # 3
    spend(user, 4, BEFORE_MIDNIGHT, status="failed", error_code="ollama_stream_error")
    Message.objects.filter(role="user").update(content="a long question " * 100)
    before = budgets.tokens_used(user.pk, *day)
    assert before == (100 + 20 + 3 + 4) + (47 if counts_prompt else 0)

    deleted = services.delete_conversations(Conversation.objects.filter(owner=user))

    assert deleted == 4
    assert budgets.tokens_used(user.pk, *day) == before
    assert carried(user) == {TODAY: before}


# --------------------------------------------------------------------------- days and users


@pytest.mark.django_db
def test_only_the_days_own_replies_are_carried(auth_client, user, settings, clock):
    yesterday = spend(user, 5000, BEFORE_MIDNIGHT - timedelta(days=1))
    spend(user, 10, BEFORE_MIDNIGHT)
    assert auth_client.delete(detail(yesterday)).status_code == 204
    assert usage_tokens(auth_client) == 10
    assert not carried(user)  # nothing of today was deleted: no row

    # A conversation begun yesterday and continued today: only today's reply is carried.
    started = spend(user, 700, BEFORE_MIDNIGHT - timedelta(days=1))
    today = Message.objects.create(
        conversation=started.conversation, parent=started, role="assistant", eval_count=30
    )
    Message.objects.filter(pk=today.pk).update(created_at=BEFORE_MIDNIGHT)
    assert auth_client.delete(detail(started)).status_code == 204
    assert usage_tokens(auth_client) == 40
    assert carried(user) == {TODAY: 30}


@pytest.mark.django_db
def test_a_deletion_before_midnight_counts_for_its_day_only(auth_client, user, clock):
    clock.now = BEFORE_MIDNIGHT + timedelta(seconds=59)
    reply = spend(user, 80, BEFORE_MIDNIGHT)
    assert auth_client.delete(detail(reply)).status_code == 204
    assert carried(user) == {TODAY: 80}
    assert usage_tokens(auth_client) == 80

    clock.now = MIDNIGHT
    assert usage_tokens(auth_client) == 0
    # The first deletion of the new day drops the rows of the days before: one row per user.
    reply = spend(user, 6, MIDNIGHT)
    assert auth_client.delete(detail(reply)).status_code == 204
    assert carried(user) == {MIDNIGHT.date(): 6}


@pytest.mark.django_db
def test_users_are_kept_apart(auth_client, api_client, user, make_user, settings, clock):
    settings.CHAT_DAILY_TOKEN_BUDGET = 100
    bob = make_user("bob@example.com")
    spend(user, 30, BEFORE_MIDNIGHT)
    bobs = spend(bob, 90, BEFORE_MIDNIGHT)
    api_client.force_authenticate(bob)
    assert auth_client.delete(detail(bobs)).status_code == 404  # not alice's to delete
    assert api_client.delete(detail(bobs)).status_code == 204

    assert usage_tokens(auth_client) == 30
    assert usage_tokens(api_client) == 90
    assert (carried(user), carried(bob)) == ({}, {TODAY: 90})


# --------------------------------------------------------------------------- the admin


@pytest.mark.django_db
def test_the_admins_deletes_keep_the_budget_spent(auth_client, user, make_user, clock):
    admin = admin_client(make_user)
    bob = make_user("bob@example.com")

    # One conversation, from its page.
    one = spend(user, 11, BEFORE_MIDNIGHT)
    url = reverse("admin:chat_conversation_delete", args=[one.conversation_id])
    assert admin.post(url, {"post": "yes"}).status_code == 302
    assert not Conversation.objects.filter(pk=one.conversation_id).exists()
    assert carried(user) == {TODAY: 11}

    # Several, of two users, with the list's action.
    picked = [spend(user, 22, BEFORE_MIDNIGHT), spend(bob, 33, BEFORE_MIDNIGHT)]
    response = admin.post(
        reverse("admin:chat_conversation_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(r.conversation_id) for r in picked],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk__in=[r.conversation_id for r in picked]).exists()
    assert (carried(user), carried(bob)) == ({TODAY: 33}, {TODAY: 33})

    # A message: the question goes with its replies (a regeneration too), which are carried.
    reply = spend(user, 40, BEFORE_MIDNIGHT)
    sibling = Message.objects.create(
        conversation=reply.conversation, parent=reply.parent, role="assistant", eval_count=2
    )
    Message.objects.filter(pk=sibling.pk).update(created_at=BEFORE_MIDNIGHT)
    url = reverse("admin:chat_message_delete", args=[reply.parent_id])
    assert admin.post(url, {"post": "yes"}).status_code == 302
    assert not Message.objects.filter(conversation=reply.conversation).exists()
    assert carried(user) == {TODAY: 75}

    # And a reply alone, with the list's action.
    kept = spend(user, 7, BEFORE_MIDNIGHT)
    response = admin.post(
        reverse("admin:chat_message_changelist"),
        {"action": "delete_selected", "_selected_action": [str(kept.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    assert Message.objects.filter(conversation=kept.conversation).count() == 1
    assert carried(user) == {TODAY: 82}
    assert usage_tokens(auth_client) == 82

    # The ledger is shown, read-only.
    page = admin.get(reverse("admin:chat_usagecarry_changelist"))
    assert page.status_code == 200 and b"alice@example.com" in page.content
    row = UsageCarry.objects.get(user=user)
    assert admin.get(reverse("admin:chat_usagecarry_add")).status_code == 403
    change = admin.post(reverse("admin:chat_usagecarry_change", args=[row.pk]), {"tokens": 0})
    assert change.status_code == 403
    assert UsageCarry.objects.get(pk=row.pk).tokens == 82


@pytest.mark.django_db
def test_the_ledger_never_goes_negative(user):
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageCarry.objects.create(user=user, day=TODAY, tokens=-1)


# --------------------------------------------------------------------------- concurrency
# Two transactions on PostgreSQL, the first held open until the second waits on its lock.


def _wait_for_a_blocked_backend() -> None:
    """Until another session of the test database waits on a lock (the second deletion)."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, "the second deletion never waited"
            threading.Event().wait(0.01)


def _in_thread(work: Callable[[], object], errors: list) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except Exception as error:  # handed to the test's thread
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgres  # concurrent writers: SQLite serialises them anyway
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["new row", "existing row", "same conversation"])
def test_concurrent_deletions_add_up(user, clock, case):
    first = spend(user, 100, BEFORE_MIDNIGHT).conversation
    second = first if case == "same conversation" else spend(user, 20, BEFORE_MIDNIGHT).conversation
    if case == "existing row":
        UsageCarry.objects.create(user=user, day=TODAY, tokens=5)
    deleted, release = threading.Event(), threading.Event()
    errors: list = []

    def hold_first() -> None:
        with transaction.atomic():
            services.delete_conversation(first)
            deleted.set()
            assert release.wait(30)

    one = _in_thread(hold_first, errors)
    assert deleted.wait(30)
    two = _in_thread(lambda: services.delete_conversation(second), errors)
    _wait_for_a_blocked_backend()  # on the ledger's row (or the conversation's lock)
    release.set()
    one.join(30)
    two.join(30)

    expected = {"new row": 120, "existing row": 125, "same conversation": 100}[case]
    assert carried(user) == {TODAY: expected}
    if case == "same conversation":  # the second found it gone: carried once
        assert [getattr(e, "code", e) for e in errors] == ["not_found"]
        assert isinstance(errors[0], ChatRequestError)
    else:
        assert errors == []
    assert not Conversation.objects.filter(owner=user).exists()
