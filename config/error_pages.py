"""Django's own error answers (no view matched, or a view outside DRF failed) in the error
contract's JSON under /api/, in OpenAI's shape under /v1/ (and /ollama/v1/) and in Ollama's
under /ollama/; HTML pages elsewhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from chat import openai_format
from core.errors import AppError

_CODES = {400: "bad_request", 403: "permission_denied", 404: "not_found", 500: "internal_error"}
_DETAILS = {
    400: "Bad request.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    500: "The server failed to handle the request.",
}


def _json(request: HttpRequest, status: int) -> HttpResponse | None:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": _DETAILS[status], "code": _CODES[status]}, status=status)
    if request.path.startswith(("/v1/", "/ollama/v1/")):
        error = AppError(_CODES[status], _DETAILS[status], status)
        return JsonResponse(openai_format.error_body(error), status=status)
    if request.path.startswith("/ollama/"):
        return JsonResponse({"error": _DETAILS[status].rstrip(".").lower()}, status=status)
    return None


@csrf_exempt  # a 404 whatever the method: no view there to protect
def unmatched(request: HttpRequest) -> HttpResponse:
    """A path under /api/, /ollama/ or /v1/ that no view serves."""
    response = _json(request, 404)
    assert response is not None  # routed here for those prefixes only
    return response


def bad_request(request: HttpRequest, exception: Any) -> HttpResponse:
    return _json(request, 400) or defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Any) -> HttpResponse:
    return _json(request, 403) or defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Any) -> HttpResponse:
    return _json(request, 404) or defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    return _json(request, 500) or defaults.server_error(request)
