"""Validation of the generation options a client may set, their Ollama names, and keep_alive.

Plain Python: the REST serializers, the WebSocket consumer, the conversation settings and the
Ollama-compatible proxy all use it, so that one option is checked one way everywhere.

One table of bounds (`BOUNDS`), read under two sets of names: the REST/WebSocket names
(`max_tokens`...), which `validate_options` takes and `to_ollama` maps, and Ollama's own
(`num_predict`...), which the proxy's clients send and `validate_ollama_options` takes. The
settings that decide the server's resources (`num_gpu`, `num_thread`...) are the operator's:
every transport refuses them by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import AppError


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
    # Settable over REST and the WebSocket under its table key; False: only through the
    # proxy, under its Ollama name.
    rest: bool = True


MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 100
MAX_CONTEXT = 1_048_576

# The one table of bounds, keyed by the REST/WebSocket name.
BOUNDS: dict[str, _Number] = {
    "temperature": _Number("temperature", float, 0.0, 2.0),
    "top_p": _Number("top_p", float, 0.0, 1.0),
    "top_k": _Number("top_k", int, 1, 1000),
    "max_tokens": _Number("num_predict", int, 1, 131_072),
    "num_ctx": _Number("num_ctx", int, 128, MAX_CONTEXT),
    "seed": _Number("seed", int, -(2**31), 2**31 - 1),
    # Sampling options Ollama clients send (the proxy only).
    "min_p": _Number("min_p", float, 0.0, 1.0, rest=False),
    "typical_p": _Number("typical_p", float, 0.0, 1.0, rest=False),
    "repeat_penalty": _Number("repeat_penalty", float, 0.0, 2.0, rest=False),
    "repeat_last_n": _Number("repeat_last_n", int, -1, MAX_CONTEXT, rest=False),
    "presence_penalty": _Number("presence_penalty", float, -2.0, 2.0, rest=False),
    "frequency_penalty": _Number("frequency_penalty", float, -2.0, 2.0, rest=False),
    "mirostat": _Number("mirostat", int, 0, 2, rest=False),
    "mirostat_tau": _Number("mirostat_tau", float, 0.0, 10.0, rest=False),
    "mirostat_eta": _Number("mirostat_eta", float, 0.0, 1.0, rest=False),
    "num_keep": _Number("num_keep", int, 0, MAX_CONTEXT, rest=False),
}
# The REST/WebSocket names (chat.views shows their bounds to the web chat).
NUMERIC_OPTIONS: dict[str, _Number] = {name: spec for name, spec in BOUNDS.items() if spec.rest}
# The same bounds under Ollama's names (the proxy).
OLLAMA_NUMERIC_OPTIONS: dict[str, _Number] = {spec.ollama_name: spec for spec in BOUNDS.values()}
ALLOWED = (*NUMERIC_OPTIONS, "stop")
OLLAMA_ALLOWED = (*OLLAMA_NUMERIC_OPTIONS, "stop")

# Ollama's runner options: how the server spends its GPUs, threads and memory. They are the
# operator's (Ollama's environment, a model's Modelfile), never a request's.
SERVER_OPTIONS = frozenset(
    {
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_batch",
        "low_vram",
        "use_mmap",
        "use_mlock",
        "numa",
        "f16_kv",
        "vocab_only",
        "logits_all",
    }
)
SERVER_OPTION_MESSAGE = (
    "a server resource setting: the gateway's operator sets it (Ollama's environment or the "
    "model's Modelfile), not a request"
)


def validate_options(options: Any) -> dict[str, Any]:
    """The client's options, checked; keys keep the client's names (`max_tokens`, ...)."""
    return _validate(options, NUMERIC_OPTIONS, ALLOWED, normalise=True)


def validate_ollama_options(options: Any) -> dict[str, Any]:
    """An Ollama client's options (Ollama's names), checked against the same bounds; what is
    valid is returned as the client sent it (a null value is left out, as Ollama ignores it)."""
    return _validate(options, OLLAMA_NUMERIC_OPTIONS, OLLAMA_ALLOWED, normalise=False)


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


def _validate(
    options: Any, numeric: Mapping[str, _Number], allowed: tuple[str, ...], *, normalise: bool
) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOptions({"options": "must be an object"})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if key == "stop":
            if value is None:
                continue
            message = _check_stop(value)
            if message:
                errors[key] = message
            else:
                clean[key] = list(value)
            continue
        if key in SERVER_OPTIONS:
            errors[key] = SERVER_OPTION_MESSAGE
            continue
        spec = numeric.get(key)
        if spec is None:
            errors[str(key)] = f"unknown option; allowed: {', '.join(allowed)}"
            continue
        if value is None:
            continue
        message, number = _check_number(value, spec)
        if message:
            errors[key] = message
        else:
            clean[key] = number if normalise else value
    if errors:
        raise InvalidOptions(errors)
    return clean


def _check_number(value: Any, spec: _Number) -> tuple[str | None, Any]:
    # bool is an int in Python, but `true` is never a sensible temperature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number between {_figure(spec.minimum)} and {_figure(spec.maximum)}", None
    if spec.kind is int:
        if isinstance(value, float) and not value.is_integer():
            return "must be a whole number", None
        value = int(value)
    else:
        value = float(value)
        if value != value:
            return "must be a number", None
    if not spec.minimum <= value <= spec.maximum:
        return f"must be between {_figure(spec.minimum)} and {_figure(spec.maximum)}", None
    return None, value


def _figure(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _check_stop(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "must be a list of strings"
    if len(value) > MAX_STOP_SEQUENCES:
        return f"at most {MAX_STOP_SEQUENCES} stop sequences"
    if any(not item or len(item) > MAX_STOP_LENGTH for item in value):
        return f"each stop sequence must have 1 to {MAX_STOP_LENGTH} characters"
    return None


# --------------------------------------------------------------------------- keep_alive
#
# How long Ollama keeps a model in memory after a request, for everyone: 0 unloads it, a
# negative value keeps it forever. A user may choose between KEEP_ALIVE_MIN_SECONDS and the
# operator's maximum (OLLAMA_KEEP_ALIVE_MAX); unloading and pinning are staff actions.

KEEP_ALIVE_MIN_SECONDS = 60

# Go's time.ParseDuration, which Ollama uses for a string keep_alive ("5m", "1h30m", "-1h").
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
KEEP_ALIVE_FORMAT = (
    'a duration such as "5m", "1h" or "1h30m" (units ns, us, ms, s, m, h), or a number of seconds'
)


def invalid_keep_alive(value: Any) -> AppError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    return AppError("invalid_keep_alive", f"keep_alive {shown} is not {KEEP_ALIVE_FORMAT}.", 400)


def keep_alive_seconds(value: Any) -> float:
    """Ollama's reading of a keep_alive, in seconds: a number is seconds (Ollama drops the
    fraction), a string a Go duration; negative means forever (math.inf). Anything Ollama
    would refuse raises `invalid_keep_alive`."""
    if isinstance(value, bool):
        raise invalid_keep_alive(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid_keep_alive(value)
        return math.inf if value < 0 else float(math.floor(value))
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text[1:] if text[:1] in "+-" else text
        if body == "0":
            return 0.0
        if not body or len(body) > 64:
            raise invalid_keep_alive(value)
        position, seconds = 0, 0.0
        while position < len(body):
            part = _DURATION_PART.match(body, position)
            if part is None:
                raise invalid_keep_alive(value)
            seconds += float(part[1]) * _DURATION_UNITS[part[2]]
            position = part.end()
        return math.inf if sign < 0 and seconds > 0 else seconds
    raise invalid_keep_alive(value)


def _describe(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def check_keep_alive(value: Any, *, staff: bool, maximum: float) -> None:
    """Refuse a keep_alive Ollama would not read (400 `invalid_keep_alive`), and, unless the
    user is staff, one that unloads the model for everyone (under a minute, 0 included) or
    pins it (above `maximum` seconds, negative included): 403 `keep_alive_forbidden`."""
    seconds = keep_alive_seconds(value)
    if staff or KEEP_ALIVE_MIN_SECONDS <= seconds <= maximum:
        return
    allowed = f"between {_describe(KEEP_ALIVE_MIN_SECONDS)} and {_describe(maximum)}"
    if seconds < KEEP_ALIVE_MIN_SECONDS:
        detail = (
            "Only staff can unload a model (a keep_alive of 0 or under a minute unloads it "
            f"for everyone); use a keep_alive {allowed}, or leave it out."
        )
    else:
        detail = (
            "Only staff can keep a model loaded for longer than "
            f"{_describe(maximum)} (a negative keep_alive pins it forever); use a keep_alive "
            f"{allowed}, or leave it out."
        )
    raise AppError(
        "keep_alive_forbidden",
        detail,
        403,
        extra={"keep_alive_min": KEEP_ALIVE_MIN_SECONDS, "keep_alive_max": int(maximum)},
    )
