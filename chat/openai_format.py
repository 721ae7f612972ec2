"""OpenAI's API shapes, translated to and from Ollama's native ones (plain Python, no I/O).

Requests: a `/v1/chat/completions` or `/v1/completions` body becomes the body of Ollama's
`/api/chat` or `/api/generate`, which the gateway then runs like any proxy request
(chat.services.prepare_ollama_request and generate(): the gate, limits, budgets, records).
The mapping follows Ollama's own OpenAI compatibility layer: `max_tokens` and
`max_completion_tokens` -> `num_predict`; `temperature`, `top_p`, `seed`, `frequency_penalty`,
`presence_penalty` and `stop` (a string or a list) -> the options of the same names;
`response_format` `json_object` -> `format: "json"`, `json_schema` -> the schema as `format`;
`tools` as they are; an assistant's `tool_calls` with their JSON `arguments` decoded; a tool
message's `tool_call_id` -> `tool_name`; `developer` -> `system`; `image_url` content parts
(base64 `data:` URLs only: the gateway fetches no URL) -> the message's `images`;
`reasoning_effort` -> `think`. Unlike Ollama's layer it sets no default `temperature` or
`top_p`: a request that sets none gets the model's own.

Replies: Ollama's chunks become `chat.completion` / `chat.completion.chunk` /
`text_completion` objects, with `usage` from `prompt_eval_count` and `eval_count`; errors
become `{"error": {"message", "type", "param", "code"}}` (`code`: the gateway's stable code).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chat.options import InvalidOptions, validate_ollama_options
from core.errors import AppError

# --------------------------------------------------------------------------- errors

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


def error_body(error: AppError) -> dict[str, Any]:
    """OpenAI's error object for the one error contract (`code`: the gateway's code)."""
    param = error.extra.get("param")
    return {
        "error": {
            "message": error.detail,
            "type": error_type(error.status),
            "param": param if isinstance(param, str) else None,
            "code": error.code,
        }
    }


def invalid(message: str, param: str | None = None, code: str = "invalid_input") -> AppError:
    """A request the gateway refuses as malformed or unsupported (400)."""
    return AppError(code, message, 400, extra={"param": param} if param else None)


def unsupported(message: str, param: str) -> AppError:
    return invalid(message, param, code="unsupported_parameter")


# --------------------------------------------------------------------------- requests


@dataclass
class Request:
    """A /v1 generation request, translated: Ollama's body and how to answer."""

    native: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    model: str = ""
    options_from: dict[str, str] = field(default_factory=dict)  # Ollama name -> OpenAI name


# OpenAI's sampling parameters and Ollama's names for them.
NUMERIC = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",  # after max_tokens: it wins when both are sent
}
ROLES = ("system", "developer", "user", "assistant", "tool")
REASONING = {"low": "low", "medium": "medium", "high": "high", "none": False}
# Ollama's own compatibility layer accepts these (and a blank type); so does the gateway.
IMAGE_URL = re.compile(r"^data:(?:image/(?:png|jpeg|jpg|webp|gif))?;base64,", re.IGNORECASE)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model is required: a model name as GET /v1/models lists it", "model")
    return model


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean", name)
    return value


def _common(body: dict[str, Any]) -> tuple[bool, bool]:
    """What chat and completions share: one choice, no logprobs, stream and its options."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise invalid("n must be a positive integer", "n")
    if n is not None and n != 1:
        raise unsupported(
            f"n={n} is not supported: the gateway generates one choice per request "
            "(send n=1, or several requests)",
            "n",
        )
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
        param = "logprobs" if body.get("logprobs") not in (None, False) else "top_logprobs"
        raise unsupported("logprobs are not supported by the gateway", param)
    stream = _flag(body, "stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise invalid("stream_options must be an object", "stream_options")
        if not stream:
            raise invalid("stream_options is only allowed when stream is true", "stream_options")
        include_usage = _flag(stream_options, "include_usage")
    return stream, include_usage


def _options(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Ollama's options from OpenAI's parameters, checked against the bounds of every chat
    (chat.options), with errors naming the parameter the client sent."""
    options: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, ollama_name in NUMERIC.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"{name} must be a number", name)
        options[ollama_name] = value
        names[ollama_name] = name
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid("stop must be a string or an array of strings", "stop")
        options["stop"] = stop
        names["stop"] = "stop"
    try:
        return validate_ollama_options(options), names
    except InvalidOptions as exc:
        key, message = next(iter(exc.errors.items()))
        name = names.get(key, key)
        raise invalid(f"{name}: {message}", name, code="invalid_options") from None


def _format(body: dict[str, Any]) -> Any:
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = response_format.get("json_schema")
        schema = schema.get("schema") if isinstance(schema, dict) else None
        if not isinstance(schema, dict):
            raise invalid(
                "response_format.json_schema.schema must be a JSON schema object",
                "response_format",
            )
        return schema
    raise invalid(
        'response_format.type must be "text", "json_object" or "json_schema"', "response_format"
    )


def _image(part: dict[str, Any], where: str) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise invalid(f"{where}.image_url.url must be a string", where)
    match = IMAGE_URL.match(url)
    if match is None:
        raise invalid(
            f"{where}: images must be base64 data URLs (data:image/png;base64,...); the "
            "gateway fetches no URL",
            where,
        )
    data = url[match.end() :]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}: the image is not valid base64", where) from None
    return data


def _content(value: Any, where: str, role: str) -> tuple[str, list[str]]:
    """A message's text (its text parts joined by newlines) and its images (base64)."""
    if isinstance(value, str):
        return value, []
    if value is None:
        if role == "assistant":  # an assistant message that only calls tools
            return "", []
        raise invalid(f"{where}.content is required", f"{where}.content")
    if not isinstance(value, list):
        raise invalid(
            f"{where}.content must be a string or an array of content parts", f"{where}.content"
        )
    texts: list[str] = []
    images: list[str] = []
    for index, part in enumerate(value):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url":
            images.append(_image(part, at))
        elif kind == "text":
            raise invalid(f"{at}.text must be a string", at)
        else:
            raise unsupported(
                f"{at}: content parts of type {kind!r} are not supported (text and image_url are)",
                at,
            )
    return "\n".join(texts), images


def _tool_calls_in(value: Any, where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    """An assistant's tool calls in Ollama's shape (arguments as an object)."""
    if not isinstance(value, list):
        raise invalid(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    calls = []
    for index, call in enumerate(value):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid(f"{at}.function.name must be a string", at)
        try:
            decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise invalid(f"{at}.function.arguments must be a JSON object (as a string)", at)
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        calls.append({"function": {"name": name, "arguments": decoded}})
    return calls


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid("messages must be a non-empty array of message objects", "messages")
    native: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id -> the function's name
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object", where)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
        text, images = _content(message.get("content"), where, role)
        out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
        if images:
            out["images"] = images
        if role == "assistant" and message.get("tool_calls") is not None:
            out["tool_calls"] = _tool_calls_in(message["tool_calls"], where, call_names)
        if role == "tool":
            name = message.get("name") or call_names.get(message.get("tool_call_id") or "")
            if isinstance(name, str) and name:
                out["tool_name"] = name
        native.append(out)
    return native


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise unsupported(
            'tool_choice may be "auto" or "none": the model decides whether to call a tool',
            "tool_choice",
        )
    if tools is None or choice == "none":
        return None
    if not isinstance(tools, list):
        raise invalid("tools must be an array", "tools")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise invalid(
                f'tools[{index}] must be {{"type": "function", "function": {{"name", ...}}}}',
                f"tools[{index}]",
            )
        out.append({"type": "function", "function": function})
    return out or None


def chat_request(body: dict[str, Any]) -> Request:
    """A /v1/chat/completions body as Ollama's /api/chat body (raises a 400 AppError)."""
    model = _model(body)
    stream, include_usage = _common(body)
    messages = _messages(body.get("messages"))
    options, names = _options(body)
    native: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if options:
        native["options"] = options
    fmt = _format(body)
    if fmt is not None:
        native["format"] = fmt
    tools = _tools(body)
    if tools:
        native["tools"] = tools
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING:
            raise invalid(
                'reasoning_effort must be "low", "medium", "high" or "none"', "reasoning_effort"
            )
        native["think"] = REASONING[effort]
    return Request(native, stream, include_usage, model, names)


def completion_request(body: dict[str, Any]) -> Request:
    """A /v1/completions body as Ollama's /api/generate body (raises a 400 AppError)."""
    model = _model(body)
    stream, include_usage = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise unsupported(
            "prompt must be one string: several prompts (or token arrays) are not supported",
            "prompt",
        )
    if not isinstance(prompt, str):
        raise invalid("prompt must be a string", "prompt")
    if not prompt:
        raise invalid("prompt must not be empty", "prompt")
    if _flag(body, "echo"):
        raise unsupported("echo is not supported by the gateway", "echo")
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise unsupported("best_of must be 1: the gateway generates one choice", "best_of")
    options, names = _options(body)
    native: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise invalid("suffix must be a string", "suffix")
        native["suffix"] = suffix
    if options:
        native["options"] = options
    return Request(native, stream, include_usage, model, names)


EncodingFormat = Literal["float", "base64"]


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str]
    indexed: bool  # the client sent an array (errors name input[i])
    encoding_format: EncodingFormat
    dimensions: int | None


def embedding_request(body: dict[str, Any]) -> EmbeddingRequest:
    model = _model(body)
    value = body.get("input")
    indexed = isinstance(value, list)
    inputs = value if isinstance(value, list) else [value]
    if indexed and not inputs:
        raise invalid("input must not be an empty array", "input")
    if any(isinstance(item, int | list) and not isinstance(item, bool) for item in inputs):
        raise unsupported(
            "input as token arrays is not supported: send the text (a string or an array of "
            "strings)",
            "input",
        )
    if not all(isinstance(item, str) for item in inputs):
        raise invalid("input must be a string or an array of strings", "input")
    if any(not item for item in inputs):
        raise invalid("input must not contain empty strings", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid('encoding_format must be "float" or "base64"', "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise invalid("dimensions must be a positive integer", "dimensions")
    format_: EncodingFormat = "base64" if encoding == "base64" else "float"
    return EmbeddingRequest(model, [str(item) for item in inputs], indexed, format_, dimensions)


# --------------------------------------------------------------------------- replies


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(raw: dict[str, Any]) -> dict[str, int]:
    """OpenAI's usage from Ollama's counts (prompt_eval_count, eval_count)."""
    prompt = _count(raw.get("prompt_eval_count"))
    completion = _count(raw.get("eval_count"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def finish_reason(done_reason: Any, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def tool_calls_out(calls: Sequence[Any], start: int = 0, *, indexed: bool) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object) in OpenAI's shape (arguments as JSON)."""
    out = []
    for offset, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        item: dict[str, Any] = {
            "id": call_id or f"call_{secrets.token_hex(8)}",
            "type": "function",
            "function": {
                "name": str(function.get("name") or ""),
                "arguments": json.dumps(function.get("arguments") or {}),
            },
        }
        if indexed:
            item = {"index": start + offset, **item}
        out.append(item)
    return out


def created_of(modified_at: str | None) -> int:
    """A model's `created`: its modification time as Unix seconds (0 when unknown)."""
    if not modified_at:
        return 0
    text = modified_at.strip().replace("Z", "+00:00")
    if "." in text:  # Go writes up to nine fractional digits; Python reads six
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[: min(digits, 6)] + rest[digits:]
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def owned_by(name: str) -> str:
    """Ollama's answer: the namespace of the name (`library` for the official models)."""
    path = name.split(":", 1)[0]
    parts = path.split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def model_object(name: str, modified_at: str | None) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created_of(modified_at),
        "owned_by": owned_by(name),
    }


def embedding_data(vectors: Sequence[Sequence[float]], encoding: EncodingFormat) -> list[dict]:
    return [
        {
            "object": "embedding",
            "index": index,
            "embedding": list(vector) if encoding == "float" else _base64(vector),
        }
        for index, vector in enumerate(vectors)
    ]


def _base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
