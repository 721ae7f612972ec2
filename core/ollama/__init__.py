"""Async client for Ollama's HTTP API (plain Python, no Django).

from core.ollama import get_client, OllamaError

client = get_client("http://localhost:11434")
async with client.chat("llama3.2:3b", [{"role": "user", "content": "Hi"}]) as stream:
    async for chunk in stream:
        print(chunk.content, end="")
        if chunk.done:
            print(chunk.timings.tokens_per_second)
"""

from core.ollama.client import OllamaClient, close_all, get_client, normalize_base_url
from core.ollama.errors import (
    ModelNotFound,
    OllamaBadRequest,
    OllamaBusy,
    OllamaError,
    OllamaProtocolError,
    OllamaServerError,
    OllamaStreamError,
    OllamaTimeout,
    OllamaUnreachable,
)
from core.ollama.streams import RawStream, ResponseStream
from core.ollama.types import (
    ChatChunk,
    EmbedResult,
    GenerateChunk,
    LocalModel,
    ModelDetails,
    ModelShow,
    RunningModel,
    Timings,
)

__all__ = [
    "ChatChunk",
    "EmbedResult",
    "GenerateChunk",
    "LocalModel",
    "ModelDetails",
    "ModelNotFound",
    "ModelShow",
    "OllamaBadRequest",
    "OllamaBusy",
    "OllamaClient",
    "OllamaError",
    "OllamaProtocolError",
    "OllamaServerError",
    "OllamaStreamError",
    "OllamaTimeout",
    "OllamaUnreachable",
    "RawStream",
    "ResponseStream",
    "RunningModel",
    "Timings",
    "close_all",
    "get_client",
    "normalize_base_url",
]
