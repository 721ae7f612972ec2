from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import sockets, tokens
from accounts.authentication import hash_secret, new_key
from accounts.models import MAX_API_KEYS_PER_USER, ApiKey, normalize_email
from core.errors import AppError

logger = logging.getLogger(__name__)

#: How long telling the sockets may take before the change goes on without it (the sockets
#: still check the account on their next action frame).
NOTIFY_TIMEOUT_SECONDS = 5.0


class EmailTaken(Exception):
    pass


def register_user(*, email: str, password: str, display_name: str = ""):
    User = get_user_model()
    email = normalize_email(email)
    try:
        with transaction.atomic():
            if User.objects.filter(email__iexact=email).exists():
                raise EmailTaken(email)
            return User.objects.create_user(email, password, display_name=display_name)
    except IntegrityError:
        # A concurrent registration won the race; the database constraint decided.
        raise EmailTaken(email) from None


@dataclass(frozen=True)
class BootstrapResult:
    email: str
    created: bool
    password_generated: str | None


def bootstrap_admin(*, email: str, password: str | None) -> BootstrapResult:
    """Create the first admin, or make an existing account an admin with the given password.

    With no password, an existing admin is left untouched and a new one gets a generated
    password that the caller shows once.
    """
    User = get_user_model()
    email = normalize_email(email)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(email__iexact=email).first()
        if user is not None:
            user.is_staff = True
            user.is_superuser = True
            user.is_active = True
            if password and not user.check_password(password):
                # Only a new password: setting the same one again (every start of the
                # container) would end the admin's sessions and tokens.
                user.set_password(password)
            user.save()
            return BootstrapResult(email=email, created=False, password_generated=None)
        generated = None
        if not password:
            generated = password = secrets.token_urlsafe(18)
        User.objects.create_superuser(email, password)
        return BootstrapResult(email=email, created=True, password_generated=generated)


# --------------------------------------------------------------------------- ending sessions


def credentials_changed(user: Any, reason: str) -> None:
    """The account's password changed, or it was deactivated (`reason`): what it had opened
    ends. Its refresh tokens are blacklisted now (in the caller's transaction); its access
    tokens no longer pass (a password change changes their claim, a deactivation fails the
    active check); its session sockets and token sockets are told once the change commits."""
    tokens.blacklist_refresh_tokens(user.pk)
    user_id = user.pk
    transaction.on_commit(lambda: tell_sockets(user_id, reason=reason), robust=True)


def tell_sockets(user_id: int, *, reason: str, session_key: str | None = None) -> bool:
    """Tell the open sockets of an account to check it again (`session_key`: only those of
    that session, which ended). Never raises; True if sent."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return False
        message = sockets.account_changed(reason, session_key)

        async def send() -> None:
            await asyncio.wait_for(
                layer.group_send(sockets.user_group(user_id), message), NOTIFY_TIMEOUT_SECONDS
            )

        async_to_sync(send)()
        return True
    except Exception as exc:  # the change stands; the next action frame of a socket checks
        logger.warning("could not tell the sockets of user %s (%s): %s", user_id, reason, exc)
        return False


# --------------------------------------------------------------------------- API keys


class TooManyKeys(AppError):
    code = "too_many_keys"
    status = 400


def api_key_not_found() -> AppError:
    return AppError("not_found", "No such API key.", 404)


def create_api_key(user: Any, *, name: str, scope: str, expires=None) -> tuple[ApiKey, str]:
    """A new key of `user` and the whole key, which is never stored (only its secret's hash)
    and so can be shown this once. At most MAX_API_KEYS_PER_USER live keys per user."""
    User = get_user_model()
    with transaction.atomic():
        # One creation at a time per user, so that two at once cannot pass the cap together.
        list(User.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))
        if ApiKey.objects.filter(user=user, revoked__isnull=True).count() >= MAX_API_KEYS_PER_USER:
            raise TooManyKeys(
                detail=f"You already have {MAX_API_KEYS_PER_USER} API keys, the most allowed: "
                "revoke one you no longer use first.",
                extra={"max_keys": MAX_API_KEYS_PER_USER},
            )
        for attempt in range(3):
            key_id, secret, raw = new_key()
            try:
                with transaction.atomic():
                    key = ApiKey.objects.create(
                        user=user,
                        name=name,
                        key_id=key_id,
                        secret_hash=hash_secret(secret),
                        scope=scope,
                        expires=expires,
                    )
                return key, raw
            except IntegrityError:  # an id already taken (62**12 ids: practically never)
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


def revoke_api_key(user: Any, key_pk: int) -> ApiKey:
    """Revoke one of the user's live keys (404 for anyone else's, or one already revoked);
    the sockets it opened are closed once that commits."""
    with transaction.atomic():
        key = (
            ApiKey.objects.select_for_update()
            .filter(pk=key_pk, user=user, revoked__isnull=True)
            .first()
        )
        if key is None:
            raise api_key_not_found()
        key.revoked = timezone.now()
        key.save(update_fields=["revoked"])
        user_id = key.user_id
        transaction.on_commit(lambda: tell_sockets(user_id, reason="key_revoked"), robust=True)
    return key


def revoke_api_keys(keys) -> int:
    """Revoke the live keys of a queryset (the admin's action); the number revoked."""
    with transaction.atomic():
        live = keys.filter(revoked__isnull=True)
        user_ids = set(live.values_list("user_id", flat=True))
        count = live.update(revoked=timezone.now())
        for user_id in user_ids:
            transaction.on_commit(functools.partial(_keys_revoked, user_id), robust=True)
    return count


def _keys_revoked(user_id: int) -> None:
    tell_sockets(user_id, reason="key_revoked")
