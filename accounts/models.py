from __future__ import annotations

from typing import Any, ClassVar, Self

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, Group, PermissionsMixin
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Length, Lower
from django.db.models.lookups import Exact
from django.utils import timezone


def normalize_email(email: str) -> str:
    # Addresses are compared case-insensitively everywhere; storing them lower-cased keeps
    # the unique constraint, lookups and the JWT's identity in agreement.
    return email.strip().lower()


#: Turns in a host's generation queue, for each turn of a user of priority 1.
MIN_PRIORITY, MAX_PRIORITY = 1, 10
PRIORITY_HELP = (
    f"Turns in the generation queue ({MIN_PRIORITY}-{MAX_PRIORITY}) for each turn of a user "
    "of priority 1, while both are waiting."
)


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
    priority = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(MIN_PRIORITY), MaxValueValidator(MAX_PRIORITY)],
        help_text=PRIORITY_HELP + " Empty: the highest of the user's groups, else 1.",
    )
    daily_token_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens this user may have generated per day. Empty: the server's "
        "CHAT_DAILY_TOKEN_BUDGET; 0: unlimited.",
    )

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
            models.CheckConstraint(
                condition=models.Q(priority__isnull=True)
                | models.Q(priority__gte=MIN_PRIORITY, priority__lte=MAX_PRIORITY),
                name="accounts_user_priority_range",
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


class GroupPolicy(models.Model):
    """What a group's members share: their turns in the generation queue."""

    group = models.OneToOneField(
        Group, on_delete=models.CASCADE, primary_key=True, related_name="policy"
    )
    priority = models.PositiveSmallIntegerField(
        default=MIN_PRIORITY,
        validators=[MinValueValidator(MIN_PRIORITY), MaxValueValidator(MAX_PRIORITY)],
        help_text=PRIORITY_HELP,
    )

    class Meta:
        verbose_name = "group policy"
        verbose_name_plural = "group policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(priority__gte=MIN_PRIORITY, priority__lte=MAX_PRIORITY),
                name="accounts_grouppolicy_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group} (priority {self.priority})"


#: Every API key reads `og_<KEY_ID_LENGTH characters>_<secret>`: the prefix tells it from a JWT
#: (which never contains an underscore before its first dot) and makes leaked keys searchable.
API_KEY_PREFIX = "og_"
KEY_ID_LENGTH = 12
#: Live (not revoked) keys one user may hold.
MAX_API_KEYS_PER_USER = 20


class ApiKey(models.Model):
    """A personal API key: `og_<key_id>_<secret>`, shown once. Only the SHA-256 of the secret
    is stored (a random 238-bit secret needs no slow hash); `key_id` finds the row."""

    class Scope(models.TextChoices):
        CHAT = "chat", "Chat and models (and everything read-only)"
        READ = "read", "Read-only"

    user = models.ForeignKey(
        "accounts.User", on_delete=models.CASCADE, related_name="api_keys", editable=False
    )
    name = models.CharField(max_length=100)
    key_id = models.CharField("key id", max_length=KEY_ID_LENGTH, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.CHAT)
    created = models.DateTimeField(default=timezone.now, editable=False)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "revoked"], name="accounts_apikey_user_live")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scope__in=["chat", "read"]), name="accounts_apikey_scope"
            ),
            models.CheckConstraint(
                condition=~models.Q(name=""), name="accounts_apikey_name_not_blank"
            ),
            models.CheckConstraint(
                condition=Exact(Length("key_id"), KEY_ID_LENGTH),
                name="accounts_apikey_key_id_length",
            ),
            models.CheckConstraint(
                condition=Exact(Length("secret_hash"), 64),
                name="accounts_apikey_secret_hash_length",
            ),
            models.CheckConstraint(
                condition=models.Q(expires__isnull=True)
                | models.Q(expires__gt=models.F("created")),
                name="accounts_apikey_expires_after_created",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def prefix(self) -> str:
        """The key's public part, `og_<key_id>`: what lists show and logs may name."""
        return f"{API_KEY_PREFIX}{self.key_id}"

    def is_expired(self, now=None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())
