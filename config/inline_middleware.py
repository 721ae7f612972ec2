"""Django's middleware without a thread hop per hook (issue 16).

Under ASGI, Django runs a `MiddlewareMixin` middleware's `process_request` and
`process_response` each through `sync_to_async`: a thread switch per hook per request, about
120 µs of CPU each, some 15 per chat message with the chain of config/settings.py. The hooks
of the middleware below only compute (cookies, headers, lazy objects): here they run on the
event loop, in the same order with the same effects. What may do I/O still goes to a thread,
as before: saving a modified session, storing flash messages.

Django's SecurityMiddleware, CsrfViewMiddleware and XFrameOptionsMiddleware stay as they are:
`check --deploy` recognises them by their dotted path only. In sync mode (the test client)
these are Django's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware.common import CommonMiddleware
from django.utils.deprecation import MiddlewareMixin


class InlineHooks(MiddlewareMixin):
    """`MiddlewareMixin.__acall__` with the hooks called inline, unless `request_blocks` or
    `response_blocks` says that this request's hook may do I/O."""

    def request_blocks(self, request: HttpRequest) -> bool:
        return False

    def response_blocks(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> Any:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.request_blocks(request):
                response = await sync_to_async(process_request, thread_sensitive=True)(request)
            else:
                response = process_request(request)
        if response is None:
            get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response  # type: ignore[assignment]
            response = await get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.response_blocks(request, response):
                response = await sync_to_async(process_response, thread_sensitive=True)(
                    request, response
                )
            else:
                response = process_response(request, response)
        return response


class InlineCommonMiddleware(InlineHooks, CommonMiddleware):
    pass


class InlineCSPMiddleware(InlineHooks, CSPMiddleware):
    """The nonce is made lazily, the header computed from the settings."""


class InlineAuthenticationMiddleware(InlineHooks, AuthenticationMiddleware):
    """`request.user` is a lazy object: nothing is read until something asks."""


class InlineSessionMiddleware(InlineHooks, SessionMiddleware):
    """The session store is made lazily; it is saved (on a thread) only when modified."""

    def response_blocks(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (
            getattr(session, "modified", True) or settings.SESSION_SAVE_EVERY_REQUEST
        )


class InlineMessageMiddleware(InlineHooks, MessageMiddleware):
    """The storage is made lazily; storing messages (cookie or session) only when used."""

    def response_blocks(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (
            getattr(storage, "used", True) or getattr(storage, "added_new", True)
        )
