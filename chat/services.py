"""State changes of the chat: conversations, and generate(), the one generation service.

Every transport (REST, SSE, the Ollama-compatible proxy, the WebSocket consumer) validates its
input, calls `prepare_*()` and renders the events of `generate()`; none talks to Ollama itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from accounts.models import User
from accounts.selectors import queue_weight
from chat import budgets, cancels, estimates, hosts, lifecycle, limits, selectors
from chat.attachments import load_attachments, with_attachments
from chat.claims import claimable, free_to_claim
from chat.context import PastMessage, build_context, reply_reserve, title_from
from chat.errors import ChatRequestError
from chat.events import Accepted, Cancelled, Done, Event, Failed, Queued, Started, Token
from chat.models import Conversation, Message
from chat.options import (
    InvalidOptions,
    check_keep_alive,
    merge,
    to_ollama,
    validate_ollama_options,
)
from config import database
from config import metrics as prometheus
from config.exceptions import app_error_of, queue_unavailable
from core.errors import AppError
from core.gate import GateError, GateFull
from core.ollama import OllamaError, Timings
from core.probes import resource_delta
from core.probes.recent import recent_snapshot

logger = logging.getLogger(__name__)


@dataclass
class ChatInput:
    """A chat request as every transport hands it over, after its own validation."""

    message: str
    conversation_id: UUID | None = None
    model: str | None = None
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # checked by chat.options
    attachments: list[UUID] = field(default_factory=list)  # the user's upload ids
    source: str | None = None  # of a new conversation: "loadtest", or the default ("chat")


@dataclass
class GenerationPlan:
    user_id: int
    conversation: Conversation | None  # None: generate() creates it
    new_conversation: dict[str, Any]
    user_content: str
    model: str
    host: str
    client_options: dict[str, Any]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    endpoint: Literal["chat", "generate"] = "chat"
    relay_every_chunk: bool = False  # also chunks without content (thinking, tool calls)
    weight: int = 1  # the user's turns in the gate's queue (accounts.selectors.queue_weight)
    # A new conversation's id is chosen up front (a WebSocket joins its group before the first
    # event), but its row is created only with the user message, in one transaction.
    conversation_pk: UUID = field(default_factory=uuid4)
    saved: bool = False  # the user message (and a new conversation) are in the database
    parent_id: int | None = None  # the message the new user message follows (the leaf)
    user_message_id: int | None = None  # the question the reply answers (once saved)
    # Regenerating or continuing answers a question already saved: no new user message.
    save_user_message: bool = True
    # Continuing appends to this reply, whose text so far is `prefix` and figures `prior`.
    continue_from: int | None = None
    prefix: str = ""
    prior: Timings | None = None
    prior_ttft: float | None = None
    context: dict[str, Any] | None = None  # what the model was sent (chat.context's report)
    ollama_messages: list[dict[str, Any]] = field(default_factory=list)
    ollama_extra: dict[str, Any] = field(default_factory=dict)
    ollama_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.conversation is not None:
            self.conversation_pk = self.conversation.pk

    @property
    def conversation_id(self) -> str | None:
        """The conversation's id once it exists."""
        return str(self.conversation_pk) if self.conversation or self.saved else None


# --------------------------------------------------------------------------- conversations


def create_conversation(*, owner, **fields: Any) -> Conversation:
    conversation = Conversation(owner=owner, **fields)
    conversation.full_clean()
    conversation.save()
    return conversation


def update_conversation(conversation: Conversation, **fields: Any) -> Conversation:
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.full_clean()
    conversation.save()
    return conversation


# Whatever deletes messages goes through the functions below: each carries the tokens of the
# day's replies it deletes into the daily budget's ledger (chat.budgets.carry_deleted), in the
# deletion's transaction and with the conversations locked (SELECT ... FOR UPDATE), so that
# deleting cannot give tokens back, and two deletions of the same messages carry them once.


def clear_conversation(conversation: Conversation) -> int:
    """Every message goes; a reply being generated refuses it (`generation_running`), since
    clearing its question would take it along."""
    with transaction.atomic():
        locked = _locked(conversation.pk)
        _refuse_while_generating(locked)
        messages = Message.objects.filter(conversation=locked)
        budgets.carry_deleted(messages)
        deleted, _ = messages.delete()
        conversation.save(update_fields=["updated_at"])
    return deleted


def delete_conversation(conversation: Conversation) -> None:
    """The conversation and its messages go (their tokens of today still count). A reply being
    generated refuses it (`generation_running`), like clearing: the rest of its tokens would be
    generated for a row that is gone, and counted nowhere."""
    with transaction.atomic():
        _refuse_while_generating(_locked(conversation.pk))
        delete_conversations(Conversation.objects.filter(pk=conversation.pk))


def delete_conversations(conversations: QuerySet[Conversation]) -> int:
    """Delete `conversations` (the admin's; no refusal: staff decide) with their messages; the
    number of conversations deleted."""
    with transaction.atomic():
        ids = list(
            Conversation.objects.select_for_update()
            .filter(pk__in=conversations.values("pk"))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        budgets.carry_deleted(Message.objects.filter(conversation_id__in=ids))
        _, per_model = Conversation.objects.filter(pk__in=ids).delete()
    return per_model.get(Conversation._meta.label, 0)


def delete_messages(messages: QuerySet[Message]) -> int:
    """Delete `messages` (the admin's) and the replies, edits and regenerations under them (a
    message's children go with it); the number of messages deleted."""
    with transaction.atomic():
        conversation_ids = set(messages.values_list("conversation_id", flat=True))
        # Locked first, then read: the tree cannot change under the deletion.
        list(
            Conversation.objects.select_for_update()
            .filter(pk__in=conversation_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        chosen = set(messages.values_list("pk", flat=True))
        children: dict[int | None, list[int]] = {}
        for pk, parent in Message.objects.filter(conversation_id__in=conversation_ids).values_list(
            "pk", "parent_id"
        ):
            children.setdefault(parent, []).append(pk)
        gone, todo = set(chosen), list(chosen)
        while todo:
            below = children.get(todo.pop(), [])
            gone.update(below)
            todo.extend(below)
        budgets.carry_deleted(Message.objects.filter(pk__in=gone))
        _, per_model = Message.objects.filter(pk__in=chosen).delete()
    return per_model.get(Message._meta.label, 0)


def _locked(conversation_id: Any) -> Conversation:
    locked = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
    if locked is None:  # deleted meanwhile (a second click)
        raise selectors.not_found()
    return locked


def _refuse_while_generating(conversation: Conversation) -> None:
    busy = conversation.messages.filter(status=Message.Status.STREAMING).exists()
    if busy or (conversation.generating_since is not None and not claimable(conversation.pk)):
        raise generation_running()


def switch_branch(conversation: Conversation, message_id: int) -> Conversation:
    """Show the branch through `message_id`: its newest leaf becomes the current one."""
    tree = selectors.tree_of(conversation.pk)
    if message_id not in tree:
        raise ChatRequestError("not_found", "Message not found.", 404)
    if conversation.generating_since is not None and not claimable(conversation.pk):
        raise generation_running()
    conversation.current_leaf_id = tree.newest_leaf(message_id)
    conversation.save(update_fields=["current_leaf", "updated_at"])
    return conversation


def mark_stale_streaming_interrupted(older_than_seconds: int | None = None) -> int:
    """Replies left `streaming` long ago by a process that did not beat (see chat.lifecycle for
    the others) are `interrupted`, keeping their text."""
    limit = older_than_seconds or settings.CHAT_STALE_STREAMING_SECONDS
    cutoff = timezone.now() - timedelta(seconds=limit)
    return Message.objects.filter(
        status=Message.Status.STREAMING, process__isnull=True, updated_at__lt=cutoff
    ).update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error="The generation stopped without finishing (the server restarted or crashed).",
        completed_at=timezone.now(),
        updated_at=timezone.now(),
    )


# --------------------------------------------------------------------------- preparing


def check_message_text(text: str) -> None:
    if not text.strip():
        raise ChatRequestError("empty_message", "The message is empty.", 400)
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatRequestError(
            "message_too_long",
            f"The message has {len(text)} characters; the limit is "
            f"{settings.CHAT_MAX_MESSAGE_CHARS}.",
            400,
        )


async def prepare_chat(user_id: int, data: ChatInput) -> GenerationPlan:
    """Check everything that can be checked before a byte is streamed, and pick the host."""
    text = data.message
    check_message_text(text)
    lifecycle.check_accepting()
    conversation, history, exchanges, weight = await database.run(
        _load_for_chat, user_id, data.conversation_id
    )
    plan = await plan_generation(
        user_id,
        conversation,
        history,
        exchanges,
        question=text,
        attachment_ids=data.attachments,
        model=data.model,
        system=data.system,
        options=data.options,
        parent_id=conversation.current_leaf_id if conversation else None,
        weight=weight,
    )
    if data.source and conversation is None:
        plan.new_conversation["source"] = data.source
    return plan


async def plan_generation(
    user_id: int,
    conversation: Conversation | None,
    history: list[PastMessage],
    exchanges: int | None,
    *,
    question: str,
    attachment_ids: Sequence[UUID],
    model: str | None,
    system: str | None,
    options: dict[str, Any],
    parent_id: int | None,
    weight: int | None = None,
    **plan_fields: Any,
) -> GenerationPlan:
    """The plan of a generation answering `question` after `history` (the branch above it):
    the model, host, options and attachments checked, the messages for Ollama built. `weight`:
    the user's queue weight if the caller read it already (chat.limits.check_now returns it)."""
    chosen = model or (conversation.model if conversation else "") or await hosts.default_model()
    system_prompt = (
        system if system is not None else (conversation.system_prompt if conversation else "")
    )
    client_options = merge(conversation.options if conversation else {}, options)
    host = await hosts.pick_host(chosen)
    if weight is None:
        weight = await database.run(queue_weight, user_id)
    attached = await load_attachments(user_id, list(attachment_ids))
    if attached.images and not (await hosts.client_for(host).show(chosen)).supports_vision:
        raise ChatRequestError(
            "model_lacks_vision",
            f'The model "{chosen}" does not accept images; pick a vision model (e.g. llava).',
            400,
            extra={"attachments": [r["id"] for r in attached.records if r["kind"] == "image"]},
        )
    # As much of the branch as fits the model's window, less room for the reply.
    window = await hosts.context_window(host, chosen, client_options.get("num_ctx"))
    continuing = plan_fields.get("continuing")
    context = build_context(
        system_prompt=system_prompt,
        history=history,
        new_message=with_attachments(question, attached.texts),
        images=attached.images,
        window=window,
        reserve=reply_reserve(window, client_options.get("max_tokens")),
        max_exchanges=exchanges,
        continuing=continuing,
    )
    plan_fields.pop("continuing", None)
    return GenerationPlan(
        user_id=user_id,
        conversation=conversation,
        parent_id=parent_id,
        new_conversation={
            "title": title_from(question),
            "model": model or "",
            "system_prompt": system or "",
            "options": options,
        },
        user_content=question,
        model=chosen,
        host=host,
        client_options=client_options,
        attachments=attached.records,
        ollama_options=to_ollama(client_options),
        ollama_messages=context.messages,
        context=context.report.as_dict(),
        weight=weight,
        **plan_fields,
    )


async def prepare_ollama_request(
    user_id: int,
    endpoint: Literal["chat", "generate"],
    body: dict[str, Any],
    *,
    staff: bool = False,
    source: str = Conversation.Source.OLLAMA,
) -> GenerationPlan:
    """A request of the Ollama-compatible proxy: the client's own messages and options, held to
    the rules of every transport (lengths, the options' bounds, keep_alive; `staff` may unload
    and pin models). The proxy has checked the body's shape."""
    ollama_options = _check_ollama_request(endpoint, body, staff=staff)
    lifecycle.check_accepting()
    weight = await limits.check(user_id)  # the queue weight, read with the budget
    model = body["model"]
    host = await hosts.pick_host(model)
    if endpoint == "chat":
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        user_content = str(last_user.get("content", "")) if last_user else ""
        extra_keys: tuple[str, ...] = ("format", "keep_alive", "think", "tools")
    else:
        messages = []
        user_content = str(body.get("prompt") or "")
        extra_keys = (
            "system",
            "images",
            "format",
            "keep_alive",
            "think",
            "context",
            "raw",
            "suffix",
        )
    return GenerationPlan(
        user_id=user_id,
        conversation=None,
        new_conversation={
            "title": title_from(user_content or model),
            "model": model,
            "source": source,
        },
        user_content=user_content,
        model=model,
        host=host,
        client_options={},
        endpoint=endpoint,
        relay_every_chunk=True,
        weight=weight,
        ollama_messages=messages,
        ollama_extra={key: body[key] for key in extra_keys if key in body},
        ollama_options=ollama_options,
    )


def check_lengths(parts: Sequence[tuple[str, bool, str]], *, together: str) -> None:
    """Each text a person wrote (`(where, written, text)` with `written` true) held to
    CHAT_MAX_MESSAGE_CHARS (`message_too_long`, naming `where`), all of them together to
    OLLAMA_PROXY_MAX_CHARS (`request_too_long`; `together` names them)."""
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    total = 0
    for where, written, text in parts:
        if written and len(text) > limit:
            raise ChatRequestError(
                "message_too_long",
                f"{where} has {len(text)} characters; the limit is {limit}.",
                400,
            )
        total += len(text)
    if total > settings.OLLAMA_PROXY_MAX_CHARS:
        raise ChatRequestError(
            "request_too_long",
            f"{together} have {total} characters together; the limit is "
            f"{settings.OLLAMA_PROXY_MAX_CHARS}.",
            400,
        )


def _check_ollama_request(
    endpoint: Literal["chat", "generate"], body: dict[str, Any], *, staff: bool
) -> dict[str, Any]:
    """The checks every chat gets, on a proxy request; returns the options to send Ollama.

    Lengths: each message a person or a tool wrote (every role but `assistant`, whose replies
    the client sends back as history) and a generate's `prompt`, `system` and `suffix` are
    held to CHAT_MAX_MESSAGE_CHARS, as a REST message is (`message_too_long`); all of them
    together, assistant messages included, to OLLAMA_PROXY_MAX_CHARS (`request_too_long`)."""
    if endpoint == "chat":
        parts = [
            (f"messages[{index}] ({m.get('role')})", m.get("role"), m.get("content") or "")
            for index, m in enumerate(body.get("messages") or [])
        ]
    else:
        parts = [(key, key, body.get(key) or "") for key in ("prompt", "system", "suffix")]
    check_lengths(
        [(where, role != "assistant", text) for where, role, text in parts],
        together=f"The request's {'messages' if endpoint == 'chat' else 'texts'}",
    )
    try:
        options = validate_ollama_options(body.get("options"))
    except InvalidOptions as exc:
        raise ChatRequestError(
            "invalid_options", f"invalid options: {exc}", 400, extra={"options": exc.errors}
        ) from None
    if body.get("keep_alive") is not None:
        check_keep_alive(body["keep_alive"], staff=staff, maximum=settings.OLLAMA_KEEP_ALIVE_MAX)
    return options


def _load_for_chat(
    user_id: int, conversation_id: UUID | None
) -> tuple[Conversation | None, list[PastMessage], int | None, int]:
    """Every read a chat needs before it starts, in one hop to a database thread: the limits
    (and the user's queue weight, read with them), the conversation (the user's own) and its
    current branch."""
    weight = limits.check_now(user_id)
    if conversation_id is None:
        return None, [], settings.CHAT_CONTEXT_EXCHANGES, weight
    conversation = selectors.own_conversation(user_id, conversation_id)
    if conversation.generating_since is not None and not claimable(conversation.pk):
        raise generation_running()
    # The branch the user is on, never the others.
    history = past(selectors.branch_of(conversation))
    return conversation, history, exchanges_cap(conversation), weight


def past(messages: Sequence[Message]) -> list[PastMessage]:
    """Messages as the context builder reads them; a reply's size is Ollama's own count."""
    return [
        PastMessage(m.role, m.content, m.status, m.eval_count if m.role == "assistant" else None)
        for m in messages
    ]


def exchanges_cap(conversation: Conversation) -> int | None:
    """The conversation's own cap on past exchanges, else the server's (None: what fits)."""
    if conversation.context_exchanges is not None:
        return conversation.context_exchanges
    return settings.CHAT_CONTEXT_EXCHANGES


# --------------------------------------------------------------------------- generating

GENERATION_FAILED = "The server failed while generating; what was generated is kept."
# Final saves that fail (the database is down) are retried in the background this long.
SAVE_RETRY_SECONDS = 120.0


class _Reply:
    """The assistant message being written: throttled flushes, one final save.

    A flush that fails (the database is briefly away) is skipped: the text stays here and the
    next flush or the final save writes it."""

    def __init__(self, message_id: int, conversation_id: Any, prefix: str = "") -> None:
        self.message_id = message_id
        self.conversation_id = conversation_id
        # A continued reply keeps its text: offsets go on counting from its end.
        self.parts: list[str] = [prefix] if prefix else []
        self.length = len(prefix)
        self._flushed_length = len(prefix)
        self._last_flush = time.monotonic()
        self._interval = settings.CHAT_FLUSH_INTERVAL
        self.tokens = 0  # chunks with text streamed by this generation (streamed_tokens)

    @property
    def content(self) -> str:
        return "".join(self.parts)

    def add(self, text: str) -> int:
        offset = self.length
        self.parts.append(text)
        self.length += len(text)
        self.tokens += 1
        return offset

    def flush_due(self) -> bool:
        """Whether a flush is due: checked per token, so without a coroutine or a setting
        read (issue 16); the interval is read once per reply."""
        return (
            time.monotonic() - self._last_flush >= self._interval
            and self.length != self._flushed_length
        )

    async def maybe_flush(self) -> None:
        if self.flush_due():
            await self.flush()

    async def flush(self) -> None:
        self._last_flush = time.monotonic()
        length = self.length
        try:
            await database.run(_save_content, self.message_id, self.content, self.tokens)
        except DatabaseError:
            logger.warning("could not save a streaming reply; the final save will", exc_info=True)
            return
        self._flushed_length = length

    async def finish(self, status: str, **fields: Any) -> None:
        """The final save; if the database is away, retried in the background until it is back
        (the client has its event already, and the text is kept in memory meanwhile)."""
        cancels.closing(self.conversation_id)  # too late to stop it: this is its end
        fields = {"streamed_tokens": self.tokens, **fields}
        args = (self.message_id, self.conversation_id, status, self.content, fields)
        try:
            await database.run(_save_final, *args)
        except DatabaseError:
            logger.warning("could not save a finished reply; retrying", exc_info=True)
            _keep(asyncio.get_running_loop().create_task(_save_final_later(*args)))


_background: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _save_final_later(*args: Any) -> None:
    deadline = time.monotonic() + SAVE_RETRY_SECONDS
    delay = 0.2
    while True:
        await asyncio.sleep(delay)
        try:
            await database.run_detached(_save_final, *args)
            return
        except DatabaseError:
            if time.monotonic() > deadline:
                logger.error("gave up saving reply %s; the stale sweep will mark it", args[0])
                return
            delay = min(delay * 2, 5.0)


def _save_content(message_id: int, content: str, tokens: int = 0) -> None:
    Message.objects.filter(pk=message_id).update(
        content=content, streamed_tokens=tokens, updated_at=timezone.now()
    )


def _save_final(
    message_id: int, conversation_id: Any, status: str, content: str, fields: dict[str, Any]
) -> None:
    now = timezone.now()
    with transaction.atomic():
        # A reply that another process's sweep took for a dead process's (this one stalled)
        # is finished all the same: the generation did end, and its text is whole.
        Message.objects.filter(
            pk=message_id, status__in=[Message.Status.STREAMING, Message.Status.INTERRUPTED]
        ).update(content=content, status=status, completed_at=now, updated_at=now, **fields)
        Conversation.objects.filter(pk=conversation_id).update(updated_at=now, **RELEASED)


def generation_running() -> ChatRequestError:
    return ChatRequestError(
        "generation_running",
        "A reply is still being generated in this conversation: wait for it or stop it.",
        409,
    )


async def generate(plan: GenerationPlan) -> AsyncGenerator[Event, None]:
    """Run one generation: save, queue, stream, save. See README.md, "One generation service".

    Cancelling the task that iterates closes the upstream response (Ollama stops), saves the
    partial reply as `cancelled` (`interrupted` when the server is shutting down) and yields a
    `Cancelled` event; the next step re-raises the cancellation (a stop with a reason, from
    staff or for an abandoned generation, ends it normally instead: see chat.cancels, which
    makes every generation cancellable by its conversation id). Closing this iterator does the
    same without the event (nobody is left to tell). Every other failure ends with a `Failed`
    event and a saved `failed` row: nothing escapes to the transport.
    """
    async with cancels.tracked(plan):
        gate = hosts.get_gate()
        try:
            reservation = await gate.reserve(
                plan.host,
                user=str(plan.user_id),
                weight=plan.weight,
                label=str(plan.conversation_pk),
            ).__aenter__()
        except GateFull as exc:
            # Refused before anything was saved: the client can simply retry later.
            _count(plan, "queue_full")
            yield Failed(
                AppError(
                    "queue_full",
                    f"The server is busy: the queue for this model is full. Retry in "
                    f"{exc.retry_after_seconds} s.",
                    503,
                    retry_after=exc.retry_after_seconds,
                )
            )
            return
        except asyncio.CancelledError:
            yield Cancelled(None, "", lifecycle.interrupting())
            raise
        except Exception as exc:
            logger.warning("could not join the generation queue: %s", exc)
            yield Failed(queue_unavailable() if isinstance(exc, RedisError) else app_error_of(exc))
            return

        reply: _Reply | None = None
        failure: AppError | None = None
        released = False
        try:
            user_message_id = await database.run(_save_user_message, plan)
            assert user_message_id is not None
            yield Accepted(
                str(plan.conversation_pk), user_message_id, plan.model, tuple(plan.attachments)
            )
            async for position in reservation.positions():
                yield Queued(
                    position,
                    await estimates.estimated_wait(
                        plan.host, plan.model, position, gate.max_concurrency
                    ),
                )

            # The request goes to Ollama now, beside the resource snapshot and the reply row:
            # the first token waits for none of them (issue 16). Its first chunk is read by
            # its own task until this one has the reply row; then this task reads on.
            sent_at = time.monotonic()
            first_token_at: float | None = None
            final = None
            stream = _open_stream(plan)
            head = asyncio.ensure_future(anext(stream, None))
            try:
                before, reply = await asyncio.gather(
                    recent_snapshot(), _begin_reply(plan, reservation)
                )
                yield Started(
                    reply.message_id,
                    str(plan.conversation_pk),
                    plan.model,
                    plan.host,
                    reservation.queue_wait_seconds,
                    offset=reply.length,
                )
                chunk = await head
                while chunk is not None:
                    if chunk.content:
                        if first_token_at is None:
                            first_token_at = time.monotonic()
                        offset = reply.add(chunk.content)
                        yield Token(chunk.content, offset, chunk.raw)
                        if reply.flush_due():
                            await reply.flush()
                    elif plan.relay_every_chunk and not chunk.done:
                        # Thinking text and tool calls, for the Ollama-compatible proxy.
                        yield Token("", reply.length, chunk.raw)
                    if chunk.done:
                        final = chunk
                    chunk = await anext(stream, None)
            finally:
                await _close_stream(stream, head)
            after = await recent_snapshot()
        except GeneratorExit:  # closed by the transport: nobody is left to tell
            await asyncio.shield(_save_cancelled(plan, reply))
            raise
        except asyncio.CancelledError:
            cancelled = await asyncio.shield(_save_cancelled(plan, reply))
            await asyncio.shield(_release(reservation))
            released = True
            # Reported as an event (rendered like the others), then honoured.
            yield cancelled
            if cancelled.code:  # stopped by staff or abandoned (chat.cancels): its normal end
                return
            raise
        except Exception as exc:
            if not isinstance(exc, OllamaError | GateError | ChatRequestError):
                logger.exception("generation failed")
            failure = app_error_of(exc, internal_detail=GENERATION_FAILED)
        finally:
            # Released before the final save: the next request in the queue need not wait for it.
            if not released:
                await asyncio.shield(_release(reservation))

        if failure is not None:
            _count(plan, "failed", queue_wait=reservation.queue_wait_seconds if reply else None)
            yield await _fail(plan, reply, failure)
            return

        timings = _whole_reply_timings(plan.prior, final.timings if final is not None else None)
        ttft = (first_token_at - sent_at) if first_token_at is not None else None
        if plan.prior_ttft is not None:  # a continued reply: its first token came long ago
            ttft = plan.prior_ttft
        assert reply is not None  # streamed to the end: the reply row exists
        resources = {
            "gpu_usage_before": before.get("gpu"),
            "gpu_usage_after": after.get("gpu"),
            "ram_usage_before": before.get("ram"),
            "ram_usage_after": after.get("ram"),
            "resource_delta": resource_delta(before, after),
        }
        await reply.finish(
            Message.Status.COMPLETE,
            done_reason=(final.done_reason or "") if final else "",
            **_timing_fields(timings),
            time_to_first_token=ttft,
            resources=resources,
        )
        metrics = build_metrics(
            timings=timings,
            done_reason=final.done_reason if final else None,
            time_to_first_token=ttft,
            queue_wait=reservation.queue_wait_seconds,
            in_flight_at_start=reservation.in_flight_at_start,
            model=plan.model,
            resources=resources,
            context=plan.context,
        )
        _count(
            plan,
            "complete",
            timings=timings,
            ttft=None if plan.prior_ttft is not None else ttft,
            queue_wait=reservation.queue_wait_seconds,
        )
        yield Done(reply.message_id, reply.content, metrics, final.raw if final else {})


def _count(
    plan: GenerationPlan,
    outcome: str,
    *,
    timings: Timings | None = None,
    ttft: float | None = None,
    queue_wait: float | None = None,
) -> None:
    """The generation's end, for /metrics (config.metrics)."""
    prometheus.generation_ended(
        model=plan.model,
        host=plan.host,
        outcome=outcome,
        eval_count=timings.eval_count if timings else None,
        prompt_eval_count=timings.prompt_eval_count if timings else None,
        time_to_first_token=ttft,
        queue_wait=queue_wait,
    )


async def _release(reservation: Any) -> None:
    try:
        await reservation.__aexit__(None, None, None)
    except Exception:  # a slot that cannot be released comes back when its lease expires
        logger.warning("could not release a gate slot", exc_info=True)


async def _save_cancelled(plan: GenerationPlan, reply: _Reply | None) -> Cancelled:
    """A cancelled generation keeps what it wrote: `cancelled` when a client stopped it,
    `interrupted` when the server is stopping. A user message saved while still queued gets
    that empty reply too, so that no question is left without an answer row."""
    interrupted = lifecycle.interrupting()
    _count(plan, "interrupted" if interrupted else "cancelled")
    # Stopped by staff or abandoned by its sockets (chat.cancels): saved with who and why.
    stop = None if interrupted else cancels.take_stop(plan.conversation_pk)
    message_id = reply.message_id if reply is not None else None
    if interrupted:
        status, fields = (
            Message.Status.INTERRUPTED,
            {"error_code": "interrupted", "error": lifecycle.INTERRUPTED_DETAIL},
        )
    elif stop is not None:
        status, fields = Message.Status.CANCELLED, {"error_code": stop.code, "error": stop.detail}
    else:
        status, fields = Message.Status.CANCELLED, {}
    try:
        if reply is not None:
            await reply.finish(status, **fields)
        elif plan.saved and plan.continue_from is not None:
            await database.run(_release_claim, plan)  # the reply was never resumed: unchanged
        elif plan.saved:
            message_id = await database.run(_create_reply, plan, status, completed=True, **fields)
    except Exception:
        logger.warning("could not save a cancelled reply", exc_info=True)
    return Cancelled(
        message_id,
        reply.content if reply is not None else "",
        interrupted,
        code=stop.code if stop is not None else "",
        detail=stop.detail if stop is not None else "",
    )


async def _begin_reply(plan: GenerationPlan, reservation: Any) -> _Reply:
    """The reply row: a new one (status `streaming`), or the continued one claimed again."""
    if plan.continue_from is not None:
        await database.run(_resume_reply, plan, lifecycle.process_id())
        return _Reply(plan.continue_from, plan.conversation_pk, plan.prefix)
    message_id = await database.run(
        _create_reply,
        plan,
        Message.Status.STREAMING,
        queue_wait=reservation.queue_wait_seconds,
        in_flight_at_start=reservation.in_flight_at_start,
        process=lifecycle.process_id(),
    )
    return _Reply(message_id, plan.conversation_pk)


async def _close_stream(stream: Any, head: asyncio.Future[Any]) -> None:
    """Close the upstream response (Ollama stops), its first read first if still running."""
    if not head.done():
        head.cancel()
        await asyncio.wait([head])
    if not head.cancelled():
        head.exception()  # retrieved: raised (and handled) where it was awaited, if it was
    await stream.aclose()


def _open_stream(plan: GenerationPlan):
    client = hosts.client_for(plan.host)
    options = plan.ollama_options or None
    if plan.endpoint == "generate":
        return client.generate(plan.model, plan.user_content, options=options, **plan.ollama_extra)
    return client.chat(plan.model, plan.ollama_messages, options=options, **plan.ollama_extra)


def _save_user_message(plan: GenerationPlan) -> int | None:
    """The conversation (a new one with its id chosen up front) and the user message, in one
    transaction: a failure leaves neither, so no conversation is ever empty. The conversation is
    claimed for this generation until its reply is saved (`generation_running` otherwise)."""
    now = timezone.now()
    claim: dict[str, Any] = {
        "generating_since": now,
        "generating_process": lifecycle.process_id(),
    }
    with transaction.atomic():
        if settings.CHAT_MAX_GENERATIONS_PER_USER:
            # One user's claims one at a time, so that requests sent at once cannot all pass
            # the limit. SQLite's IMMEDIATE transactions are already serial (and it has no
            # FOR UPDATE): no statement there.
            if connection.features.has_select_for_update:
                list(User.objects.select_for_update().filter(pk=plan.user_id).values_list("pk"))
            limits.check_generations_now(plan.user_id)
        message = None
        if plan.save_user_message:  # not for a regeneration or a continuation: claimed only
            # Inserted before its conversation's statement (a new conversation's row, or the
            # claim of an existing one), so that this statement also makes it the current
            # leaf (issue 16: one statement less). The foreign key to the conversation is
            # checked at commit (deferred), and a refused claim rolls the message back.
            message = Message.objects.create(
                conversation_id=plan.conversation_pk,
                parent_id=plan.parent_id,
                role=Message.Role.USER,
                content=plan.user_content,
                model=plan.model,
                attachments=plan.attachments,
            )
            claim["current_leaf"] = message
        if plan.conversation is None:
            Conversation.objects.create(
                pk=plan.conversation_pk, owner_id=plan.user_id, **plan.new_conversation, **claim
            )
        elif not Conversation.objects.filter(free_to_claim(now), pk=plan.conversation_pk).update(
            updated_at=now, **claim
        ):
            # One generation per conversation: the check in prepare_chat() raced with another.
            raise generation_running()
    plan.saved = True
    if message is None:
        return plan.user_message_id
    plan.user_message_id = message.pk
    return message.pk


RELEASED: dict[str, Any] = {"generating_since": None, "generating_process": None}


def _resume_reply(plan: GenerationPlan, process: UUID | None) -> None:
    """A continued reply streams again, and its branch is the one shown."""
    assert plan.continue_from is not None
    with transaction.atomic():
        Message.objects.filter(pk=plan.continue_from).update(
            status=Message.Status.STREAMING,
            process=process,
            error_code="",
            error="",
            done_reason="",
            completed_at=None,
            context=plan.context,
            updated_at=timezone.now(),
        )
        Conversation.objects.filter(pk=plan.conversation_pk).update(
            current_leaf_id=plan.continue_from
        )


def _release_claim(plan: GenerationPlan) -> None:
    Conversation.objects.filter(pk=plan.conversation_pk).update(**RELEASED)


def _create_reply(
    plan: GenerationPlan, status: str, *, completed: bool = False, **fields: Any
) -> int:
    """The reply row: `streaming`, or already finished (which lets the conversation go)."""
    now = timezone.now()
    with transaction.atomic():
        if completed:
            Conversation.objects.filter(pk=plan.conversation_pk).update(**RELEASED)
        return _new_reply(plan, status, completed_at=now if completed else None, **fields)


def _new_reply(plan: GenerationPlan, status: str, **fields: Any) -> int:
    """The reply, answering the user message, becomes the conversation's current leaf."""
    reply = Message.objects.create(
        conversation_id=plan.conversation_pk,
        parent_id=plan.user_message_id,
        role=Message.Role.ASSISTANT,
        status=status,
        model=plan.model,
        options=plan.ollama_options,
        ollama_host=plan.host,
        context=plan.context,
        **fields,
    )
    Conversation.objects.filter(pk=plan.conversation_pk).update(current_leaf=reply)
    return reply.pk


async def _fail(plan: GenerationPlan, reply: _Reply | None, error: AppError) -> Failed:
    # The reply row records the failure (and any text already generated) so that the
    # conversation shows what happened; nothing generated is dropped.
    fields = {"error_code": error.code, "error": error.detail[:2000]}
    message_id = reply.message_id if reply else None
    try:
        if reply is not None:
            await asyncio.shield(reply.finish(Message.Status.FAILED, **fields))
        elif plan.saved and plan.continue_from is not None:
            await database.run(_release_claim, plan)  # the reply was never resumed: unchanged
        elif plan.saved:
            message_id = await database.run(
                _create_reply, plan, Message.Status.FAILED, completed=True, **fields
            )
    except Exception:  # the database is down too: the client still hears why
        logger.warning("could not save a failed reply", exc_info=True)
    return Failed(error, message_id=message_id, content=reply.content if reply else "")


def _whole_reply_timings(prior: Timings | None, latest: Timings | None) -> Timings | None:
    """A continued reply's figures cover all of it: generated tokens and durations add up;
    the prompt is the latest request's."""
    if prior is None or latest is None:
        return latest or prior

    def add(a: int | None, b: int | None) -> int | None:
        return None if a is None and b is None else (a or 0) + (b or 0)

    return Timings(
        total_duration=add(prior.total_duration, latest.total_duration),
        load_duration=add(prior.load_duration, latest.load_duration),
        prompt_eval_count=latest.prompt_eval_count,
        prompt_eval_duration=latest.prompt_eval_duration,
        eval_count=add(prior.eval_count, latest.eval_count),
        eval_duration=add(prior.eval_duration, latest.eval_duration),
    )


def _timing_fields(timings: Timings | None) -> dict[str, Any]:
    if timings is None:
        return {}
    return {
        "total_duration": timings.total_duration,
        "load_duration": timings.load_duration,
        "prompt_eval_count": timings.prompt_eval_count,
        "prompt_eval_duration": timings.prompt_eval_duration,
        "eval_count": timings.eval_count,
        "eval_duration": timings.eval_duration,
        "tokens_per_second": timings.tokens_per_second,
        "prompt_tokens_per_second": timings.prompt_tokens_per_second,
    }


def build_metrics(
    *,
    timings: Timings | None,
    done_reason: str | None,
    time_to_first_token: float | None,
    queue_wait: float | None,
    in_flight_at_start: int | None,
    model: str,
    resources: dict[str, Any] | None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The figures of a reply, as the REST reply, the SSE metrics event and chat.done carry."""
    metrics: dict[str, Any] = (timings or Timings()).as_dict()
    metrics.update(
        model=model,
        done_reason=done_reason,
        time_to_first_token_seconds=time_to_first_token,
        queue_wait_seconds=queue_wait,
        in_flight_at_start=in_flight_at_start,
        context=context,
    )
    metrics.update(
        resources
        or {
            "gpu_usage_before": None,
            "gpu_usage_after": None,
            "ram_usage_before": None,
            "ram_usage_after": None,
            "resource_delta": None,
        }
    )
    return metrics


def message_metrics(message: Message) -> dict[str, Any]:
    """build_metrics() for a saved reply."""
    timings = Timings(
        total_duration=message.total_duration,
        load_duration=message.load_duration,
        prompt_eval_count=message.prompt_eval_count,
        prompt_eval_duration=message.prompt_eval_duration,
        eval_count=message.eval_count,
        eval_duration=message.eval_duration,
    )
    return build_metrics(
        timings=timings,
        done_reason=message.done_reason or None,
        time_to_first_token=message.time_to_first_token,
        queue_wait=message.queue_wait,
        in_flight_at_start=message.in_flight_at_start,
        model=message.model,
        resources=message.resources,
        context=message.context,
    )


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


def final_event(events: Sequence[Event]) -> Event | None:
    for event in reversed(events):
        if isinstance(event, Done | Failed | Cancelled):
            return event
    return None
