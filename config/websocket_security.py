"""The WebSocket origin check: a browser's socket must come from the site's own origin.

Browsers always send ``Origin`` on a WebSocket handshake and attach the site's cookies,
whichever page opened the socket (cross-site WebSocket hijacking). So a handshake with an
``Origin`` is accepted only from the origin the request came to, compared as a whole
(scheme, host and port), or from one of ``CSRF_TRUSTED_ORIGINS``: the check Django's CSRF
middleware makes for a form POST (``CsrfViewMiddleware._origin_verified``). The site's own
origin is the ``Host`` header (validated against ``ALLOWED_HOSTS``) with ``https`` when the
socket is ``wss`` or ``SECURE_PROXY_SSL_HEADER`` says so, else ``http``. Another port or
scheme of the same host is another origin: ``http://127.0.0.1:9999`` may not open a socket
on ``http://127.0.0.1:8000``.

Native and mobile clients often send no ``Origin``; they authenticate with a bearer token that
a foreign page cannot read, so a handshake without ``Origin`` is allowed. A handshake without
``Host`` is no browser's either (browsers always send it); its ``Origin`` can only be checked
by host name against ``ALLOWED_HOSTS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain

__all__ = ["BrowserOriginValidator", "origin_allowed"]


class _Handshake(HttpRequest):
    """The handshake as far as ``HttpRequest.get_host()`` and ``.scheme`` need it."""

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        self._secure = scope.get("scheme") in {"https", "wss"}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin1").upper()
            if "_" in name:  # `X_Forwarded_Proto` must not pass for `X-Forwarded-Proto`
                continue
            key = "HTTP_" + name.replace("-", "_")
            value = raw_value.decode("latin1")
            self.META[key] = f"{self.META[key]},{value}" if key in self.META else value

    def _get_scheme(self) -> str:
        return "https" if self._secure else "http"


def _trusted(origin: str) -> bool:
    """``origin`` is one of CSRF_TRUSTED_ORIGINS (``https://*.example.com`` included)."""
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        pattern = urlsplit(trusted)
        if parsed.scheme == pattern.scheme and is_same_domain(
            parsed.netloc, pattern.netloc[pattern.netloc.index("*") + 1 :]
        ):
            return True
    return False


def origin_allowed(scope: dict[str, Any], origin: str | None) -> bool:
    """May a WebSocket handshake (``scope``) with this ``Origin`` header value go on?"""
    if origin is None:
        return True  # no browser: a native client with a bearer token
    request = _Handshake(scope)
    if "HTTP_HOST" not in request.META:
        # No browser either; all its Origin can be compared with is ALLOWED_HOSTS.
        validator = OriginValidator(None, settings.ALLOWED_HOSTS)
        try:
            return _trusted(origin) or validator.validate_origin(urlsplit(origin))
        except ValueError:  # e.g. a port out of range
            return False
    try:
        own_origin = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        own_origin = None
    return origin == own_origin or _trusted(origin)


class BrowserOriginValidator:
    """ASGI middleware: refuse a WebSocket whose ``Origin`` is not the site's (see above)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("BrowserOriginValidator only guards WebSocket connections")
        origins = [
            value.decode("latin1") for name, value in scope.get("headers", []) if name == b"origin"
        ]
        if len(origins) <= 1 and origin_allowed(scope, origins[0] if origins else None):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
