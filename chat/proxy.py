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

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken

from chat import hosts, services
from chat.events import Done, Event, Failed, Token
from config import database
from config.exceptions import app_error_of
from core import safejson
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


def _authenticate(request):
    # Bearer tokens only: Ollama clients send headers, never cookies, so no CSRF exposure.
    result = JWTAuthentication().authenticate(request)
    return result[0] if result else None


def endpoint(*methods: str, json_body: bool = False):
    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return ollama_error("method not allowed", 405)
            try:
                user = await sync_to_async(_authenticate)(request)
            except (AuthenticationFailed, InvalidToken) as exc:
                return ollama_error(f"unauthorized: {_detail(exc)}", 401)
            if user is None:
                response = ollama_error("unauthorized: a bearer token is required", 401)
                response["WWW-Authenticate"] = 'Bearer realm="api"'
                return response
            request.user = user
            # Generations save on their own threads; the request's connection goes back now.
            await sync_to_async(database.release_connections)()
            if json_body:
                try:
                    body = safejson.loads(request.body or b"{}")
                except RequestDataTooBig:
                    return ollama_error("the request body is too large", 413)
                except ValueError as exc:  # malformed, too deep, a huge number, not UTF-8
                    return ollama_error(f"invalid JSON in request body: {exc}", 400)
                if not isinstance(body, dict):
                    return ollama_error("the request body must be a JSON object", 400)
                kwargs["body"] = body
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


@endpoint("POST", json_body=True)
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

    if body.get("stream", True) is False:
        everything = [*head, *[e async for e in events]]
        final = services.final_event(everything)
        if isinstance(final, Failed):
            return ollama_error_of(final.error)
        assert isinstance(final, Done)
        chunks = [e.raw for e in everything if isinstance(e, Token)]
        return JsonResponse(_whole_reply(endpoint_name, final, chunks))
    return StreamingHttpResponse(_ndjson(head, events), content_type=NDJSON)


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
        return (json.dumps(event.raw, separators=(",", ":")) + "\n").encode()
    if isinstance(event, Failed):
        # Mid-stream, Ollama keeps the 200 and writes an error line without `done`.
        return (json.dumps({"error": event.detail}) + "\n").encode()
    return None
