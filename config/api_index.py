"""`GET /api/`: where a newcomer (or a client) starts: the API's documentation and its endpoint
groups, with absolute URLs. Open to anyone: it says nothing the schema does not already say,
and a visitor who is not signed in needs it most."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import Resolver404, resolve
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

#: (group, name, path). A path that nothing serves (yet) is left out, so the index never
#: sends a client to a 404.
ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("auth", "token", "/api/auth/token/"),
    ("auth", "token_refresh", "/api/auth/token/refresh/"),
    ("auth", "token_verify", "/api/auth/token/verify/"),
    ("auth", "logout", "/api/auth/logout/"),
    ("auth", "me", "/api/auth/me/"),
    ("auth", "register", "/api/auth/register/"),
    ("auth", "keys", "/api/auth/keys/"),
    ("chat", "chat", "/api/chat/"),
    ("chat", "chat_simple", "/api/chat/simple/"),
    ("chat", "chat_stream", "/api/chat/stream/"),
    ("chat", "usage", "/api/usage/"),
    ("conversations", "conversations", "/api/conversations/"),
    ("conversations", "search", "/api/search/"),
    ("conversations", "export", "/api/conversations/export/"),
    ("conversations", "import", "/api/conversations/import/"),
    ("conversations", "share_links", "/api/shares/"),
    ("models", "models", "/api/models/"),
    ("models", "running", "/api/models/running/"),
    ("models", "load", "/api/models/load/"),
    ("models", "pull", "/api/models/pull/"),
    ("uploads", "uploads", "/api/uploads/"),
    ("uploads", "usage", "/api/uploads/usage/"),
    ("monitoring", "latest", "/api/monitoring/latest/"),
    ("monitoring", "series", "/api/monitoring/series/"),
    ("monitoring", "summary", "/api/monitoring/summary/"),
    ("monitoring", "requests", "/api/monitoring/requests/"),
    ("monitoring", "throughput", "/api/monitoring/throughput/"),
    ("monitoring", "now", "/api/monitoring/now/"),
)

#: The other APIs of the gateway (not DRF: in docs/api.md, not the schema), each with its own
#: error shape: their base URL, for a client's setting, and their model list.
OTHER_APIS: dict[str, dict[str, str]] = {
    "ollama": {"base_url": "/ollama", "models": "/ollama/api/tags"},
    "openai": {"base_url": "/v1", "models": "/v1/models"},
}


def _served(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    # The catch-all of config.urls answers a JSON 404 for what nothing else serves.
    return match.func.__name__ != "unmatched"


class ApiIndexView(APIView):
    """The API's index: its documentation and endpoint groups."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []  # nothing here depends on who asks
    throttle_classes: list[Any] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        def url(path: str) -> str:
            return request.build_absolute_uri(path)

        endpoints: dict[str, dict[str, str]] = {}
        for group, name, path in ENDPOINTS:
            if _served(path):
                endpoints.setdefault(group, {})[name] = url(path)
        spectacular = settings.SPECTACULAR_SETTINGS
        return Response(
            {
                "name": spectacular["TITLE"],
                "version": spectacular["VERSION"],
                "docs": {
                    "schema": url("/api/schema/"),
                    "swagger_ui": url("/api/docs/"),
                    "redoc": url("/api/redoc/"),
                    "guide": "docs/api.md in the source: WebSocket frames and every error code",
                },
                "authentication": (
                    "POST your email and password to auth.token for a JWT pair, then send "
                    "'Authorization: Bearer <access>' (a personal API key works the same way); "
                    "the web pages use the session cookie."
                ),
                "endpoints": endpoints,
                "websockets": {
                    "chat": url("/ws/chat/").replace("http", "ws", 1),
                    "monitoring": url("/ws/monitoring/").replace("http", "ws", 1),
                },
                "other_apis": {
                    name: {key: url(path) for key, path in links.items()}
                    for name, links in OTHER_APIS.items()
                },
                "app": url("/"),
            }
        )
