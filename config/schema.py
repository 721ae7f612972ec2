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

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

#: Path words that are verbs: the operation is named after them (`download_upload`,
#: `export_conversations`), whatever the method.
VERBS = {"cancel", "download", "export", "import", "search", "share", "logout", "register"}
#: Leading path words that only group endpoints: `auth/logout` is `logout`.
NAMESPACES = {"auth"}
_PER_METHOD = {"GET": "get", "PUT": "update", "PATCH": "partial_update", "DELETE": "delete"}


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "series")):
        return word[:-1]
    return word


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
    def get_operation_id(self) -> str:
        """A snake_case name that reads as what the operation does, as client generators use
        it: `list_conversations`, `create_conversation`, `get_conversation`,
        `delete_conversation`, `regenerate_message`, `stream_chat`, `logout`; not DRF's
        `conversations_retrieve`. Views name the few the rule gets wrong with
        `extend_schema(operation_id=...)`, which wins over this."""
        segments = [s for s in re.sub(self.path_prefix, "", self.path).strip("/").split("/") if s]
        while segments and segments[0] in NAMESPACES and len(segments) > 1:
            segments = segments[1:]
        words = [s.replace("-", "_") for s in segments if not s.startswith("{")]
        if not words:
            return "get_root"
        last_is_param = segments[-1].startswith("{")
        # A word after an id acts on that one object: `conversations/{id}/branch`.
        after_param = len(segments) > 1 and segments[-2].startswith("{") and not last_is_param
        last, rest = words[-1], words[:-1]
        one = "_".join(_singular(w) for w in words)

        if last_is_param:
            return f"{_PER_METHOD.get(self.method, self.method.lower())}_{one}"
        # A POST to a collection (listed too) makes one: `create_upload`; elsewhere the last
        # word is what it does: `chat`, `stream_chat`, `refresh_token`.
        collection = hasattr(self.view, "list") or (
            last.endswith("s") and hasattr(self.view, "get")
        )
        if last in VERBS or (self.method == "POST" and not collection):
            if not rest:
                return last
            noun = "_".join(_singular(w) for w in rest) if after_param else "_".join(rest)
            return f"{last}_{noun}"
        if self.method == "POST":
            return f"create_{one}"
        if self.method == "GET" and self._is_list_view():
            return f"list_{'_'.join([*(_singular(w) for w in rest), last])}"
        noun = "_".join([*(_singular(w) for w in rest), last])
        return f"{_PER_METHOD.get(self.method, self.method.lower())}_{noun}"

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
