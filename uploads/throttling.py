from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class UploadRateThrottle(UserRateThrottle):
    """Uploads per user; the rate is read from settings at call time (tests, deployments)."""

    scope = "uploads"

    def get_rate(self) -> str:
        return settings.UPLOAD_RATE
