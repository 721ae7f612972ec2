"""Who is on a WebSocket: the one place that authenticates sockets, and checks them again.

A socket is authenticated by the session cookie (AuthMiddlewareStack in config/asgi.py), an
`Authorization: Bearer <access token or API key>` header, or, for clients that cannot set
headers, a first frame `{"type": "auth", "token": ...}`; never a token in the URL. A key's scope
travels with the socket (accounts.authentication.check_scope(credential, ...)).

What authenticated it is kept (a `Credential`: the session, the access token or the API key) and
checked
again (`still_valid`) on every action frame and whenever the account changes: each socket
joins its user's group (`user_group`), which is told (`account_changed` messages, sent by
accounts.services) on a logout, a password change, a deactivation or a deletion. A socket
whose credential no longer holds is closed with CLOSE_UNAUTHENTICATED.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    load_backend,
)
from django.utils.crypto import constant_time_compare
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts import authentication, tokens
from accounts.throttling import client_ident
from config import database

#: Application close code for "not authenticated" (4401 echoes HTTP 401: retrying without
#: logging in again is pointless): a refused handshake or auth frame, an expired token, and a
#: session that ended (logout, password change, deactivation) while the socket was open.
CLOSE_UNAUTHENTICATED = 4401
#: No auth frame in time.
CLOSE_AUTH_TIMEOUT = 4408

#: The channel-layer message type that tells a user's sockets to check their credential.
ACCOUNT_CHANGED = "account.changed"


@dataclass(frozen=True, slots=True)
class Credential:
    """What authenticated a socket: a session (its key), an access token, or an API key (its
    id, scope and expiry)."""

    user_id: int
    session_key: str | None = None
    token: AccessToken | None = None
    api_key_id: int | None = None
    key_scope: str | None = None
    key_expires: int | None = None

    @property
    def expires(self) -> int | None:
        if self.token is not None:
            return self.token.get("exp")
        return self.key_expires


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the handshake says: a user (with its credential), a refusal, or neither (the
    socket may still authenticate with its first frame)."""

    user: Any = None
    credential: Credential | None = None
    refused: bool = False

    @property
    def expires(self) -> int | None:
        return self.credential.expires if self.credential is not None else None


def _user_for_key(raw: str, ident: str) -> tuple[Any, Credential | None]:
    try:
        user, key = authentication.authenticate_key(raw, ident)
    except AuthenticationFailed:  # a bad key, or an IP throttled for bad keys
        return None, None
    expires = int(key.expires.timestamp()) if key.expires is not None else None
    return user, Credential(
        user_id=user.pk, api_key_id=key.pk, key_scope=key.scope, key_expires=expires
    )


def _user_for_token(raw: str, ident: str) -> tuple[Any, Credential | None]:
    if authentication.is_api_key(raw):
        return _user_for_key(raw, ident)
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]  # the stubs want bytes; str is read
        user = tokens.user_of(token)
    except TokenError:
        return None, None
    return user, Credential(user_id=user.pk, token=token)


async def user_for_token(
    raw: Any, scope: dict[str, Any] | None = None
) -> tuple[Any, Credential | None]:
    """The user of a valid access token (its account active, its password unchanged) or API
    key (unrevoked, unexpired, its account active) and the socket's credential, or (None,
    None). `scope`, the socket's ASGI scope, gives the client IP that failed keys are
    throttled by."""
    if not isinstance(raw, str) or not raw:
        return None, None
    return await database.run(_user_for_token, raw, socket_client(scope or {}))


def socket_client(scope: dict[str, Any]) -> str:
    """The client IP of a socket, by the rule of the HTTP throttles (NUM_PROXIES)."""
    meta: dict[str, str] = {}
    client = scope.get("client")
    if client:
        meta["REMOTE_ADDR"] = str(client[0])
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            meta["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
    return client_ident(meta)


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
        session = scope.get("session")
        key = getattr(session, "session_key", None) if session is not None else None
        return Handshake(user=user, credential=Credential(user_id=user.pk, session_key=key))
    bearer = bearer_token(scope)
    if bearer is None:
        # A page whose session expired is told now, not after the auth frame's timeout.
        has_session = bool(scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME))
        return Handshake(refused=has_session)
    user, credential = await user_for_token(bearer, scope)
    if user is None:
        return Handshake(refused=True)
    return Handshake(user=user, credential=credential)


# --------------------------------------------------------------------------- checking again


def _session_holds(credential: Credential) -> bool:
    """Django's own session check (django.contrib.auth.get_user), read-only: the session
    exists and is unexpired, names this user through a configured backend that still returns
    the user (ModelBackend: an active one), and carries the current session auth hash."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(credential.session_key)
    data = store.load()  # {} when missing or expired
    backend_path = data.get(BACKEND_SESSION_KEY)
    if str(data.get(SESSION_KEY)) != str(credential.user_id):
        return False
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = load_backend(backend_path).get_user(credential.user_id)
    if user is None:
        return False
    session_hash = data.get(HASH_SESSION_KEY)
    if not isinstance(session_hash, str) or not session_hash:
        return False
    return constant_time_compare(session_hash, user.get_session_auth_hash()) or any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )


def _token_holds(credential: Credential) -> bool:
    assert credential.token is not None
    expires = credential.expires
    if expires is not None and expires <= time.time():
        return False
    try:
        tokens.user_of(credential.token)
    except TokenError:
        return False
    return True


def _holds(credential: Credential) -> bool:
    if credential.session_key is not None:
        return _session_holds(credential)
    if credential.token is not None:
        return _token_holds(credential)
    if credential.api_key_id is not None:
        return authentication.key_holds(credential.api_key_id)
    return False


async def still_valid(credential: Credential | None) -> bool:
    """Whether the credential a socket was authenticated with still holds: one or two lookups
    by primary key (the user; and the session, for a session socket)."""
    if credential is None:
        return False
    return await database.run(_holds, credential)


def user_group(user_id: int) -> str:
    """The channel-layer group of a user's sockets."""
    return f"accounts.user.{user_id}"


def account_changed(reason: str, session_key: str | None = None) -> dict[str, Any]:
    """The message told to a user's sockets: check again, or (with `session_key`) that
    session ended."""
    return {"type": ACCOUNT_CHANGED, "reason": reason, "session": session_key}


async def ended_by(credential: Credential | None, message: dict[str, Any]) -> bool:
    """Whether an `account_changed` message ends the socket of `credential`."""
    if credential is None:
        return False
    ended_session = message.get("session")
    if ended_session is not None:  # a logout: only that session's sockets end
        return ended_session == credential.session_key
    return not await still_valid(credential)
