"""The context sent to Ollama: the system prompt, then as much of the branch as fits a budget.

Plain Python (no Django). The budget is the model's context window minus room for the reply
(`reply_reserve`). The system prompt and the new message (its attachments' text folded in by
the caller) are always sent; earlier messages of the branch fill what is left, newest first,
a whole exchange (a question and its replies) at a time, going back while they fit.

A message costs its content's tokens plus `MESSAGE_OVERHEAD_TOKENS` for the chat template's
role markers. The content's tokens are the count Ollama reported for it when the caller knows
one (`PastMessage.tokens`), else an estimate: ceil(characters / `CHARS_PER_TOKEN`). An image
of the new message costs `IMAGE_TOKENS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Replies that carry text the user saw; a failed reply holds at most an error's partial text.
_USABLE_REPLY_STATUSES = {"complete", "cancelled", "interrupted"}

# The usual rough rule for English text with the BPE tokenizers of Llama, Qwen, Gemma...
CHARS_PER_TOKEN = 4
# What a chat template spends around each message: Llama 3's
# `<|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>` and ChatML's
# `<|im_start|>role\n ... <|im_end|>\n` are 4 to 5 tokens; one spare.
MESSAGE_OVERHEAD_TOKENS = 6
# An image's embedding: from 256 (Gemma 3) and 576 (LLaVA 1.5) to over a thousand; a middle guess.
IMAGE_TOKENS = 768
# The reply's room when the request sets no max_tokens: this share of the window, at least
# MIN_REPLY_RESERVE tokens; never more than half the window (see reply_reserve).
REPLY_SHARE = 4  # 1/4
MIN_REPLY_RESERVE = 256

Counted = Literal["reported", "estimated", "mixed"]


@dataclass(frozen=True, slots=True)
class PastMessage:
    role: str
    content: str
    status: str
    # The content's tokens as Ollama counted them (a reply's eval_count), when known.
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ContextReport:
    """What was sent, for the reply's figures."""

    messages_sent: int  # every message of the request: system prompt, history, the new one...
    messages_dropped: int  # earlier messages of the branch left out (no room, or the cap)
    tokens_estimated: int  # the prompt's tokens, as counted below
    window: int  # the context window the budget was taken from
    # How the earlier messages sent (and a continued reply) were counted: all from Ollama's
    # figures, none, or some. The system prompt and the new message are always estimated.
    counted: Counted
    # The system prompt, the new message and a continued reply alone exceed the budget (they
    # are sent all the same).
    over_budget: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages_sent": self.messages_sent,
            "messages_dropped": self.messages_dropped,
            "tokens_estimated": self.tokens_estimated,
            "window": self.window,
            "counted": self.counted,
            "over_budget": self.over_budget,
        }


@dataclass(frozen=True, slots=True)
class Context:
    messages: list[dict[str, Any]]  # Ollama's chat `messages`
    report: ContextReport


def estimate_tokens(text: str) -> int:
    """The tokens of `text` without a tokenizer: ceil(characters / CHARS_PER_TOKEN)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_tokens(message: PastMessage) -> int:
    """What `message` costs in the prompt: its reported count if known, else the estimate,
    plus the template's overhead."""
    return _content_tokens(message) + MESSAGE_OVERHEAD_TOKENS


def reply_reserve(window: int, max_tokens: int | None) -> int:
    """The tokens kept free for the reply: max_tokens when set, else 1/REPLY_SHARE of the
    window (at least MIN_REPLY_RESERVE); never more than half the window, so that a large
    max_tokens or a tiny window still leaves room for the new message."""
    half = max(window, 0) // 2
    if max_tokens is not None and max_tokens > 0:
        return min(max_tokens, half)
    return min(max(window // REPLY_SHARE, MIN_REPLY_RESERVE), half)


def build_context(
    *,
    system_prompt: str,
    history: Sequence[PastMessage],
    new_message: str,
    images: Sequence[str] = (),
    window: int,
    reserve: int,
    max_exchanges: int | None = None,
    continuing: PastMessage | None = None,
) -> Context:
    """Ollama `messages` for a chat request, within `window - reserve` tokens.

    `history` is the branch oldest first: the path from the first message down to the parent
    of `new_message`, the user turn being answered (its attachments' text folded in; `images`
    go with it). `continuing`, when given, is a partial reply to `new_message` that the model
    is asked to go on with: it is sent last, as an assistant turn. The system prompt, the new
    message and `continuing` are always sent, even past the budget (`over_budget` says so).
    `max_exchanges` caps the earlier exchanges sent (None: as many as fit). Failed replies are
    never sent; nor is a reply without its question.
    """
    exchanges, orphans = _exchanges(history)
    required = [PastMessage("user", new_message, "complete")]  # after the history, always
    if continuing is not None:
        required.append(continuing)

    budget = window - reserve
    fixed = sum(message_tokens(m) for m in required) + len(images) * IMAGE_TOKENS
    if system_prompt.strip():
        fixed += estimate_tokens(system_prompt) + MESSAGE_OVERHEAD_TOKENS
    room = budget - fixed

    kept: list[list[PastMessage]] = []
    cap = len(exchanges) if max_exchanges is None else max(max_exchanges, 0)
    for exchange in reversed(exchanges):
        if len(kept) == cap:
            break
        cost = sum(message_tokens(m) for m in exchange)
        if cost > room:
            break  # going back stops at the first that does not fit: the history has no gap
        room -= cost
        kept.append(exchange)
    kept.reverse()
    sent = [m for exchange in kept for m in exchange]

    messages: list[dict[str, Any]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": m.role, "content": m.content} for m in sent)
    new: dict[str, Any] = {"role": "user", "content": new_message}
    if images:
        new["images"] = list(images)
    messages.append(new)
    if continuing is not None:
        messages.append({"role": "assistant", "content": continuing.content})

    report = ContextReport(
        messages_sent=len(messages),
        messages_dropped=sum(len(exchange) for exchange in exchanges) + orphans - len(sent),
        tokens_estimated=budget - room,
        window=window,
        counted=_counted(sent if continuing is None else [*sent, continuing]),
        over_budget=fixed > budget,
    )
    return Context(messages=messages, report=report)


def _content_tokens(message: PastMessage) -> int:
    if message.tokens is not None and message.tokens > 0:
        return message.tokens
    return estimate_tokens(message.content)


def _exchanges(history: Sequence[PastMessage]) -> tuple[list[list[PastMessage]], int]:
    """The usable messages of `history` as exchanges (a question, then its replies), and how
    many usable replies came before any question (never sent: a reply without its cause)."""
    exchanges: list[list[PastMessage]] = []
    orphans = 0
    for message in history:
        if message.role == "user":
            exchanges.append([message])
        elif (
            message.role == "assistant"
            and message.status in _USABLE_REPLY_STATUSES
            and message.content
        ):
            if exchanges:
                exchanges[-1].append(message)
            else:
                orphans += 1
    return exchanges, orphans


def _counted(messages: Sequence[PastMessage]) -> Counted:
    reported = sum(1 for m in messages if m.tokens is not None and m.tokens > 0)
    if messages and reported == len(messages):
        return "reported"
    return "mixed" if reported else "estimated"


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[PastMessage],
    exchanges: int | None,
    new_message: str,
    images: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Deprecated: the last `exchanges` exchanges without a token budget (None: all of them).
    Kept until chat/services.py calls build_context."""
    return build_context(
        system_prompt=system_prompt,
        history=history,
        new_message=new_message,
        images=images,
        window=2**62,
        reserve=0,
        max_exchanges=exchanges,
    ).messages


def title_from(message: str, limit: int = 60) -> str:
    """A conversation title from its first message: the first line, cut at a word."""
    line = " ".join(message.strip().split("\n", 1)[0].split())
    if len(line) <= limit:
        return line or "New conversation"
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(" ,.;:") + "…"
