"""DRF's JSON parser on `core.safejson`: a body nested too deep or with a huge integer is a
400 `parse_error` like any malformed JSON, not a RecursionError (a 500)."""

from __future__ import annotations

import codecs
import math
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from core import safejson


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
