"""Read-only share links: a snapshot of a conversation's shown branch behind a secret token.

The token (`secrets.token_urlsafe(32)`, 256 bits) is in the link and nowhere else: the table
keeps its SHA-256, and a visit looks the hash up (an index lookup on a digest the visitor
cannot steer, so timing tells nothing of stored tokens). The snapshot is taken when the link
is made: role, content, model, time and attachment names of each message of the branch
shown, so that what is said afterwards stays private.

`SHARE_LINKS`: `off` (none made, none shown), `users` (the default: anyone logged in to this
server may open a link) or `public` (anyone with the link).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from chat.errors import ChatRequestError
from chat.exports import branch_messages
from chat.models import Conversation, Message, ShareLink

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sharing_off() -> ChatRequestError:
    return ChatRequestError(
        "sharing_disabled", "Share links are turned off on this server (SHARE_LINKS=off).", 403
    )


def snapshot_of(conversation: Conversation) -> list[dict[str, Any]]:
    """The branch shown, frozen: what the share page renders."""
    return [
        {
            "role": message.role,
            "content": message.content,
            "model": message.model if message.role == Message.Role.ASSISTANT else "",
            "created_at": message.created_at.isoformat(),
            "status": message.status,
            "attachments": [
                str(a.get("name") or "file")
                for a in message.attachments or []
                if isinstance(a, dict)
            ],
        }
        for message in branch_messages(conversation)
    ]


def create_link(conversation: Conversation) -> tuple[ShareLink, str]:
    """A new link to the conversation as it is now; returns it and its token (shown once)."""
    if settings.SHARE_LINKS == "off":
        raise sharing_off()
    snapshot = snapshot_of(conversation)
    if not snapshot:
        raise ChatRequestError("empty_conversation", "There is nothing to share yet.", 400)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = ShareLink.objects.create(
        conversation=conversation,
        token_hash=hash_token(token),
        token_prefix=token[:6],
        title=conversation.title,
        model=conversation.model,
        snapshot=snapshot,
    )
    return link, token


def links_of(user: Any, conversation_id: Any = None) -> QuerySet[ShareLink]:
    links = ShareLink.objects.filter(conversation__owner=user).select_related("conversation")
    if conversation_id is not None:
        links = links.filter(conversation_id=conversation_id)
    return links


def revoke(user: Any, conversation: Conversation, link_id: int | None = None) -> int:
    """Delete one link of the conversation (`link_id`), or all of them."""
    links = links_of(user, conversation.pk)
    if link_id is not None:
        links = links.filter(pk=link_id)
    deleted, _ = links.delete()
    return deleted


def visible_link(token: str, user: Any) -> ShareLink | None:
    """The link for `token` if this visitor may see it now; None answers 404 (unknown, revoked,
    sharing off, or `users` and not logged in: the login page is offered instead by the view)."""
    if settings.SHARE_LINKS == "off" or not token or len(token) > 200:
        return None
    # A deactivated account's links stop working with it.
    return ShareLink.objects.filter(
        token_hash=hash_token(token), conversation__owner__is_active=True
    ).first()
