"""Who is on a WebSocket: the one place that authenticates sockets.

A socket is authenticated by the session cookie (AuthMiddlewareStack in config/asgi.py), an
`Authorization: Bearer <access token>` header, or, for clients that cannot set headers, a first
frame `{"type": "auth", "token": ...}`; never a token in the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

#: Application close code for "not authenticated" (4401 echoes HTTP 401: retrying without
#: logging in again is pointless), and for "no auth frame in time".
CLOSE_UNAUTHENTICATED = 4401
CLOSE_AUTH_TIMEOUT = 4408


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the handshake says: a user (with the token's expiry, if a token), a refusal, or
    neither (the socket may still authenticate with its first frame)."""

    user: Any = None
    expires: int | None = None
    refused: bool = False


def _user_for_token(raw: str) -> tuple[Any, int | None]:
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]  # the stubs want bytes; str is read
    except TokenError:
        return None, None
    user = (
        get_user_model()
        .objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM), is_active=True)
        .first()
    )
    return user, token.get("exp")


async def user_for_token(raw: Any) -> tuple[Any, int | None]:
    """The active user of a valid access token and the token's expiry, or (None, None)."""
    if not isinstance(raw, str) or not raw:
        return None, None
    return await sync_to_async(_user_for_token)(raw)


def bearer_token(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


async def handshake(scope: dict[str, Any]) -> Handshake:
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return Handshake(user=user)
    bearer = bearer_token(scope)
    if bearer is None:
        # A page whose session expired is told now, not after the auth frame's timeout.
        has_session = bool(scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME))
        return Handshake(refused=has_session)
    user, expires = await user_for_token(bearer)
    return Handshake(user=user, expires=expires) if user is not None else Handshake(refused=True)
