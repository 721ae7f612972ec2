"""Embeddings, for every transport that offers them (`/ollama/api/embed`, the older
`/ollama/api/embeddings`, `/v1/embeddings`): held to the rules of a chat, through the gate like a
generation, and recorded without their content.

The rules: each input to CHAT_MAX_MESSAGE_CHARS and all of them together to
OLLAMA_PROXY_MAX_CHARS (`message_too_long`, `request_too_long`), the options' bounds and
keep_alive as for a chat, and the per-user limits and daily budget (chat.limits) before
anything is queued. The gate: a slot of the host's queue, reserved for the user with their
weight and labelled with the record's conversation id, so that "who is on the GPU now" shows it.

The record: a conversation per request (the transport's `source`, titled
"embeddings: <model>") holding one assistant row without text, carrying only the figures:
Ollama's `prompt_eval_count`, `total_duration` and `load_duration`, `eval_count` 0 (an
embedding generates nothing), the queue wait, the host, the options; a failure after the gate
is a `failed` row with its code, as a generation's is. A conversation rather than a model of
its own because everything that reads generations already reads those rows: monitoring's
per-request figures, the daily budget (`eval_count` 0: nothing counts, except the prompt's
tokens with CHAT_BUDGET_COUNTS_PROMPT) and the deletion of a user's data. The texts and the
vectors are never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from chat import hosts, lifecycle, limits, services
from chat.errors import ChatRequestError
from chat.models import Conversation, Message
from chat.options import InvalidOptions, check_keep_alive, validate_ollama_options
from config import database
from config import metrics as prometheus
from config.exceptions import app_error_of, queue_unavailable
from core.errors import AppError
from core.gate import GateError, GateFull
from core.ollama import EmbedResult, OllamaError, Timings

logger = logging.getLogger(__name__)

#: The most inputs one request may embed (OpenAI's own limit).
MAX_INPUTS = 2048


def check_inputs(inputs: Sequence[str], *, field: str = "input", indexed: bool = True) -> None:
    """The lengths every chat message is held to: each input, then all of them together.
    `field` names them in the error (`input[3]`, or `prompt` when not `indexed`)."""
    if len(inputs) > MAX_INPUTS:
        raise ChatRequestError(
            "request_too_long",
            f"{field} has {len(inputs)} items; the limit is {MAX_INPUTS}.",
            400,
        )
    services.check_lengths(
        [
            (f"{field}[{index}]" if indexed else field, True, text)
            for index, text in enumerate(inputs)
        ],
        together="The inputs",
    )


def check_options(options: Any) -> dict[str, Any]:
    """Ollama's options, under the bounds of every chat (`invalid_options` otherwise)."""
    try:
        return validate_ollama_options(options)
    except InvalidOptions as exc:
        raise ChatRequestError(
            "invalid_options", f"invalid options: {exc}", 400, extra={"options": exc.errors}
        ) from None


async def embed(
    user_id: int,
    model: str,
    inputs: Sequence[str],
    *,
    source: str,
    staff: bool = False,
    truncate: bool | None = None,
    dimensions: int | None = None,
    options: Mapping[str, Any] | None = None,
    keep_alive: Any = None,
    field: str = "input",
    indexed: bool = True,
) -> EmbedResult:
    """One vector per input, from `model` on the least busy host that has it.

    Raises ChatRequestError (the request's own fault, or the limits), the gate's refusal
    (`queue_full`, `queue_unavailable`) and Ollama's errors (OllamaError: ModelNotFound...),
    each an AppError that the transports render in their own shape."""
    check_inputs(inputs, field=field, indexed=indexed)
    ollama_options = check_options(options)
    if keep_alive is not None:
        check_keep_alive(keep_alive, staff=staff, maximum=settings.OLLAMA_KEEP_ALIVE_MAX)
    lifecycle.check_accepting()
    weight = await limits.check(user_id)  # the queue weight, read with the budget
    host = await hosts.pick_host(model)
    conversation_id = uuid4()
    gate = hosts.get_gate()
    result: EmbedResult | None = None
    failure: OllamaError | None = None
    with lifecycle.tracked():  # a shutdown lets it finish within the grace, like a generation
        try:
            reservation = await gate.reserve(
                host, user=str(user_id), weight=weight, label=str(conversation_id)
            ).__aenter__()
        except GateFull as exc:
            raise AppError(
                "queue_full",
                f"The server is busy: the queue for this model is full. Retry in "
                f"{exc.retry_after_seconds} s.",
                503,
                retry_after=exc.retry_after_seconds,
            ) from None
        except RedisError:
            raise queue_unavailable() from None
        try:
            await reservation.acquired()
            try:
                result = await hosts.client_for(host).embed(
                    model,
                    list(inputs),
                    truncate=truncate,
                    options=ollama_options or None,
                    keep_alive=keep_alive,
                    dimensions=dimensions,
                )
            except OllamaError as exc:
                failure = exc
        except GateError as exc:
            raise app_error_of(exc) from None
        finally:
            await _release(reservation)
    await _record_safely(
        user_id,
        conversation_id,
        source=source,
        model=model,
        host=host,
        timings=result.timings if result is not None else None,
        queue_wait=reservation.queue_wait_seconds,
        in_flight=reservation.in_flight_at_start,
        options=ollama_options,
        failure=failure,
    )
    prometheus.embedding_ended(
        model=model,
        host=host,
        outcome="failed" if failure is not None else "complete",
        prompt_eval_count=result.timings.prompt_eval_count if result and result.timings else None,
        queue_wait=reservation.queue_wait_seconds,
    )
    if failure is not None:
        raise failure
    assert result is not None
    return result


async def _release(reservation: Any) -> None:
    try:
        await reservation.__aexit__(None, None, None)
    except Exception:  # a slot that cannot be released comes back when its lease expires
        logger.warning("could not release a gate slot", exc_info=True)


async def _record_safely(user_id: int, conversation_id: UUID, **fields: Any) -> None:
    """The record is the bookkeeping of an answer already had: a database that is away
    costs the record (logged), never the client's vectors."""
    try:
        await database.run(_record, user_id, conversation_id, **fields)
    except Exception:
        logger.warning("could not record an embedding request", exc_info=True)


def _record(
    user_id: int,
    conversation_id: UUID,
    *,
    source: str,
    model: str,
    host: str,
    timings: Timings | None,
    queue_wait: float,
    in_flight: int,
    options: dict[str, Any],
    failure: OllamaError | None,
) -> None:
    now = timezone.now()
    figures: dict[str, Any] = {}
    if timings is not None:
        figures = {
            "total_duration": timings.total_duration,
            "load_duration": timings.load_duration,
            "prompt_eval_count": timings.prompt_eval_count,
            "eval_count": 0,
        }
    elif failure is None:  # nothing to embed: Ollama loaded the model and counted nothing
        figures = {"prompt_eval_count": 0, "eval_count": 0}
    status = Message.Status.COMPLETE if failure is None else Message.Status.FAILED
    errors = {"error_code": failure.code, "error": failure.detail[:2000]} if failure else {}
    with transaction.atomic():
        Conversation.objects.create(
            pk=conversation_id,
            owner_id=user_id,
            title=f"embeddings: {model}"[:200],
            model=model[:200],
            source=source,
        )
        reply = Message.objects.create(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            status=status,
            content="",
            model=model[:200],
            options=options,
            ollama_host=host,
            queue_wait=queue_wait,
            in_flight_at_start=in_flight,
            completed_at=now,
            **figures,
            **errors,
        )
        Conversation.objects.filter(pk=conversation_id).update(current_leaf=reply)
