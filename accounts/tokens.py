"""Which JWTs still hold: the account must exist, be active and keep the password they were
issued under.

SimpleJWT's CHECK_REVOKE_TOKEN (settings.SIMPLE_JWT) puts a digest of the password hash in
every token (the claim REVOKE_TOKEN_CLAIM) and DRF's JWTAuthentication, which the REST API and
the /ollama/ proxy use, refuses an access token whose digest is not the account's. The other
places a token is read check it here: the refresh and verify endpoints (SimpleJWT's own check
neither the password nor a deleted account, which made refresh answer 500) and the
WebSocket authentication (accounts.sockets).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

ACCOUNT_GONE = "The account of this token no longer exists."
ACCOUNT_INACTIVE = "The account of this token is deactivated."
PASSWORD_CHANGED = "The password was changed since this token was issued; log in again."  # noqa: S105


def issued_under_current_password(token: Token, user: Any) -> bool:
    if not jwt_settings.CHECK_REVOKE_TOKEN:
        return True
    claim = token.get(jwt_settings.REVOKE_TOKEN_CLAIM)
    return isinstance(claim, str) and constant_time_compare(
        claim, get_md5_hash_password(user.password)
    )


def user_of(token: Token) -> Any:
    """The account `token` was issued to, while the token may still act for it.

    Raises TokenError (401 `token_not_valid` on the token endpoints) when the account was
    deleted or deactivated, or its password changed since.
    """
    try:
        user = (
            get_user_model()
            .objects.filter(**{jwt_settings.USER_ID_FIELD: token[jwt_settings.USER_ID_CLAIM]})
            .first()
        )
    except (KeyError, ValueError, TypeError):  # no user claim, or not an id
        raise TokenError("The token names no account.") from None
    if user is None:
        raise TokenError(ACCOUNT_GONE)
    if not user.is_active:
        raise TokenError(ACCOUNT_INACTIVE)
    if not issued_under_current_password(token, user):
        raise TokenError(PASSWORD_CHANGED)
    return user


def blacklist_refresh_tokens(user_id: int) -> int:
    """Blacklist every unexpired refresh token of an account; the number blacklisted.

    Every refresh token the API hands out (login, rotation) is recorded as outstanding.
    """
    outstanding = OutstandingToken.objects.filter(
        user_id=user_id, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    ).values_list("pk", flat=True)
    created = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token_id=pk) for pk in outstanding], ignore_conflicts=True
    )
    return len(created)
