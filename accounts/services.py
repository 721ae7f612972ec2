from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from accounts.models import normalize_email


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
            if password:
                user.set_password(password)
            user.save()
            return BootstrapResult(email=email, created=False, password_generated=None)
        generated = None
        if not password:
            generated = password = secrets.token_urlsafe(18)
        User.objects.create_superuser(email, password)
        return BootstrapResult(email=email, created=True, password_generated=generated)
