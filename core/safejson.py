"""JSON from strangers, parsed with limits: nesting depth (Python's parser recurses, and a deep
enough document raises RecursionError, a 500) and integer size (a 100,000-digit number costs
quadratic time to convert).

`loads` raises `ValueError` (json.JSONDecodeError's base) for every refusal, so callers that
already answer malformed JSON with a 400 need no new branch.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class TooDeep(ValueError):
    pass


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than `limit`, outside strings (a linear scan)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"a number has {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that refuses documents nested deeper than `max_depth` or huge integers."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    if _depth_exceeds(text, max_depth):
        raise TooDeep(f"the JSON nests deeper than {max_depth} levels")
    return json.loads(text, parse_int=_parse_int)
