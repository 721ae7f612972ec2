"""Who a bearer credential belongs to, for every transport that takes one: the REST API (DRF's
authentication classes), the Ollama-compatible proxy, the OpenAI-compatible API and the
WebSockets.

A bearer credential is a JWT access token (SimpleJWT) or a personal API key (`og_…`,
accounts.models.ApiKey); `authenticate_bearer()` is the one place that decides, so that a key is
accepted everywhere a token is. What a credential may do is decided here too, once:
`check_scope(credential, needs)` with `needs` one of

- "read": safe methods (GET, HEAD, OPTIONS) of the REST API, model lists, /ws/monitoring/;
- "chat": chat and models: /api/chat/, conversations, message actions, /ollama/ generation,
  /v1/ writes, chat frames of /ws/chat/;
- "login": key and account management (never with a key: a JWT or the web session).

A JWT or a session may do everything; a key of scope `read` only "read", a key of scope `chat`
"read" and "chat". A refusal is `InsufficientScope` (403 `insufficient_scope`, naming the scope
needed), an application error every transport renders.

For another transport (the /v1/ API): `found = authenticate_bearer(request)` (None: no bearer;
raises AuthenticationFailed, whose `status_code` is 401, or 429 with `wait` seconds for an IP
that failed too often: `bearer_error(exc)` is it as an AppError), then
`check_scope(found[1], needs="chat")`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import timedelta
from typing import Any, Literal

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.models import API_KEY_PREFIX, KEY_ID_LENGTH, ApiKey
from accounts.throttling import ApiKeyFailureThrottle, client_ident
from config import database
from core.errors import AppError


def authenticate_bearer(request: HttpRequest) -> tuple[Any, Any] | None:
    """(user, credential) for the request's `Authorization: Bearer …`, None without one. The
    credential is the ApiKey of a key, the AccessToken of a JWT.

    Raises rest_framework's AuthenticationFailed (or SimpleJWT's InvalidToken, a subclass) for
    a credential that is present but not valid: `InvalidApiKey` (401 `invalid_api_key`) for a
    bad key, `ApiKeysThrottled` (429 `throttled`, `wait` seconds) while the client's IP has
    failed too often."""
    raw = bearer_of(request)
    if raw is not None and is_api_key(raw):
        return authenticate_key(raw, client_ident(request.META))
    return JWTAuthentication().authenticate(request)  # type: ignore[arg-type]


async def aauthenticate_bearer(request: HttpRequest) -> tuple[Any, Any] | None:
    """`authenticate_bearer` for async views: one hop to a database thread, which hands its
    connection back after the call (config.database), so none is held while a reply streams
    and no second hop is needed to let it go (issue 16)."""
    return await database.run(authenticate_bearer, request)


# --------------------------------------------------------------------------- API keys

#: Characters of a key's id and secret: letters and digits only, so that a double click
#: selects a whole key and no URL or shell quoting is ever needed.
KEY_ALPHABET = string.ascii_letters + string.digits
#: 40 characters of 62: 238 bits, far beyond guessing (a throttle stands in front anyway).
SECRET_LENGTH = 40
#: `last_used` is written at most this often per key: no write per request.
LAST_USED_EVERY = timedelta(seconds=60)
UNKNOWN_KEY = "Unknown API key."
_DUMMY_HASH = "0" * 64

Needs = Literal["read", "chat", "login"]


class InvalidApiKey(exceptions.AuthenticationFailed):
    """401 `invalid_api_key`: unknown, revoked, expired, or its account deactivated."""

    default_code = "invalid_api_key"

    def __init__(self, detail: str = UNKNOWN_KEY) -> None:
        super().__init__(detail, code=self.default_code)


class ApiKeysThrottled(exceptions.AuthenticationFailed):
    """429 `throttled` (`Retry-After`): the client's IP failed with keys too often. An
    AuthenticationFailed, so that whoever catches bad credentials catches this one too."""

    status_code = 429
    default_code = "throttled"

    def __init__(self, wait: int) -> None:
        super().__init__(
            f"Too many failed API key attempts from your address; retry in {wait} seconds.",
            code=self.default_code,
        )
        self.wait = wait


class InsufficientScope(AppError):
    """403 `insufficient_scope`: the key's scope does not cover the request."""

    code = "insufficient_scope"
    status = 403

    def __init__(self, needs: Needs, scope: str | None) -> None:
        if needs == "login":
            detail = (
                "API keys cannot do this (managing keys or the account, uploads, staff "
                "actions): use a JWT access token or the web session."
            )
        else:
            detail = f"This API key's scope is {scope!r}; this request needs scope {needs!r}."
        super().__init__(detail=detail, extra={"required_scope": needs})
        self.needs = needs


def bearer_of(request: Any) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, None without one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def is_api_key(raw: str) -> bool:
    """Whether a bearer credential is meant as an API key (a JWT never starts so)."""
    return raw.startswith(API_KEY_PREFIX)


def hash_secret(secret: str) -> str:
    # A single SHA-256 is right for a random high-entropy secret (no dictionary to try);
    # a slow password hash would only cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(key_id, secret, the whole key `og_<key_id>_<secret>`), from `secrets`."""
    key_id = "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = "".join(secrets.choice(KEY_ALPHABET) for _ in range(SECRET_LENGTH))
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}_{secret}"


def _parts(raw: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, None otherwise."""
    body = raw[len(API_KEY_PREFIX) :]
    key_id, secret = body[:KEY_ID_LENGTH], body[KEY_ID_LENGTH + 1 :]
    if body[KEY_ID_LENGTH : KEY_ID_LENGTH + 1] != "_" or len(secret) != SECRET_LENGTH:
        return None
    if len(key_id) != KEY_ID_LENGTH or not all(c in KEY_ALPHABET for c in key_id + secret):
        return None
    return key_id, secret


def _verified_key(raw: str) -> ApiKey:
    """The key `raw` names, checked: one query (the key with its user)."""
    parts = _parts(raw)
    if parts is None:
        raise InvalidApiKey(UNKNOWN_KEY)
    key_id, secret = parts
    key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    # Compared in constant time, and compared even for an unknown id.
    matches = hmac.compare_digest(
        key.secret_hash if key is not None else _DUMMY_HASH, hash_secret(secret)
    )
    if key is None or not matches:
        raise InvalidApiKey(UNKNOWN_KEY)
    if key.revoked is not None:
        raise InvalidApiKey("This API key was revoked.")
    if key.is_expired(timezone.now()):
        assert key.expires is not None
        raise InvalidApiKey(f"This API key expired at {key.expires.isoformat()}.")
    if not key.user.is_active:
        raise InvalidApiKey("The account of this API key is deactivated.")
    return key


def _note_use(key: ApiKey) -> None:
    """`last_used`, written at most once a LAST_USED_EVERY per key: the row just read says
    whether a write is due, and the conditional UPDATE lets only one process of several
    write it."""
    now = timezone.now()
    if key.last_used is not None and now - key.last_used < LAST_USED_EVERY:
        return
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used__isnull=True) | Q(last_used__lte=now - LAST_USED_EVERY)
    ).update(last_used=now)
    key.last_used = now


def authenticate_key(raw: str, ident: str) -> tuple[Any, ApiKey]:
    """(user, key) of an API key used from the client `ident` (its IP). Raises InvalidApiKey,
    or ApiKeysThrottled while that IP has failed LOGIN_RATE_PER_IP times."""
    throttle = ApiKeyFailureThrottle(ident)
    wait = throttle.wait_seconds()
    if wait is not None:
        raise ApiKeysThrottled(wait)
    try:
        key = _verified_key(raw)
    except InvalidApiKey:
        throttle.record_failure()
        raise
    _note_use(key)
    return key.user, key


def key_holds(api_key_id: int) -> bool:
    """Whether a key still works (not revoked, unexpired, its account active): one query."""
    return (
        ApiKey.objects.filter(pk=api_key_id, revoked__isnull=True, user__is_active=True)
        .filter(Q(expires__isnull=True) | Q(expires__gt=timezone.now()))
        .exists()
    )


def bearer_error(exc: exceptions.APIException) -> AppError:
    """What authenticate_bearer() raised, as the application error other transports render
    (status, code, detail, retry_after)."""
    detail: Any = exc.detail
    if isinstance(detail, dict):
        text = detail.get("detail", "")
        code = detail.get("code") or getattr(text, "code", None)
    else:
        text, code = detail, getattr(detail, "code", None)
    return AppError(
        str(code or exc.default_code),
        str(text),
        exc.status_code,
        retry_after=getattr(exc, "wait", None),
    )


# --------------------------------------------------------------------------- scopes


def key_scope(credential: Any) -> str | None:
    """The scope of an API key credential (an ApiKey, or a socket's Credential of a key);
    None for a JWT or a session, which may do everything."""
    if isinstance(credential, ApiKey):
        return credential.scope
    return getattr(credential, "key_scope", None)


def allows(credential: Any, needs: Needs) -> bool:
    scope = key_scope(credential)
    if scope is None or needs == "read":
        return True
    return needs == "chat" and scope == ApiKey.Scope.CHAT


def scope_refusal(credential: Any, needs: Needs) -> InsufficientScope | None:
    """The refusal of a credential that may not do what `needs` names, None if it may."""
    if allows(credential, needs):
        return None
    return InsufficientScope(needs, key_scope(credential))


def check_scope(credential: Any, needs: Needs = "chat") -> None:
    """Raise InsufficientScope unless `credential` may do what `needs` names."""
    refusal = scope_refusal(credential, needs)
    if refusal is not None:
        raise refusal


#: REST paths a key of scope `chat` may write to; every other write needs a login.
CHAT_PATHS = ("/api/chat/", "/api/conversations/", "/api/messages/")
#: Under /api/auth/ a key may only read the account.
KEY_READABLE_ACCOUNT_PATHS = frozenset({"/api/auth/me/"})


def rest_needs(method: str, path: str) -> Needs:
    """What a REST request needs of a key: safe methods "read", chat writes "chat", the
    rest of the writes and everything of /api/auth/ (keys, logout...) "login"."""
    if path.startswith("/api/auth/"):
        readable = method in SAFE_METHODS and path in KEY_READABLE_ACCOUNT_PATHS
        return "read" if readable else "login"
    if method in SAFE_METHODS:
        return "read"
    return "chat" if path.startswith(CHAT_PATHS) else "login"


class ApiKeyAuthentication(BaseAuthentication):
    """API keys on the REST API (first of DEFAULT_AUTHENTICATION_CLASSES): any other bearer,
    a JWT, is left to JWTAuthentication. The key's scope is checked here, for every view
    whatever its permission classes: 403 `insufficient_scope`."""

    def authenticate(self, request):
        raw = bearer_of(request)
        if raw is None or not is_api_key(raw):
            return None
        user, key = authenticate_key(raw, client_ident(request.META))
        try:
            check_scope(key, rest_needs(request.method, request.path_info))
        except InsufficientScope as exc:
            # A DRF exception, so that DRF marks the request unauthenticated before rendering.
            raise exceptions.PermissionDenied(
                {"detail": exc.detail, "required_scope": exc.needs}, code=exc.code
            ) from None
        return user, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
