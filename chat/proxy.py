"""`/ollama/api/...`: Ollama's own API behind a bearer token, so Ollama clients work as they are.

Errors come back in Ollama's shape (`{"error": "..."}`) so that clients raise their usual
errors. Chat and generate requests go through chat.services.generate() like every other
transport: they wait at the gate and are recorded as conversations of source "ollama".
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken

from accounts.authentication import Needs, aauthenticate_bearer, scope_refusal
from chat import cancels, embeddings, hosts, services
from chat.events import Cancelled, Done, Event, Failed, Token
from chat.models import Conversation
from config.exceptions import app_error_of
from config.parsers import json_object_of
from core import fastjson
from core.errors import AppError
from core.ollama import OllamaError
from core.streaming import batches

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def ollama_error(message: str, status: int, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def ollama_error_of(error: AppError) -> JsonResponse:
    """The one error contract in Ollama's shape: `{"error": detail}` with the status."""
    return ollama_error(error.detail, error.status, error.retry_after_seconds)


def endpoint(*methods: str, json_body: bool = False, needs: Needs | None = None):
    """An Ollama endpoint behind a bearer credential. `needs`: what an API key's scope must
    allow (accounts.authentication.check_scope); by default "read" for GET and HEAD, "chat"
    for the rest."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return ollama_error("method not allowed", 405)
            try:
                # Bearer credentials only: Ollama clients send headers, never cookies, so no
                # CSRF exposure. (user, credential): a JWT access token or an API key.
                found = await aauthenticate_bearer(request)
            except (AuthenticationFailed, InvalidToken) as exc:
                # 401, or 429 for an address that failed with API keys too often
                status = getattr(exc, "status_code", 401)
                prefix = "unauthorized: " if status == 401 else ""
                return ollama_error(f"{prefix}{_detail(exc)}", status, getattr(exc, "wait", None))
            except Exception as exc:  # the database or the cache (throttle) is away
                return ollama_error_of(app_error_of(exc))
            if found is None:
                response = ollama_error("unauthorized: a bearer token is required", 401)
                response["WWW-Authenticate"] = 'Bearer realm="api"'
                return response
            user, credential = found
            refusal = scope_refusal(
                credential, needs or ("read" if request.method in ("GET", "HEAD") else "chat")
            )
            if refusal is not None:
                return ollama_error_of(refusal)
            request.user = user
            if json_body:
                try:
                    kwargs["body"] = json_object_of(request, empty_is_object=True)
                except AppError as error:
                    return ollama_error_of(error)
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:  # Ollama's shape even for a database or Redis failure
                if not isinstance(exc, AppError):
                    logger.warning("Ollama proxy request failed: %s", exc, exc_info=True)
                return ollama_error_of(app_error_of(exc))

        return wrapper

    return decorate


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", exc)
    if isinstance(detail, dict):
        detail = detail.get("detail", detail)
    return str(detail)


@endpoint("GET", "HEAD")
async def root(request):
    return HttpResponse("Ollama is running", content_type="text/plain; charset=utf-8")


@endpoint("GET")
async def version(request):
    errors: list[OllamaError] = []
    for host in hosts.hosts():
        try:
            return JsonResponse({"version": await hosts.client_for(host).version()})
        except OllamaError as exc:
            errors.append(exc)
    raise errors[0]


@endpoint("GET")
async def tags(request):
    listing = await hosts.all_models(fresh=True)
    hosts.raise_if_all_failed(listing)
    seen: dict[str, dict] = {}
    for entry in listing:
        for model in entry.models:
            seen.setdefault(model.name, model.raw)
    return JsonResponse({"models": list(seen.values())})


@endpoint("GET")
async def ps(request):
    running = await hosts.running_by_host()
    return JsonResponse({"models": [m for models in running.values() for m in models]})


@endpoint("POST", json_body=True, needs="read")
async def show(request, body: dict[str, Any]):
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model:
        return ollama_error("model is required", 400)
    host = await hosts.pick_host(model)
    async with hosts.client_for(host).stream_raw("POST", "/api/show", body) as upstream:
        content = await upstream.aread()
        return HttpResponse(content, status=upstream.status_code, content_type="application/json")


@endpoint("POST", json_body=True)
async def chat(request, body: dict[str, Any]):
    return await _generation(request, "chat", body)


@endpoint("POST", json_body=True)
async def generate(request, body: dict[str, Any]):
    return await _generation(request, "generate", body)


def _validate(endpoint_name: str, body: dict[str, Any]) -> str | None:
    """The body's shape; chat.services checks its lengths, options and keep_alive."""
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        return "model is required"
    if "options" in body and not isinstance(body["options"], dict | None):
        return "options must be an object"
    if endpoint_name == "chat":
        messages = body.get("messages", [])
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content", ""), str)
            for m in messages
        ):
            return "messages must be a list of {role, content} objects"
        if not messages:
            return "messages must not be empty (loading a model: use POST /api/models/load/)"
    else:
        if not isinstance(body.get("prompt", ""), str) or not body.get("prompt"):
            return "prompt is required (loading a model: use POST /api/models/load/)"
        for key in ("system", "suffix"):
            if not isinstance(body.get(key) or "", str):
                return f"{key} must be a string"
    return None


async def _generation(request, endpoint_name: Literal["chat", "generate"], body: dict[str, Any]):
    problem = _validate(endpoint_name, body)
    if problem:
        return ollama_error(problem, 400)
    plan = await services.prepare_ollama_request(
        request.user.pk, endpoint_name, body, staff=request.user.is_staff
    )
    events = services.generate(plan)
    # Ollama answers an error before the first byte with a status; hold the response until
    # the first token (or the end) so that a refusal or a missing model keeps its status.
    head: list[Event] = []
    async for event in events:
        head.append(event)
        if isinstance(event, Token | Done | Failed):
            break
    first = head[-1] if head else None
    if isinstance(first, Failed):
        await events.aclose()
        return ollama_error_of(first.error)
    if isinstance(first, Cancelled) and first.code:  # stopped by staff while queued
        return ollama_error(first.detail, 409)

    if body.get("stream", True) is False:
        everything = [*head, *[e async for e in events]]
        final = services.final_event(everything)
        if isinstance(final, Failed):
            return ollama_error_of(final.error)
        if isinstance(final, Cancelled) and final.code:  # stopped by staff
            return ollama_error(final.detail, 409)
        assert isinstance(final, Done)
        chunks = [e.raw for e in everything if isinstance(e, Token)]
        return JsonResponse(_whole_reply(endpoint_name, final, chunks))
    return StreamingHttpResponse(_ndjson(head, _adopted(plan, events)), content_type=NDJSON)


async def _adopted(
    plan: services.GenerationPlan, events: AsyncIterator[Event]
) -> AsyncIterator[Event]:
    """The rest of a generation whose head this view's task read: from here on the task that
    iterates it (the response's, in batches()) is the one a stop must cancel."""
    cancels.adopt(plan)
    try:
        async for event in events:
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:  # closed early (the client went away): generate() saves now
            await aclose()


def _whole_reply(endpoint_name: str, done: Done, chunks: list[dict]) -> dict[str, Any]:
    """Ollama's non-streaming reply: the final chunk with everything the chunks carried."""
    reply = dict(done.raw)
    parts = [*chunks, done.raw]
    if endpoint_name == "chat":
        messages = [c.get("message") or {} for c in parts]
        message = dict(reply.get("message") or {"role": "assistant"})
        message["content"] = done.content
        thinking = "".join(m.get("thinking") or "" for m in messages)
        tool_calls = [call for m in messages for call in m.get("tool_calls") or []]
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        reply["message"] = message
    else:
        reply["response"] = done.content
        thinking = "".join(c.get("thinking") or "" for c in parts)
        if thinking:
            reply["thinking"] = thinking
    return reply


async def _ndjson(head: list[Event], events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    # Ollama's chunks are kept one per line; lines that queued up are written together.
    yield b"".join(line for line in map(_line, head) if line)
    async for batch in batches(events):
        yield b"".join(line for line in map(_line, batch) if line)


def _line(event: Event) -> bytes | None:
    if isinstance(event, Token | Done):
        return fastjson.dumps(event.raw) + b"\n"
    if isinstance(event, Failed):
        # Mid-stream, Ollama keeps the 200 and writes an error line without `done`.
        return (json.dumps({"error": event.detail}) + "\n").encode()
    if isinstance(event, Cancelled) and event.code:  # stopped by staff: said like an error
        return (json.dumps({"error": event.detail}) + "\n").encode()
    return None


# --------------------------------------------------------------------------- embeddings
#
# Through the gate like a generation and recorded without their content (chat.embeddings).


def _embed_problem(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        return "model is required"
    if not isinstance(body.get("options"), dict | None):
        return "options must be an object"
    if not isinstance(body.get("truncate"), bool | None):
        return "truncate must be a boolean"
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 0
    ):
        return "dimensions must be a positive integer"
    return None


@endpoint("POST", json_body=True)
async def embed(request, body: dict[str, Any]):
    problem = _embed_problem(body)
    if problem:
        return ollama_error(problem, 400)
    value = body.get("input")
    if isinstance(value, str):
        inputs = [value] if value else []
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        inputs = value
    elif value is None:
        inputs = []
    else:
        return ollama_error("invalid input type", 400)
    result = await embeddings.embed(
        request.user.pk,
        body["model"],
        inputs,
        source=Conversation.Source.OLLAMA,
        staff=request.user.is_staff,
        truncate=body.get("truncate"),
        dimensions=body.get("dimensions") or None,
        options=body.get("options"),
        keep_alive=body.get("keep_alive"),
        indexed=isinstance(value, list),
    )
    return JsonResponse(result.raw)  # Ollama's own answer: model, embeddings and the figures


@endpoint("POST", json_body=True)
async def embeddings_v1(request, body: dict[str, Any]):
    """The older /api/embeddings: one `prompt`, answered `{"embedding": [...]}` (from /api/embed,
    so its vector is normalised like the newer endpoint's)."""
    problem = _embed_problem(body)
    prompt = body.get("prompt") or ""
    if problem is None and not isinstance(prompt, str):
        problem = "prompt must be a string"
    if problem:
        return ollama_error(problem, 400)
    result = await embeddings.embed(
        request.user.pk,
        body["model"],
        [prompt] if prompt else [],
        source=Conversation.Source.OLLAMA,
        staff=request.user.is_staff,
        options=body.get("options"),
        keep_alive=body.get("keep_alive"),
        field="prompt",
        indexed=False,
    )
    return JsonResponse({"embedding": result.embeddings[0] if result.embeddings else []})


# --------------------------------------------------------------------------- model administration
#
# Models are shared by every user of the gateway: pulling, deleting, creating, copying and
# pushing them are for staff (with a JWT: an API key may not, whatever its scope). Anyone else
# gets Ollama's error shape with a 403.


def _staff_only(request, action: str) -> JsonResponse | None:
    if request.user.is_staff:
        return None
    return ollama_error(
        f"forbidden: {action} models is for staff only (the models are shared by every user "
        "of the gateway); ask an administrator",
        403,
    )


def _forget_models() -> None:
    hosts.forget_models()
    hosts.forget_context_lengths()


async def _relay(
    host: str, method: str, path: str, body: dict[str, Any]
) -> HttpResponse | StreamingHttpResponse:
    """Ollama's answer to `method path` on `host`, as it is (a stream stays a stream); its
    error statuses come back in Ollama's shape through the endpoint. The cached model lists
    are forgotten once it has answered."""
    upstream = await hosts.client_for(host).stream_raw(method, path, body)
    if upstream.is_ndjson:
        return StreamingHttpResponse(
            _relayed(upstream), status=upstream.status_code, content_type=upstream.content_type
        )
    try:
        content = await upstream.aread()
    finally:
        _forget_models()
    return HttpResponse(content, status=upstream.status_code, content_type=upstream.content_type)


async def _relayed(upstream: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_bytes():
            yield chunk
    except OllamaError as exc:  # the connection broke mid-stream: said as Ollama says it
        yield (json.dumps({"error": exc.detail}) + "\n").encode()
    finally:
        await upstream.aclose()
        _forget_models()


def _model_of(body: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


@endpoint("POST", json_body=True, needs="login")
async def pull(request, body: dict[str, Any]):
    """Onto the first host, as `POST /api/models/pull/` without a `host`."""
    if refused := _staff_only(request, "pulling"):
        return refused
    if _model_of(body, "model", "name") is None:
        return ollama_error("model is required", 400)
    return await _relay(hosts.hosts()[0], "POST", "/api/pull", body)


@endpoint("DELETE", json_body=True, needs="login")
async def delete(request, body: dict[str, Any]):
    """From every host that has it, as `DELETE /api/models/<name>/`."""
    if refused := _staff_only(request, "deleting"):
        return refused
    name = _model_of(body, "model", "name")
    if name is None:
        return ollama_error("model is required", 400)
    deleted_from, listing = await hosts.delete_everywhere(name)
    if not deleted_from:
        hosts.raise_if_all_failed(listing)
        return ollama_error(f'model "{name}" not found', 404)
    return HttpResponse(status=200)


@endpoint("POST", json_body=True, needs="login")
async def create(request, body: dict[str, Any]):
    """On a host that has the model it starts `from` (else the first host)."""
    if refused := _staff_only(request, "creating"):
        return refused
    if _model_of(body, "model", "name") is None:
        return ollama_error("model is required", 400)
    source = _model_of(body, "from")
    having = (await hosts.hosts_having(source))[0] if source else []
    return await _relay((having or hosts.hosts())[0], "POST", "/api/create", body)


@endpoint("POST", json_body=True, needs="login")
async def copy(request, body: dict[str, Any]):
    """On every host that has the source, so that the copy is wherever the model is."""
    if refused := _staff_only(request, "copying"):
        return refused
    source, destination = _model_of(body, "source"), _model_of(body, "destination")
    if source is None or destination is None:
        return ollama_error("source and destination are required", 400)
    having, listing = await hosts.hosts_having(source)
    if not having:
        hosts.raise_if_all_failed(listing)
        return ollama_error(f'model "{source}" not found', 404)
    try:
        for host in having:
            async with hosts.client_for(host).stream_raw("POST", "/api/copy", body) as upstream:
                await upstream.aread()
    finally:
        _forget_models()
    return HttpResponse(status=200)


@endpoint("POST", json_body=True, needs="login")
async def push(request, body: dict[str, Any]):
    """From the least busy host that has the model."""
    if refused := _staff_only(request, "pushing"):
        return refused
    name = _model_of(body, "model", "name")
    if name is None:
        return ollama_error("model is required", 400)
    return await _relay(await hosts.pick_host(name), "POST", "/api/push", body)
