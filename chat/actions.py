"""Regenerate, edit and continue: generations about a message already in the conversation.

Each action checks what it acts on (the user's own message, of the right kind, in a
conversation without a running generation) and plans the generation with the branch above
that message as the history; generate() then runs it like any chat. Nothing is overwritten:
a regenerated reply and an edited question are new siblings, and a continued reply keeps its
text and goes on from its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from chat import lifecycle, limits, selectors, services
from chat.context import PastMessage
from chat.errors import ChatRequestError
from chat.models import Conversation, Message
from config import database
from core.ollama import Timings

Kind = Literal["regenerate", "edit", "continue"]

# A reply worth continuing: it stopped before its end, or the model ran out of tokens.
CONTINUABLE = {Message.Status.CANCELLED, Message.Status.FAILED, Message.Status.INTERRUPTED}


@dataclass
class ActionInput:
    kind: Kind
    message_id: int
    text: str | None = None  # edit: the new question
    attachments: list[UUID] | None = None  # edit: None keeps the original's
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Loaded:
    conversation: Conversation
    target: Message
    question: Message | None  # the user message the reply answers (regenerate, continue)
    history: list[PastMessage]  # the branch above the question
    exchanges: int | None
    weight: int  # the user's turns in the gate's queue, read with the limits


def message_not_found() -> ChatRequestError:
    return ChatRequestError("not_found", "Message not found.", 404)


def _load(user_id: int, action: ActionInput) -> _Loaded:
    weight = limits.check_now(user_id)
    target = (
        Message.objects.select_related("conversation")
        .filter(pk=action.message_id, conversation__owner_id=user_id)
        .first()
    )
    if target is None:
        raise message_not_found()
    conversation = target.conversation
    if conversation.generating_since is not None and not services.claimable(conversation.pk):
        raise services.generation_running()
    wrong_kind = {
        "regenerate": target.role != Message.Role.ASSISTANT,
        "continue": target.role != Message.Role.ASSISTANT,
        "edit": target.role != Message.Role.USER,
    }[action.kind]
    if wrong_kind:
        expected = "a user message" if action.kind == "edit" else "a reply"
        raise ChatRequestError(
            "wrong_message_role", f"Only {expected} can be {_verb(action.kind)}.", 400
        )
    if action.kind == "continue" and not (
        target.status in CONTINUABLE or target.done_reason == "length"
    ):
        raise ChatRequestError(
            "nothing_to_continue",
            "Only a reply that stopped, failed, was interrupted or ran out of tokens can be "
            "continued.",
            400,
        )
    tree = selectors.tree_of(conversation.pk)
    # Regenerate and continue answer the reply's question again; an edit replaces its target.
    above = target.parent_id if action.kind == "edit" else None
    question = None
    if action.kind != "edit":
        question = (
            Message.objects.filter(pk=target.parent_id).first()
            if target.parent_id is not None
            else None
        )
        if question is None or question.role != Message.Role.USER:
            raise ChatRequestError(
                "no_question", "This reply answers no saved question of yours.", 400
            )
        above = question.parent_id
    rows = Message.objects.filter(pk__in=tree.path_to(above)).order_by("id")
    history = services.past(list(rows))
    return _Loaded(
        conversation, target, question, history, services.exchanges_cap(conversation), weight
    )


def _verb(kind: Kind) -> str:
    return {"regenerate": "regenerated", "edit": "edited", "continue": "continued"}[kind]


async def prepare_action(user_id: int, action: ActionInput) -> services.GenerationPlan:
    """Check an action and plan its generation (see the module's docstring)."""
    if action.kind == "edit":
        services.check_message_text(action.text or "")
    lifecycle.check_accepting()
    loaded = await database.run(_load, user_id, action)
    target, question = loaded.target, loaded.question
    if action.kind == "edit":
        attachments = (
            action.attachments
            if action.attachments is not None
            else _upload_ids(target.attachments)
        )
        return await services.plan_generation(
            user_id,
            loaded.conversation,
            loaded.history,
            loaded.exchanges,
            question=action.text or "",
            attachment_ids=attachments,
            model=action.model,
            system=None,
            options=action.options,
            parent_id=target.parent_id,
            weight=loaded.weight,
        )
    assert question is not None
    fields: dict[str, Any] = {
        "save_user_message": False,
        "user_message_id": question.pk,
    }
    if action.kind == "continue":
        fields.update(
            continue_from=target.pk,
            prefix=target.content,
            continuing=services.past([target])[0],
            prior=Timings(
                total_duration=target.total_duration,
                load_duration=target.load_duration,
                prompt_eval_count=target.prompt_eval_count,
                prompt_eval_duration=target.prompt_eval_duration,
                eval_count=target.eval_count,
                eval_duration=target.eval_duration,
            ),
            prior_ttft=target.time_to_first_token,
        )
    return await services.plan_generation(
        user_id,
        loaded.conversation,
        loaded.history,
        loaded.exchanges,
        question=question.content,
        attachment_ids=_upload_ids(question.attachments),
        # A continuation goes on with the model that wrote the reply.
        model=target.model if action.kind == "continue" else action.model,
        system=None,
        options=action.options,
        parent_id=question.parent_id,
        weight=loaded.weight,
        **fields,
    )


def _upload_ids(records: list[dict[str, Any]]) -> list[UUID]:
    """The uploads a message was sent with; an imported message's records name none (an
    import never links a file to an upload: chat.imports)."""
    return [UUID(record["id"]) for record in records if record.get("id")]
