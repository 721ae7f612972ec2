"""The OpenAPI schema's answers, made true: every operation documents the error statuses it can
give, each with the error contract's body (`{"detail", "code", ...}`).

Views document their successful answers and their own errors (e.g. 409 `generation_running`);
what every view can answer by the way DRF and this project work is added here once:
400 (bad input), 401 (no or bad credentials), 403 (not allowed, or a session request without
its CSRF token), 404 (an unknown id in the path, a page past the end, a feature switched off),
415 (a body of another media type), 429 (throttled: also any request with an API key from an
address that failed with keys too often) and 503 (the database or Redis is unavailable).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class ErrorOutput(serializers.Serializer):
    """The error contract (docs/api.md): field errors of a 400 may stand beside these."""

    detail = serializers.CharField()
    code = serializers.CharField()
    retry_after = serializers.IntegerField(required=False)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Personal API keys (accounts.authentication), sent like a JWT access token."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "og_<id>_<secret> (a personal API key)",
        }


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> set[int]:
        # A bad bearer token is refused (401) before permissions are even asked, an API key
        # from an address that failed with keys too often too (429), and any path can name what
        # does not exist or is switched off (404).
        statuses = {400, 401, 404, 429, 503}
        permissions = self.view.get_permissions()
        if not all(isinstance(p, AllowAny) for p in permissions):
            statuses.add(403)
        if self.method in UNSAFE:
            statuses |= {403, 415, 429}
        if self.view.get_throttles():
            statuses.add(429)
        return statuses

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status in sorted(self._error_statuses()):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    ErrorOutput, str(status), direction=direction
                )
        return responses
