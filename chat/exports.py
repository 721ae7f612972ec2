"""A conversation as a file: our JSON (every branch) and Markdown (the branch shown).

The JSON is what `chat.imports` reads back: `{"format": FORMAT_ONE, "version": 1,
"conversation": {...}}` for one conversation, `{"format": FORMAT_ALL, "version": 1,
"conversations": [...]}` for all of a user's. Each conversation carries its whole tree
(`messages`, parents before children, with `parent` ids), `current_leaf` (the branch shown),
its model, options and system prompt; each message its status, model, options, the figures
Ollama reported and the records of its attachments (name, size, type, upload id: never the
bytes, which stay behind the download view and its owner check).

The all-conversations file is written as it is read: conversations in chunks of
`CHUNK` (with their messages), so that memory stays bounded whatever the user has.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Prefetch
from django.utils import timezone

from chat.models import Conversation, Message
from chat.tree import Tree
from config import database
from core.ollama.types import TIMING_FIELDS

FORMAT_ONE = "ollama-gateway/conversation"
FORMAT_ALL = "ollama-gateway/conversations"
VERSION = 1
CHUNK = 50  # conversations per query of the streamed export

# The figures of a reply as Ollama reported them and as the gateway measured them.
METRIC_FIELDS = (
    "done_reason",
    *TIMING_FIELDS,
    "tokens_per_second",
    "prompt_tokens_per_second",
    "time_to_first_token",
    "queue_wait",
    "in_flight_at_start",
)
ATTACHMENT_FIELDS = ("name", "size", "content_type", "kind")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def attachment_record(record: Any) -> dict[str, Any] | None:
    """What a file says of an attachment: its description and the upload it was, no bytes."""
    if not isinstance(record, dict):
        return None
    out = {name: record.get(name) for name in ATTACHMENT_FIELDS if name in record}
    if record.get("id"):
        out["upload"] = str(record["id"])
    return out


def message_dict(message: Message) -> dict[str, Any]:
    metrics = {name: getattr(message, name) for name in METRIC_FIELDS}
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "options": message.options or {},
        "created_at": _iso(message.created_at),
        "completed_at": _iso(message.completed_at),
        "error_code": message.error_code,
        "error": message.error,
        "attachments": [
            a for a in map(attachment_record, message.attachments or []) if a is not None
        ],
        "metrics": metrics if message.role == Message.Role.ASSISTANT else None,
        "context": message.context,
    }


def conversation_dict(conversation: Conversation, messages: Iterable[Message]) -> dict[str, Any]:
    """The conversation with `messages` (all of its own), parents first (ids grow with time)."""
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "options": conversation.options or {},
        "context_exchanges": conversation.context_exchanges,
        "source": conversation.source,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "current_leaf": conversation.current_leaf_id,
        "messages": [message_dict(m) for m in sorted(messages, key=lambda m: m.pk)],
    }


def export_one(conversation: Conversation) -> dict[str, Any]:
    return {
        "format": FORMAT_ONE,
        "version": VERSION,
        "exported_at": _iso(timezone.now()),
        "conversation": conversation_dict(conversation, conversation.messages.all()),
    }


def _chunk_after(owner_id: int, after: UUID | None) -> tuple[list[str], UUID | None]:
    """The next `CHUNK` conversations of the owner (by id, after `after`), as JSON texts."""
    queryset = Conversation.objects.filter(owner_id=owner_id).order_by("pk")
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    conversations = list(
        queryset.prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("id")))[
            :CHUNK
        ]
    )
    texts = [json.dumps(conversation_dict(c, c.messages.all())) for c in conversations]
    return texts, (conversations[-1].pk if len(conversations) == CHUNK else None)


async def export_all_chunks(owner_id: int) -> AsyncIterator[str]:
    """The all-conversations JSON in pieces, read a chunk of conversations at a time (each
    with its messages) on a database thread: memory holds one chunk, whatever the user has.

    Asynchronous on purpose: under ASGI Django reads a synchronous iterator whole into memory
    before sending any of it."""
    header = {"format": FORMAT_ALL, "version": VERSION, "exported_at": _iso(timezone.now())}
    yield json.dumps(header)[:-1] + ', "conversations": ['
    after: UUID | None = None
    first = True
    while True:
        texts, after = await database.run(_chunk_after, owner_id, after)
        for text in texts:
            yield text if first else ", " + text
            first = False
        if after is None:
            break
    yield "]}\n"


# --------------------------------------------------------------------------- Markdown


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def branch_messages(conversation: Conversation) -> list[Message]:
    """The branch shown: from the first message to the current leaf (chat.selectors)."""
    messages = {m.pk: m for m in conversation.messages.all()}
    tree = Tree({pk: m.parent_id for pk, m in messages.items()})
    leaf = conversation.current_leaf_id
    if leaf not in tree:
        # No leaf recorded (an old or emptied conversation): the newest branch.
        roots = tree.children.get(None, [])
        leaf = tree.newest_leaf(roots[-1]) if roots else None
    return [messages[pk] for pk in tree.path_to(leaf)]


def export_markdown(conversation: Conversation) -> str:
    """The branch shown, as Markdown: the title, the model, then each message under a heading
    (the text as written, which is Markdown already)."""
    title = " ".join((conversation.title or "Untitled conversation").split())
    lines = [f"# {title}", ""]
    if conversation.model:
        lines.append(f"- Model: {conversation.model}")
    lines.append(f"- Created: {_iso(conversation.created_at)}")
    lines.append(f"- Exported: {_iso(timezone.now())}")
    lines.append("")
    if conversation.system_prompt:
        fence = _fence(conversation.system_prompt)
        lines += ["## System prompt", "", fence, conversation.system_prompt, fence, ""]
    for message in branch_messages(conversation):
        who = "You" if message.role == Message.Role.USER else "Assistant"
        details = (
            [message.model] if message.role == Message.Role.ASSISTANT and message.model else []
        )
        details.append(_iso(message.created_at) or "")
        lines.append(f"## {who} ({', '.join(details)})")
        lines.append("")
        names = [
            str(a.get("name") or "file") for a in message.attachments or [] if isinstance(a, dict)
        ]
        if names:
            lines.append("Attached: " + ", ".join(names))
            lines.append("")
        lines.append(message.content)
        if message.status not in (Message.Status.COMPLETE, Message.Status.STREAMING):
            lines += ["", f"*({message.status})*"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def safe_filename(title: str, extension: str) -> str:
    """An ASCII file name from a title: letters, digits, dashes; never empty, never a path."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:60] or "conversation"
    return f"{stem}.{extension}"
