"""JSON encoding on the streaming hot path (issue 16): orjson, compact, UTF-8 bytes.

Every frame relayed per token (SSE events, the Ollama proxy's NDJSON lines, WebSocket frames)
is encoded here. orjson is several times faster than the standard library; what it cannot
encode (a type outside JSON's, an integer beyond 64 bits) falls back to `json.dumps`, so the
output is always what the standard library would accept: compact, non-ASCII as UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(value: Any) -> str:
    """The same as text (a WebSocket text frame)."""
    return dumps(value).decode()
