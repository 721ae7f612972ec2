"""A faithful, scriptable Ollama server for tests, demos and benchmarks (see server.py)."""

from tests.ollama_double.server import (
    BUSY_MESSAGE,
    NDJSON,
    OLLAMA_VERSION,
    Generation,
    ModelSpec,
    OllamaDouble,
    RecordedRequest,
    Script,
    Settings,
    default_models,
    full_name,
    pullable_models,
    tokenize,
)

__all__ = [
    "BUSY_MESSAGE",
    "NDJSON",
    "OLLAMA_VERSION",
    "Generation",
    "ModelSpec",
    "OllamaDouble",
    "RecordedRequest",
    "Script",
    "Settings",
    "default_models",
    "full_name",
    "pullable_models",
    "tokenize",
]
