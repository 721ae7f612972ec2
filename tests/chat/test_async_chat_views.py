"""The REST chat views as coroutines (config/async_api_view.py, issue 16): over ASGI a chat
request makes one hop to a thread, for DRF's authentication, checks and input, and answers
refusals exactly as DRF's sync APIView did (status, body, headers)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from asgiref.sync import AsyncToSync, SyncToAsync, iscoroutinefunction, sync_to_async
from django.db import connections
from django.test import AsyncClient
from django.urls import resolve

from accounts import services as account_services
from chat import api, limits
from config import database
from config.async_api_view import AsyncAPIView

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CHAT, SIMPLE, STREAM = "/api/chat/", "/api/chat/simple/", "/api/chat/stream/"
JSON = "application/json"
# What Django itself sends to a thread under ASGI, for any view: its security, CSRF and
# X-Frame-Options hooks (config/inline_middleware.py keeps them), the request signals, and
# the rendering and closing of a response (DRF's `Response` renders through a thread).
DJANGOS_OWN = (
    "SecurityMiddleware.",
    "CsrfViewMiddleware.",
    "XFrameOptionsMiddleware.",
    "Signal.asend.",
    "SimpleTemplateResponse.render",
    "HttpResponseBase.close",
    "log_response",
)


class Hops:
    """Every `sync_to_async` and `async_to_sync` call, and every call run by
    `config.database` on a thread (with the thread's name), by the function's name."""

    def __init__(self) -> None:
        self.to_thread: list[str] = []
        self.to_loop: list[str] = []
        self.on_db_threads: list[tuple[str, str]] = []

    def not_djangos(self) -> list[str]:
        return [name for name in self.to_thread if not name.startswith(DJANGOS_OWN)]

    def clear(self) -> None:
        self.to_thread.clear()
        self.to_loop.clear()
        self.on_db_threads.clear()


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", repr(fn))


@pytest.fixture
def hops(monkeypatch) -> Hops:
    seen = Hops()
    to_thread, to_loop, call = SyncToAsync.__call__, AsyncToSync.__call__, database._call

    async def counted_to_thread(self, *args, **kwargs):
        seen.to_thread.append(_name(self.func))
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        seen.to_loop.append(_name(self.awaitable))
        return to_loop(self, *args, **kwargs)

    def counted_call(fn, *args, **kwargs):
        seen.on_db_threads.append((_name(fn), threading.current_thread().name))
        return call(fn, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(AsyncToSync, "__call__", counted_to_loop)
    monkeypatch.setattr(database, "_call", counted_call)
    return seen


@pytest.fixture(autouse=True)
async def _close_the_sync_thread_connections():
    """AsyncClient runs Django's sync hooks on asgiref's one shared thread: its database
    connection is closed after the test, or PostgreSQL's test database could not be dropped."""
    yield
    await sync_to_async(connections.close_all, thread_sensitive=True)()


def bearer(tokens: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access']}"}


async def answer(response) -> tuple[int, Any]:
    return response.status_code, response.json()


# --------------------------------------------------------------------------- the views


@pytest.mark.parametrize(
    ("path", "view", "initkwargs"),
    [
        (CHAT, api.ChatView, {}),
        (SIMPLE, api.SimpleChatView, {}),
        (STREAM, api.StreamChatView, {}),
        ("/api/messages/1/regenerate/", api.MessageActionView, {"kind": "regenerate"}),
        ("/api/messages/1/edit/", api.MessageActionView, {"kind": "edit"}),
        ("/api/messages/1/continue/", api.MessageActionView, {"kind": "continue"}),
    ],
)
async def test_the_chat_views_are_coroutine_functions_marked_as_drf_marks_them(
    path, view, initkwargs
):
    func = resolve(path).func
    assert iscoroutinefunction(func)
    assert issubclass(view, AsyncAPIView)
    assert func.cls is view  # type: ignore[attr-defined]
    assert func.initkwargs == initkwargs  # type: ignore[attr-defined]
    assert func.csrf_exempt is True  # type: ignore[attr-defined]  # DRF checks CSRF itself


# --------------------------------------------------------------------------- one hop


async def test_an_sse_chat_makes_one_hop_to_a_thread(user, tokens, ollama, hops):
    ollama.script(tokens=["Hel", "lo"])
    response = await AsyncClient().post(
        STREAM, {"message": "Hi"}, content_type=JSON, headers=bearer(tokens)
    )
    assert response.status_code == 200
    body = b"".join([chunk async for chunk in response.streaming_content])  # type: ignore[attr-defined]
    assert b'"content":"Hel' in body and body.endswith(b"data: [DONE]\n\n")
    # No thread for the view, no `async_to_sync` back to the loop: only Django's own hops...
    assert hops.not_djangos() == [], hops.to_thread
    assert hops.to_loop == []
    # ...and one for DRF (authentication, checks, input), on the database threads, first.
    admitted = [where for name, where in hops.on_db_threads if name == "AsyncAPIView._admit"]
    assert len(admitted) == 1 and admitted[0].startswith("db"), hops.on_db_threads
    assert hops.on_db_threads[0][0] == "AsyncAPIView._admit"


async def test_a_json_chat_makes_one_hop_to_a_thread(user, tokens, ollama, hops):
    ollama.script(tokens=["Hel", "lo"])
    response = await AsyncClient().post(
        CHAT, {"message": "Hi"}, content_type=JSON, headers=bearer(tokens)
    )
    assert response.status_code == 200, response.content
    assert response.json()["response"] == "Hello"
    assert hops.not_djangos() == [], hops.to_thread
    assert hops.to_loop == []
    assert [n for n, _ in hops.on_db_threads].count("AsyncAPIView._admit") == 1


async def test_a_refusal_by_drf_is_answered_in_the_same_hop(hops):
    response = await AsyncClient().post(STREAM, {"message": "Hi"}, content_type=JSON)
    assert await answer(response) == (
        401,
        {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"},
    )
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert [name for name, _ in hops.on_db_threads] == ["AsyncAPIView._admit"]
    assert hops.not_djangos() == [] and hops.to_loop == []


# --------------------------------------------------------------------------- the contract


async def test_refusals_of_authentication_and_scope(user, tokens):
    client = AsyncClient()
    bad = await client.post(
        CHAT, {"message": "Hi"}, content_type=JSON, headers={"authorization": "Bearer nonsense"}
    )
    status, body = await answer(bad)
    assert status == 401 and body["code"] == "token_not_valid", body
    assert body["detail"] == "Given token not valid for any token type"
    assert bad["WWW-Authenticate"] == 'Bearer realm="api"'

    _, raw = await sync_to_async(account_services.create_api_key)(user, name="r", scope="read")
    scoped = await client.post(
        STREAM, {"message": "Hi"}, content_type=JSON, headers={"authorization": f"Bearer {raw}"}
    )
    assert await answer(scoped) == (
        403,
        {
            "detail": "This API key's scope is 'read'; this request needs scope 'chat'.",
            "required_scope": "chat",
            "code": "insufficient_scope",
        },
    )


async def test_an_address_throttled_for_bad_keys(user, settings):
    settings.LOGIN_RATE_PER_IP = "1/min"
    client = AsyncClient()
    bad_key = {"authorization": "Bearer og_" + "a" * 12 + "_" + "b" * 40}
    first = await client.post(STREAM, {"message": "Hi"}, content_type=JSON, headers=bad_key)
    assert await answer(first) == (401, {"detail": "Unknown API key.", "code": "invalid_api_key"})
    throttled = await client.post(STREAM, {"message": "Hi"}, content_type=JSON, headers=bad_key)
    wait = int(throttled["Retry-After"])
    assert wait > 0
    assert await answer(throttled) == (
        429,
        {
            "detail": f"Too many failed API key attempts from your address; retry in {wait} "
            "seconds.",
            "code": "throttled",
        },
    )
    assert throttled["WWW-Authenticate"] == 'Bearer realm="api"'


async def test_the_chat_rate_limit_refused_by_the_service(
    user, tokens, ollama, settings, monkeypatch
):
    class Clock:
        now = 1_000_000 * 60 + 59.9  # 0.1 s before a window boundary, as in test_limits

        def time(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(limits, "time", clock)
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    client = AsyncClient()
    ollama.script(tokens=["ok"])
    first = await client.post(CHAT, {"message": "one"}, content_type=JSON, headers=bearer(tokens))
    assert first.status_code == 200, first.content
    clock.now += 0.2  # the next window has begun
    refused = await client.post(
        STREAM, {"message": "two"}, content_type=JSON, headers=bearer(tokens)
    )
    assert await answer(refused) == (
        429,
        {
            "detail": "You can send 1 messages a minute; try again in 60 s.",
            "code": "rate_limited",
            "retry_after": 60,
        },
    )
    assert refused["Retry-After"] == "60"


async def test_bad_input(user, tokens):
    client = AsyncClient()
    malformed = await client.post(CHAT, b"{", content_type=JSON, headers=bearer(tokens))
    status, body = await answer(malformed)
    assert status == 400 and body["code"] == "parse_error", body
    assert body["detail"].startswith("JSON parse error - ")

    missing = await client.post(STREAM, {}, content_type=JSON, headers=bearer(tokens))
    assert await answer(missing) == (
        400,
        {
            "detail": "message: This field is required.",
            "code": "invalid_input",
            "message": ["This field is required."],
        },
    )

    empty = await client.post(SIMPLE, {"message": " "}, content_type=JSON, headers=bearer(tokens))
    assert await answer(empty) == (
        400,
        {"detail": "The message is empty.", "code": "empty_message"},
    )

    unknown = await client.post(
        "/api/messages/999999/regenerate/?stream=1", {}, content_type=JSON, headers=bearer(tokens)
    )
    status, body = await answer(unknown)
    assert status == 404 and body["code"] == "not_found", body


async def test_a_session_post_without_its_csrf_token(user):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    refused = await client.post(STREAM, {"message": "Hi"}, content_type=JSON)
    assert await answer(refused) == (
        403,
        {"detail": "CSRF Failed: CSRF cookie not set.", "code": "permission_denied"},
    )


async def test_other_methods_go_through_drfs_dispatch(user, tokens):
    client = AsyncClient()
    get = await client.get(CHAT, headers=bearer(tokens))
    assert await answer(get) == (
        405,
        {"detail": 'Method "GET" not allowed.', "code": "method_not_allowed"},
    )
    assert get["Allow"] == "POST, OPTIONS"

    options = await client.options(STREAM, headers=bearer(tokens))
    status, body = await answer(options)
    assert status == 200 and body["name"] == "Stream Chat", body
    assert "application/json" in body["parses"]

    # The browsable API, for a browser signed in to the site.
    await client.aforce_login(user)
    page = await client.get(CHAT, headers={"accept": "text/html"})
    assert page.status_code == 405
    assert page["Content-Type"].startswith("text/html")
    assert b"HTTP 405 Method Not Allowed" in page.content
    assert b'<form action="/api/chat/" method="POST"' in page.content, page.content.decode()
