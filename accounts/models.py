from __future__ import annotations

from typing import Any, ClassVar, Self

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


def normalize_email(email: str) -> str:
    # Addresses are compared case-insensitively everywhere; storing them lower-cased keeps
    # the unique constraint, lookups and the JWT's identity in agreement.
    return email.strip().lower()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def get_by_natural_key(self, email: str | None) -> User:
        if email is None:  # as Django's own manager: no user has no address
            raise self.model.DoesNotExist("No user without an email address.")
        return self.get(email__iexact=normalize_email(email))

    def _create(self, email: str, password: str | None, **fields) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=normalize_email(email), **fields)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **fields) -> User:
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields) -> User:
        fields["is_staff"] = True
        fields["is_superuser"] = True
        return self._create(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", max_length=254, unique=True)
    display_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(
        default=False, help_text="Staff can use the admin, pull and delete models."
    )
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    # The password hash and `is_active` as last read from or written to the database (None:
    # unknown), to tell a new password or a deactivation from any other save.
    _password_in_db: str | None = None
    _active_in_db: bool | None = None

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
            models.CheckConstraint(
                condition=models.Q(email=Lower("email")), name="accounts_user_email_lowercase"
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    @classmethod
    def from_db(cls, *args: Any, **kwargs: Any) -> Self:
        user = super().from_db(*args, **kwargs)
        user._remember_saved_state()
        return user

    def _remember_saved_state(self) -> None:
        # Deferred fields are absent from __dict__ (and stay unknown).
        self._password_in_db = self.__dict__.get("password")
        self._active_in_db = self.__dict__.get("is_active")

    def refresh_from_db(self, *args, **kwargs) -> None:
        super().refresh_from_db(*args, **kwargs)
        self._remember_saved_state()

    def save(self, *args, **kwargs) -> None:
        self.email = normalize_email(self.email)
        ended = self._sessions_end_because(kwargs.get("update_fields"))
        super().save(*args, **kwargs)
        self._remember_saved_state()
        if ended is not None:
            from accounts import services  # services imports this module

            services.credentials_changed(self, ended)

    def _sessions_end_because(self, update_fields) -> str | None:
        """Why this save ends the account's sessions and tokens, if it does.

        A new password hash (set_password(), set_unusable_password(), and also the re-hash of
        the same password when Django raises its hasher's work factor: Django's own sessions
        and the tokens' password claim are derived from the hash, so they end either way), or
        a deactivation.
        """
        if self._state.adding:
            return None
        fields = None if update_fields is None else set(update_fields)
        if (fields is None or "password" in fields) and (
            getattr(self, "_password", None) is not None  # set by set_password()
            or (self._password_in_db is not None and self.password != self._password_in_db)
        ):
            return "password_changed"
        if (
            not self.is_active
            and self._active_in_db is not False
            and (fields is None or "is_active" in fields)
        ):
            return "deactivated"
        return None

    def get_full_name(self) -> str:
        return self.display_name or self.email

    def get_short_name(self) -> str:
        return self.display_name or self.email.split("@", 1)[0]
