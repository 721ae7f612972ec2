"""Conversations with branches, made directly in the database, for the export, import and
share tests."""

from __future__ import annotations

from chat.models import Conversation, Message


def branched_conversation(owner, title: str = "Trip to Lisbon") -> Conversation:
    """Q1 -> A1 (old) and A1' (regenerated, shown) -> Q2 -> A2; an attachment on Q1."""
    conversation = Conversation.objects.create(
        owner=owner,
        title=title,
        model="llama3.2:3b",
        system_prompt="Be brief.",
        options={"temperature": 0.5},
    )

    def add(parent, role, content, **fields) -> Message:
        return Message.objects.create(
            conversation=conversation, parent=parent, role=role, content=content, **fields
        )

    q1 = add(
        None,
        "user",
        "Where should I eat?",
        attachments=[
            {
                "id": "5f0c5b8e-4a4e-4a57-9e39-6d0f2b1a0c11",
                "name": "notes.txt",
                "content_type": "text/plain",
                "size": 12,
                "kind": "text",
            }
        ],
    )
    add(q1, "assistant", "Try *Time Out Market*.", model="llama3.2:3b", eval_count=7)
    a1b = add(
        q1,
        "assistant",
        "Go to **Alfama** for fado and food.",
        model="qwen2.5:0.5b",
        eval_count=9,
        eval_duration=1_000_000,
        tokens_per_second=12.5,
        done_reason="stop",
    )
    q2 = add(a1b, "user", "And dessert?")
    a2 = add(q2, "assistant", "Pastéis de nata, of course.", model="qwen2.5:0.5b")
    conversation.current_leaf = a2
    conversation.save()
    return conversation


def tree_shape(conversation: Conversation) -> tuple[list[tuple], tuple | None]:
    """The tree as (parent's path, role, content, model, status) per message, independent of
    ids, and the shown leaf's path: equal for a conversation and its re-import."""
    messages = {m.pk: m for m in conversation.messages.all()}

    def path(pk):
        out = []
        while pk is not None:
            m = messages[pk]
            out.append((m.role, m.content))
            pk = m.parent_id
        return tuple(reversed(out))

    rows = sorted(
        (path(m.parent_id), m.role, m.content, m.model, m.status) for m in messages.values()
    )
    conversation.refresh_from_db()
    leaf = path(conversation.current_leaf_id) if conversation.current_leaf_id else None
    return rows, leaf
