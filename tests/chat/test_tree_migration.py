"""Migration 0007: existing conversations become one straight branch (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("chat", "0006_conversation_generation_claim")]
AFTER = [("chat", "0007_message_tree")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_messages_are_chained_and_the_last_is_the_leaf(user):
    apps = migrate(BEFORE)
    Conversation = apps.get_model("chat", "Conversation")
    Message = apps.get_model("chat", "Message")
    talk = Conversation.objects.create(owner_id=user.pk, title="talk")
    empty = Conversation.objects.create(owner_id=user.pk, title="empty")
    ids = [
        Message.objects.create(conversation=talk, role=role, content=f"m{i}").pk
        for i, role in enumerate(["user", "assistant", "user", "assistant"])
    ]
    try:
        apps = migrate(AFTER)
        Conversation = apps.get_model("chat", "Conversation")
        Message = apps.get_model("chat", "Message")
        parents = dict(Message.objects.filter(conversation_id=talk.pk).values_list("id", "parent"))
        assert parents == {ids[0]: None, ids[1]: ids[0], ids[2]: ids[1], ids[3]: ids[2]}
        assert Conversation.objects.get(pk=talk.pk).current_leaf_id == ids[3]
        assert Conversation.objects.get(pk=empty.pk).current_leaf_id is None
    finally:
        migrate(executor_leaf())


def executor_leaf():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
