"""Typed views of Ollama's responses. Every type keeps the decoded JSON in `raw`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NS_PER_SECOND = 1_000_000_000

TIMING_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / NS_PER_SECOND


def _rate(count: int | None, duration_ns: int | None) -> float | None:
    if count is None or not duration_ns:
        return None
    return count / duration_ns * NS_PER_SECOND


@dataclass(frozen=True, slots=True)
class Timings:
    """Ollama's metrics from a final chunk: durations in integer nanoseconds."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> Timings | None:
        """The timings in a response dict, or None when it carries none of the fields."""
        values = {name: _int_or_none(data.get(name)) for name in TIMING_FIELDS}
        if all(v is None for v in values.values()):
            return None
        return cls(**values)

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed: eval_count / eval_duration * 1e9."""
        return _rate(self.eval_count, self.eval_duration)

    @property
    def prompt_tokens_per_second(self) -> float | None:
        return _rate(self.prompt_eval_count, self.prompt_eval_duration)

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_eval_count is None and self.eval_count is None:
            return None
        return (self.prompt_eval_count or 0) + (self.eval_count or 0)

    @property
    def total_duration_seconds(self) -> float | None:
        return _seconds(self.total_duration)

    @property
    def load_duration_seconds(self) -> float | None:
        return _seconds(self.load_duration)

    @property
    def prompt_eval_duration_seconds(self) -> float | None:
        return _seconds(self.prompt_eval_duration)

    @property
    def eval_duration_seconds(self) -> float | None:
        return _seconds(self.eval_duration)

    def as_dict(self) -> dict[str, int | float | None]:
        """Ollama's raw figures plus the derived ones, for JSON replies and storage."""
        return {
            **{name: getattr(self, name) for name in TIMING_FIELDS},
            "tokens_per_second": self.tokens_per_second,
            "prompt_tokens_per_second": self.prompt_tokens_per_second,
            "total_tokens": self.total_tokens,
            "total_duration_seconds": self.total_duration_seconds,
            "load_duration_seconds": self.load_duration_seconds,
            "prompt_eval_duration_seconds": self.prompt_eval_duration_seconds,
            "eval_duration_seconds": self.eval_duration_seconds,
        }


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """One chunk of /api/chat (or the whole reply of a non-streaming chat)."""

    model: str
    created_at: str | None
    content: str
    thinking: str
    done: bool
    done_reason: str | None
    timings: Timings | None
    tool_calls: list[dict[str, Any]] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> ChatChunk:
        message = data.get("message")
        message = message if isinstance(message, dict) else {}
        done = data.get("done") is True
        return cls(
            model=str(data.get("model") or ""),
            created_at=data.get("created_at"),
            content=message.get("content") or "",
            thinking=message.get("thinking") or "",
            done=done,
            done_reason=data.get("done_reason"),
            timings=Timings.from_response(data) if done else None,
            tool_calls=message.get("tool_calls") or None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class GenerateChunk:
    """One chunk of /api/generate (or the whole reply of a non-streaming generate)."""

    model: str
    created_at: str | None
    response: str
    thinking: str
    done: bool
    done_reason: str | None
    timings: Timings | None
    context: list[int] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def content(self) -> str:
        """Alias of `response`, so chat and generate chunks read alike."""
        return self.response

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> GenerateChunk:
        done = data.get("done") is True
        context = data.get("context")
        return cls(
            model=str(data.get("model") or ""),
            created_at=data.get("created_at"),
            response=data.get("response") or "",
            thinking=data.get("thinking") or "",
            done=done,
            done_reason=data.get("done_reason"),
            timings=Timings.from_response(data) if done else None,
            context=context if isinstance(context, list) else None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class ModelDetails:
    parent_model: str | None = None
    format: str | None = None
    family: str | None = None
    families: list[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None

    @classmethod
    def from_response(cls, data: Any) -> ModelDetails:
        data = data if isinstance(data, dict) else {}
        return cls(
            parent_model=data.get("parent_model"),
            format=data.get("format"),
            family=data.get("family"),
            families=data.get("families"),
            parameter_size=data.get("parameter_size"),
            quantization_level=data.get("quantization_level"),
        )


@dataclass(frozen=True, slots=True)
class LocalModel:
    """An installed model, from /api/tags."""

    name: str
    model: str
    modified_at: str | None
    size: int | None
    digest: str | None
    details: ModelDetails
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> LocalModel:
        name = str(data.get("name") or data.get("model") or "")
        return cls(
            name=name,
            model=str(data.get("model") or name),
            modified_at=data.get("modified_at"),
            size=_int_or_none(data.get("size")),
            digest=data.get("digest"),
            details=ModelDetails.from_response(data.get("details")),
            raw=data,
        )


@dataclass(slots=True)
class RunningModel:
    """A model loaded in memory, from /api/ps: the one parser of that answer.

    The chat side (the running-models API) and the telemetry probe both read /api/ps through
    `parse_ps`, so they agree on which entries are valid and what their fields mean.
    """

    name: str
    #: Bytes the model occupies in total, and the part of it in GPU memory.
    size: int | None
    size_vram: int | None
    #: ISO 8601 with offset (Ollama's RFC 3339, fractional seconds cut to microseconds);
    #: None when missing or unparseable.
    expires_at: str | None
    digest: str | None = None
    context_length: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The parsed fields (JSON-serialisable), without `raw`."""
        return {
            "name": self.name,
            "size": self.size,
            "size_vram": self.size_vram,
            "expires_at": self.expires_at,
            "digest": self.digest,
            "context_length": self.context_length,
        }


def _size(value: Any) -> int | None:
    number = _int_or_none(value)
    return None if number is None or number < 0 else number


def _expires(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    # Go writes up to nine fractional digits; fromisoformat on 3.11 wants at most six.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[: min(digits, 6)] + rest[digits:]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.isoformat()


def parse_ps(payload: Any) -> tuple[list[RunningModel], int]:
    """Ollama's /api/ps JSON -> (models, number of malformed entries skipped).

    Raises `ValueError` when the payload is not `{"models": [...]}` at all.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise ValueError('not an Ollama /api/ps answer (no "models" list)')
    models: list[RunningModel] = []
    skipped = 0
    for entry in payload["models"]:
        name = (entry.get("name") or entry.get("model")) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            skipped += 1
            continue
        digest = entry.get("digest")
        models.append(
            RunningModel(
                name=name,
                size=_size(entry.get("size")),
                size_vram=_size(entry.get("size_vram")),
                expires_at=_expires(entry.get("expires_at")),
                digest=digest if isinstance(digest, str) else None,
                context_length=_size(entry.get("context_length")),
                raw=entry,
            )
        )
    return models, skipped


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """/api/embed: one vector per input, in order, with Ollama's figures (`timings` carries
    total_duration, load_duration and prompt_eval_count; an embedding generates nothing)."""

    model: str
    embeddings: list[list[float]]
    timings: Timings | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def prompt_eval_count(self) -> int | None:
        return self.timings.prompt_eval_count if self.timings else None

    @classmethod
    def from_response(cls, data: Any) -> EmbedResult:
        """Raises ValueError when `data` is not an /api/embed answer."""
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or not all(
            isinstance(vector, list)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)
            for vector in vectors
        ):
            raise ValueError('not an Ollama /api/embed answer (no "embeddings" list of vectors)')
        assert isinstance(data, dict)
        return cls(
            model=str(data.get("model") or ""),
            embeddings=[[float(x) for x in vector] for vector in vectors],
            timings=Timings.from_response(data),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class ModelShow:
    """/api/show: a model's modelfile, template, parameters, metadata and capabilities."""

    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def context_length(self) -> int | None:
        """`<family>.context_length` from model_info."""
        arch = self.model_info.get("general.architecture")
        if arch and f"{arch}.context_length" in self.model_info:
            return _int_or_none(self.model_info[f"{arch}.context_length"])
        for key, value in self.model_info.items():
            if key.endswith(".context_length"):
                return _int_or_none(value)
        return None

    @property
    def supports_vision(self) -> bool:
        return "vision" in self.capabilities

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> ModelShow:
        info = data.get("model_info")
        caps = data.get("capabilities")
        return cls(
            modelfile=data.get("modelfile") or "",
            parameters=data.get("parameters") or "",
            template=data.get("template") or "",
            details=ModelDetails.from_response(data.get("details")),
            model_info=info if isinstance(info, dict) else {},
            capabilities=list(caps) if isinstance(caps, list) else [],
            modified_at=data.get("modified_at"),
            raw=data,
        )


__all__ = [
    "ChatChunk",
    "EmbedResult",
    "GenerateChunk",
    "LocalModel",
    "ModelDetails",
    "ModelShow",
    "RunningModel",
    "Timings",
    "parse_ps",
]
