"""Throttles against password guessing, shared by the token endpoint and the login page.

Two budgets apply together: one per client IP (a single guesser trying many accounts) and one
per account (many IPs trying one account). Rates come from settings at call time, so tests and
deployments can change them without re-importing DRF's settings.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http.request import HttpHeaders
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import normalize_email


def _submitted_email(request) -> str | None:
    data = getattr(request, "data", None)
    if data is None or not hasattr(data, "get"):
        data = request.POST
    value = data.get("email") or data.get("username")
    if not isinstance(value, str) or not value.strip():
        return None
    return normalize_email(value)


class LoginIPThrottle(SimpleRateThrottle):
    scope = "login_ip"

    def get_rate(self) -> str:
        return settings.LOGIN_RATE_PER_IP

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginAccountThrottle(SimpleRateThrottle):
    scope = "login_account"

    def get_rate(self) -> str:
        return settings.LOGIN_RATE_PER_ACCOUNT

    def get_cache_key(self, request, view) -> str | None:
        email = _submitted_email(request)
        if email is None:
            return None
        # Hashed so that cache keys hold no addresses and no odd characters.
        ident = hashlib.sha256(email.encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


LOGIN_THROTTLES = (LoginIPThrottle, LoginAccountThrottle)


def login_wait_seconds(request) -> int | None:
    """Seconds to wait before another login attempt, or None when one is allowed now."""
    waits = []
    for throttle_class in LOGIN_THROTTLES:
        throttle = throttle_class()
        # The login page is a plain Django view: there is no APIView to pass, and these
        # throttles' get_cache_key never reads it (the stubs require an APIView).
        if not throttle.allow_request(request, None):  # type: ignore[arg-type]
            waits.append(throttle.wait() or 1)
    if not waits:
        return None
    return max(1, int(max(waits) + 0.999))


class ApiKeyFailureThrottle(SimpleRateThrottle):
    """Failed API key attempts per client IP, at the login rate (LOGIN_RATE_PER_IP): only
    failures count, and while the budget is spent every key from that IP is refused, the right
    one too (as a throttled login refuses the right password), so a guesser learns nothing."""

    scope = "api_key_ip"
    num_requests: int | None
    duration: int | None

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.key = self.cache_format % {"scope": self.scope, "ident": ident}

    def get_rate(self) -> str:
        return settings.LOGIN_RATE_PER_IP

    def get_cache_key(self, request, view) -> str | None:
        return self.key

    def _recent(self) -> list[float]:
        self.now = self.timer()
        self.history = [
            at for at in self.cache.get(self.key, []) if at > self.now - (self.duration or 0)
        ]
        return self.history

    def wait_seconds(self) -> int | None:
        """Seconds before a key may be tried again from this IP; None: now."""
        if self.num_requests is None or len(self._recent()) < self.num_requests:
            return None
        return max(1, int((self.wait() or 1) + 0.999))

    def record_failure(self) -> None:
        self._recent().insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


def client_ident(meta: dict) -> str:
    """The client IP the throttles key on, from a request's META (or a socket's equivalent):
    DRF's rule, NUM_PROXIES deciding how much of X-Forwarded-For to trust."""

    class _Request:
        META = meta
        headers = HttpHeaders(meta)

    return ApiKeyFailureThrottle("").get_ident(_Request()) or "unknown"  # type: ignore[arg-type]
