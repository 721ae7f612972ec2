"""What the chat reads: a user's own conversations and messages, and saved replies to resume.

Someone else's conversation is indistinguishable from one that does not exist: every read
here is scoped to its owner.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, QuerySet

from chat.errors import ChatRequestError
from chat.models import Conversation, Message
from chat.tree import Tree
from config import database


def not_found() -> ChatRequestError:
    return ChatRequestError("not_found", "Conversation not found.", 404)


def conversations_of(
    user: Any, *, source: str | None = None, q: str | None = None, hide_loadtest: bool = False
) -> QuerySet[Conversation]:
    """The user's conversations, newest activity first, with their message counts.
    `hide_loadtest` (the list): the load test's only when asked for (`source="loadtest"`),
    since they would bury everything else."""
    queryset = Conversation.objects.filter(owner=user).annotate(message_count=Count("messages"))
    if source:
        queryset = queryset.filter(source=source)
    elif hide_loadtest:
        queryset = queryset.exclude(source=Conversation.Source.LOADTEST)
    if q:
        queryset = queryset.filter(title__icontains=q)
    return queryset.order_by("-updated_at")


def own_conversation(user_id: int | None, conversation_id: UUID | str) -> Conversation:
    conversation = Conversation.objects.filter(owner_id=user_id, pk=conversation_id).first()
    if conversation is None:
        raise not_found()
    return conversation


async def aown_conversation(user_id: int, conversation_id: UUID | str) -> Conversation:
    # config.database, not the async ORM: its threads hand the connection back after the
    # call, so sockets need not close stale connections before every frame (chat.consumers).
    return await database.run(own_conversation, user_id, conversation_id)


def messages_of(user: Any, conversation_id: UUID | str) -> QuerySet[Message]:
    return own_conversation(user.pk, conversation_id).messages.all()


async def reply_to_resume(conversation_id: str, message_id: int) -> Message:
    """An assistant reply of a conversation the caller already owns (see aown_conversation)."""
    reply = await database.run(
        Message.objects.filter(
            pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
        ).first
    )
    if reply is None:
        raise ChatRequestError("not_found", "Message not found.", 404)
    return reply


async def saved_text(message_id: int) -> str:
    """The text of a reply as last saved (flushed every CHAT_FLUSH_INTERVAL while streaming)."""
    return (
        await database.run(
            Message.objects.filter(pk=message_id).values_list("content", flat=True).first
        )
        or ""
    )


def tree_of(conversation_id: UUID | str) -> Tree:
    return Tree.of(
        Message.objects.filter(conversation_id=conversation_id).values_list("id", "parent_id")
    )


def branch_of(conversation: Conversation, leaf_id: int | None = None) -> list[Message]:
    """The messages from the first to `leaf_id` (default: the conversation's current leaf)."""
    leaf = leaf_id if leaf_id is not None else conversation.current_leaf_id
    path = tree_of(conversation.pk).path_to(leaf)
    return list(Message.objects.filter(pk__in=path).order_by("id"))
