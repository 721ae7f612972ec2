"""DRF's JSON parser on `core.safejson`: a body nested too deep or with a huge integer is a
400 `parse_error` like any malformed JSON, not a RecursionError (a 500)."""

from __future__ import annotations

import codecs
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from core import safejson
from core.errors import AppError


class JSONParser(parsers.JSONParser):
    """REST_FRAMEWORK's JSON parser (DEFAULT_PARSER_CLASSES)."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = safejson.loads(codecs.getreader(encoding)(stream).read())
            if self.strict:
                _refuse_non_finite(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, safejson's limits
            raise ParseError(f"JSON parse error - {exc}") from None
        return data


def _refuse_non_finite(value: Any) -> None:
    """DRF's STRICT_JSON: NaN and Infinity are not JSON (safejson nests at most 64 deep, so
    this recursion is bounded)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_non_finite(item)


def json_object_of(request: HttpRequest, *, empty_is_object: bool = False) -> dict[str, Any]:
    """The body of a request to a view that is not DRF's (the Ollama proxy, /v1) as a JSON
    object, with safejson's limits; else an AppError (400 `parse_error`, 413
    `request_too_large`) that the view renders in its own shape."""
    try:
        body = safejson.loads(request.body or (b"{}" if empty_is_object else b""))
    except RequestDataTooBig:
        raise AppError("request_too_large", "the request body is too large", 413) from None
    except ValueError as exc:  # malformed, too deep, a huge number, not UTF-8
        raise AppError("parse_error", f"invalid JSON in request body: {exc}", 400) from None
    if not isinstance(body, dict):
        raise AppError("parse_error", "the request body must be a JSON object", 400)
    return body
