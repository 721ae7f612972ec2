"""The context window sent to Ollama: system prompt, the last N exchanges, the new message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Replies that carry text the user saw; a failed reply holds at most an error's partial text.
_USABLE_REPLY_STATUSES = {"complete", "cancelled", "interrupted"}


@dataclass(frozen=True, slots=True)
class PastMessage:
    role: str
    content: str
    status: str


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[PastMessage],
    exchanges: int,
    new_message: str,
    images: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Ollama `messages` for a chat request; `history` is chronological, without the new one."""
    messages: list[dict[str, Any]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    messages.extend(_last_exchanges(history, exchanges))
    new: dict[str, Any] = {"role": "user", "content": new_message}
    if images:
        new["images"] = list(images)
    messages.append(new)
    return messages


def _last_exchanges(history: Sequence[PastMessage], exchanges: int) -> list[dict[str, Any]]:
    if exchanges <= 0:
        return []
    kept: list[dict[str, Any]] = []
    users_seen = 0
    for message in reversed(history):
        if message.role == "user":
            users_seen += 1
            if users_seen > exchanges:
                break
            kept.append({"role": "user", "content": message.content})
        elif (
            message.role == "assistant"
            and message.status in _USABLE_REPLY_STATUSES
            and message.content
        ):
            kept.append({"role": "assistant", "content": message.content})
    kept.reverse()
    # A reply whose question fell out of the window would be context without its cause.
    while kept and kept[0]["role"] == "assistant":
        kept.pop(0)
    return kept


def title_from(message: str, limit: int = 60) -> str:
    """A conversation title from its first message: the first line, cut at a word."""
    line = " ".join(message.strip().split("\n", 1)[0].split())
    if len(line) <= limit:
        return line or "New conversation"
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(" ,.;:") + "…"
