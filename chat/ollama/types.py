"""Typed views of Ollama's responses. Every type keeps the decoded JSON in `raw`."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class RunningModel:
    """A model loaded in memory, from /api/ps."""

    name: str
    model: str
    size: int | None
    size_vram: int | None
    digest: str | None
    expires_at: str | None
    context_length: int | None
    details: ModelDetails
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> RunningModel:
        name = str(data.get("name") or data.get("model") or "")
        return cls(
            name=name,
            model=str(data.get("model") or name),
            size=_int_or_none(data.get("size")),
            size_vram=_int_or_none(data.get("size_vram")),
            digest=data.get("digest"),
            expires_at=data.get("expires_at"),
            context_length=_int_or_none(data.get("context_length")),
            details=ModelDetails.from_response(data.get("details")),
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
    "GenerateChunk",
    "LocalModel",
    "ModelDetails",
    "ModelShow",
    "RunningModel",
    "Timings",
]
