"""`/v1/...`: OpenAI's API (models, chat completions, completions, embeddings) over the
gateway's own gate, limits, budgets and records.

Nothing is forwarded to Ollama's own `/v1`: each request is translated to Ollama's native API
(chat.openai_format) and runs as the Ollama-compatible proxy's do, through
chat.services.generate() (recorded as a conversation of source "openai") or
chat.embeddings.embed(). Authentication is a bearer credential (accounts.authentication), as
on `/ollama/`. Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}` with
the status of the gateway's error contract (and `Retry-After` when waiting helps).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken

from accounts.authentication import Needs, aauthenticate_bearer, bearer_error, scope_refusal
from chat import cancels, embeddings, hosts, services
from chat import openai_format as fmt
from chat.events import Cancelled, Done, Event, Failed, Token
from chat.models import Conversation
from config.exceptions import app_error_of
from config.parsers import json_object_of
from core.errors import AppError
from core.streaming import batches

logger = logging.getLogger(__name__)

SSE = "text/event-stream"


def openai_error(error: AppError) -> JsonResponse:
    response = JsonResponse(fmt.error_body(error), status=error.status)
    if error.retry_after_seconds is not None:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


def _error(code: str, message: str, status: int) -> JsonResponse:
    return openai_error(AppError(code, message, status))


def endpoint(*methods: str, json_body: bool = False, needs: Needs = "chat"):
    """A /v1 endpoint behind a bearer credential (a JWT access token or a personal API key;
    never cookies, so no CSRF exposure). `needs`: what a key's scope must allow."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return _error(
                    "method_not_allowed", f"Method {request.method} is not allowed here.", 405
                )
            try:
                found = await aauthenticate_bearer(request)
            except (AuthenticationFailed, InvalidToken) as exc:
                # 401, or 429 for an address that failed with API keys too often
                error = bearer_error(exc)
                return _unauthenticated(error) if error.status == 401 else openai_error(error)
            except Exception as exc:  # the database or the cache (throttle) is away
                return openai_error(app_error_of(exc))
            if found is None:
                return _unauthenticated(
                    AppError(
                        "not_authenticated",
                        "You didn't provide an API key: send `Authorization: Bearer <key>` (a "
                        "personal API key of the gateway, or an access token).",
                        401,
                    )
                )
            user, credential = found
            refusal = scope_refusal(credential, needs)
            if refusal is not None:
                return openai_error(refusal)
            request.user = user
            if json_body:
                try:
                    kwargs["body"] = json_object_of(request)
                except AppError as error:
                    return openai_error(error)
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:  # OpenAI's shape even for a database or Redis failure
                if not isinstance(exc, AppError):
                    logger.warning("OpenAI API request failed: %s", exc, exc_info=True)
                return openai_error(app_error_of(exc))

        return wrapper

    return decorate


def _unauthenticated(error: AppError) -> JsonResponse:
    response = openai_error(error)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


# --------------------------------------------------------------------------- models


async def _models() -> dict[str, dict[str, Any]]:
    listing = await hosts.all_models(fresh=True)
    hosts.raise_if_all_failed(listing)
    seen: dict[str, dict[str, Any]] = {}
    for entry in listing:
        for model in entry.models:
            seen.setdefault(model.name, fmt.model_object(model.name, model.modified_at))
    return seen


@endpoint("GET", needs="read")
async def models(request):
    return JsonResponse({"object": "list", "data": list((await _models()).values())})


@endpoint("GET", needs="read")
async def model(request, name: str):
    listed = await _models()
    found = listed.get(name) or listed.get(hosts.normalize_model(name))
    if found is None:
        return openai_error(
            AppError(
                "model_not_found",
                f"The model `{name}` does not exist on this gateway.",
                404,
                extra={"param": "model"},
            )
        )
    return JsonResponse(found)


# --------------------------------------------------------------------------- embeddings


@endpoint("POST", json_body=True)
async def create_embeddings(request, body: dict[str, Any]):
    parsed = fmt.embedding_request(body)
    result = await embeddings.embed(
        request.user.pk,
        parsed.model,
        parsed.inputs,
        source=Conversation.Source.OPENAI,
        staff=request.user.is_staff,
        dimensions=parsed.dimensions,
        indexed=parsed.indexed,
    )
    count = result.prompt_eval_count or 0
    return JsonResponse(
        {
            "object": "list",
            "data": fmt.embedding_data(result.embeddings, parsed.encoding_format),
            "model": parsed.model,
            "usage": {"prompt_tokens": count, "total_tokens": count},
        }
    )


# --------------------------------------------------------------------------- generations


@endpoint("POST", json_body=True)
async def chat_completions(request, body: dict[str, Any]):
    return await _generation(request, "chat", fmt.chat_request(body))


@endpoint("POST", json_body=True)
async def completions(request, body: dict[str, Any]):
    return await _generation(request, "generate", fmt.completion_request(body))


def _stopped(event: Cancelled) -> AppError:
    """A generation stopped by someone else (staff): the request was valid; someone ended it."""
    return AppError(event.code, event.detail, 409)


async def _generation(
    request, endpoint_name: Literal["chat", "generate"], parsed: fmt.Request
) -> HttpResponse | StreamingHttpResponse:
    plan = await services.prepare_ollama_request(
        request.user.pk,
        endpoint_name,
        parsed.native,
        staff=request.user.is_staff,
        source=Conversation.Source.OPENAI,
    )
    events = services.generate(plan)
    # Held until the first token (or the end), so that a refusal or a missing model keeps
    # its status rather than arriving as an error event after a 200.
    head: list[Event] = []
    async for event in events:
        head.append(event)
        if isinstance(event, Token | Done | Failed):
            break
    first = head[-1] if head else None
    if isinstance(first, Failed):
        await events.aclose()
        raise first.error
    if isinstance(first, Cancelled) and first.code:  # stopped by staff while queued
        raise _stopped(first)

    render = Renderer(endpoint_name, parsed.model, parsed.include_usage)
    if not parsed.stream:
        everything = [*head, *[e async for e in events]]
        final = services.final_event(everything)
        if isinstance(final, Failed):
            raise final.error
        if isinstance(final, Cancelled) and final.code:
            raise _stopped(final)
        assert isinstance(final, Done)
        return JsonResponse(render.whole(everything, final))
    response = StreamingHttpResponse(_sse(render, head, _adopted(plan, events)), content_type=SSE)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _adopted(
    plan: services.GenerationPlan, events: AsyncIterator[Event]
) -> AsyncIterator[Event]:
    """As chat.proxy's: the rest of a generation whose head this view's task read; from here
    on the response's task (in batches()) is the one a stop must cancel."""
    cancels.adopt(plan)
    try:
        async for event in events:
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:  # closed early (the client went away): generate() saves now
            await aclose()


def _data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _sse(render: Renderer, head: list[Event], events: AsyncIterator[Event]):
    # Closing this iterator (the client went away) cancels the generation: see batches().
    try:
        yield b"".join(_data(p) for p in [*render.start(), *render.events(head)])
        async for batch in batches(events):
            payloads = render.events(batch)
            if payloads:
                yield b"".join(_data(p) for p in payloads)
    except Exception as exc:  # generate() reports its own failures; this is a bug of ours
        logger.exception("OpenAI stream failed")
        yield _data(fmt.error_body(app_error_of(exc)))
    yield b"data: [DONE]\n\n"


class Renderer:
    """generate()'s events as OpenAI's objects: `chat.completion(.chunk)` for chat,
    `text_completion` for completions."""

    def __init__(self, kind: Literal["chat", "generate"], model: str, include_usage: bool):
        self.kind = kind
        self.model = model
        self.include_usage = include_usage
        self.id = fmt.new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())
        self.tool_calls = 0  # tool calls streamed so far (their `index`)

    def _object(self, streaming: bool) -> str:
        if self.kind == "generate":
            return "text_completion"
        return "chat.completion.chunk" if streaming else "chat.completion"

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": self._object(True),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _choice(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if self.kind == "generate":
            return {
                "index": 0,
                "text": delta.get("content", ""),
                "logprobs": None,
                "finish_reason": finish,
            }
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    # -- streaming

    def start(self) -> list[dict[str, Any]]:
        """Chat's first chunk names the role; a completion's stream starts with its text."""
        if self.kind != "chat":
            return []
        return [self._chunk([self._choice({"role": "assistant", "content": ""})])]

    def events(self, events: list[Event]) -> list[dict[str, Any]]:
        """The chunks of a batch of events; consecutive text is written as one chunk."""
        out: list[dict[str, Any]] = []
        pending = ""
        for event in events:
            delta = self._delta(event) if isinstance(event, Token) else None
            if delta is not None and set(delta) == {"content"}:
                pending += delta["content"]
                continue
            if pending:
                out.append(self._chunk([self._choice({"content": pending})]))
                pending = ""
            if delta:
                out.append(self._chunk([self._choice(delta)]))
            elif not isinstance(event, Token):
                out.extend(self._end(event))
        if pending:
            out.append(self._chunk([self._choice({"content": pending})]))
        return out

    def _delta(self, event: Token) -> dict[str, Any]:
        raw = event.raw
        source = raw.get("message") if self.kind == "chat" else raw
        source = source if isinstance(source, dict) else {}
        delta: dict[str, Any] = {}
        if event.text:
            delta["content"] = event.text
        if self.kind == "chat" and isinstance(source.get("thinking"), str) and source["thinking"]:
            delta["reasoning"] = source["thinking"]
        calls = source.get("tool_calls") if self.kind == "chat" else None
        if isinstance(calls, list) and calls:
            delta["tool_calls"] = fmt.tool_calls_out(calls, self.tool_calls, indexed=True)
            self.tool_calls += len(delta["tool_calls"])
        return delta

    def _end(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, Done):
            out = []
            message = event.raw.get("message") if self.kind == "chat" else None
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            if isinstance(calls, list) and calls:  # tool calls in the final chunk itself
                tools = fmt.tool_calls_out(calls, self.tool_calls, indexed=True)
                self.tool_calls += len(tools)
                out.append(self._chunk([self._choice({"tool_calls": tools})]))
            finish = fmt.finish_reason(event.raw.get("done_reason"), self.tool_calls > 0)
            out.append(self._chunk([self._choice({}, finish)]))
            if self.include_usage:
                out.append({**self._chunk([]), "usage": fmt.usage(event.raw)})
            return out
        if isinstance(event, Failed):
            return [fmt.error_body(event.error)]
        if isinstance(event, Cancelled) and event.interrupted:
            detail = "The server is restarting; the reply so far is kept."
            return [fmt.error_body(AppError("interrupted", detail, 503))]
        if isinstance(event, Cancelled) and event.code:
            return [fmt.error_body(_stopped(event))]
        return []

    # -- whole

    def whole(self, events: list[Event], done: Done) -> dict[str, Any]:
        raws = [e.raw for e in events if isinstance(e, Token)] + [done.raw]
        if self.kind == "generate":
            choice: dict[str, Any] = {
                "index": 0,
                "text": done.content,
                "logprobs": None,
                "finish_reason": fmt.finish_reason(done.raw.get("done_reason"), False),
            }
        else:
            messages: list[dict[str, Any]] = [
                m for m in (r.get("message") for r in raws) if isinstance(m, dict)
            ]
            calls = [c for m in messages for c in (m.get("tool_calls") or [])]
            thinking = "".join(m.get("thinking") or "" for m in messages)
            tool_calls = fmt.tool_calls_out(calls, indexed=False)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": done.content,
                "refusal": None,
            }
            if tool_calls:
                message["tool_calls"] = tool_calls
            if thinking:
                message["reasoning"] = thinking
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": fmt.finish_reason(done.raw.get("done_reason"), bool(tool_calls)),
            }
        return {
            "id": self.id,
            "object": self._object(False),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": fmt.usage(done.raw),
        }
