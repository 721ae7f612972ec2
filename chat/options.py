"""Validation of the generation options a client may set, and their Ollama names.

Plain Python: the REST serializers, the WebSocket consumer and the conversation settings all
use it, so that one option is checked one way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class InvalidOptions(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class _Number:
    ollama_name: str
    kind: type
    minimum: float
    maximum: float


MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 100

NUMERIC_OPTIONS: dict[str, _Number] = {
    "temperature": _Number("temperature", float, 0.0, 2.0),
    "top_p": _Number("top_p", float, 0.0, 1.0),
    "top_k": _Number("top_k", int, 1, 1000),
    "max_tokens": _Number("num_predict", int, 1, 131_072),
    "num_ctx": _Number("num_ctx", int, 128, 1_048_576),
    "seed": _Number("seed", int, -(2**31), 2**31 - 1),
}
ALLOWED = (*NUMERIC_OPTIONS, "stop")


def validate_options(options: Any) -> dict[str, Any]:
    """The client's options, checked; keys keep the client's names (`max_tokens`, ...)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOptions({"options": "must be an object"})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if key == "stop":
            message = _check_stop(value)
            if message:
                errors[key] = message
            else:
                clean[key] = list(value)
            continue
        spec = NUMERIC_OPTIONS.get(key)
        if spec is None:
            errors[str(key)] = f"unknown option; allowed: {', '.join(ALLOWED)}"
            continue
        if value is None:
            continue
        message, number = _check_number(value, spec)
        if message:
            errors[key] = message
        else:
            clean[key] = number
    if errors:
        raise InvalidOptions(errors)
    return clean


def to_ollama(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated options under Ollama's names (`max_tokens` -> `num_predict`)."""
    result: dict[str, Any] = {}
    for key, value in options.items():
        if key == "stop":
            result["stop"] = list(value)
        else:
            result[NUMERIC_OPTIONS[key].ollama_name] = value
    return result


def merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


def _check_number(value: Any, spec: _Number) -> tuple[str | None, Any]:
    # bool is an int in Python, but `true` is never a sensible temperature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number between {spec.minimum:g} and {spec.maximum:g}", None
    if spec.kind is int:
        if isinstance(value, float) and not value.is_integer():
            return "must be a whole number", None
        value = int(value)
    else:
        value = float(value)
        if value != value:
            return "must be a number", None
    if not spec.minimum <= value <= spec.maximum:
        return f"must be between {spec.minimum:g} and {spec.maximum:g}", None
    return None, value


def _check_stop(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "must be a list of strings"
    if len(value) > MAX_STOP_SEQUENCES:
        return f"at most {MAX_STOP_SEQUENCES} stop sequences"
    if any(not item or len(item) > MAX_STOP_LENGTH for item in value):
        return f"each stop sequence must have 1 to {MAX_STOP_LENGTH} characters"
    return None
