"""A chat's context window: the model's context length (/api/show), capped by num_ctx or by
OLLAMA_CONTEXT_LENGTH, asked of each host once per model for a while."""

import asyncio
import dataclasses

import pytest

from chat import hosts
from tests.ollama_double.server import ModelSpec

pytestmark = pytest.mark.asyncio

NOWHERE = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture(autouse=True)
def cold_cache():
    hosts.forget_context_lengths()
    yield
    hosts.forget_context_lengths()


def spec(name: str, context_length: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        family="llama",
        parameter_size="1B",
        quantization_level="Q4_K_M",
        size=800_000_000,
        context_length=context_length,
        parameter_count=1_000_000_000,
    )


@dataclasses.dataclass(frozen=True)
class SpecWithoutLength(ModelSpec):
    """A model whose /api/show has no `<family>.context_length`."""

    def show(self) -> dict:
        shown = super().show()
        shown["model_info"] = {
            key: value
            for key, value in shown["model_info"].items()
            if not key.endswith(".context_length")
        }
        return shown


def shows(ollama) -> int:
    return len(ollama.requests_to("/api/show"))


async def test_the_server_default_caps_a_long_model(ollama, settings):
    # llama3.2:3b was trained for 131072 tokens; Ollama runs it with its own default.
    assert settings.OLLAMA_CONTEXT_LENGTH == 4096
    assert await hosts.context_window(ollama.url, "llama3.2:3b", None) == 4096
    settings.OLLAMA_CONTEXT_LENGTH = 16384
    assert await hosts.context_window(ollama.url, "llama3.2:3b", None) == 16384


async def test_num_ctx_sets_the_window_up_to_the_models_length(ollama):
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 8192) == 8192
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 1_000_000) == 131072
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 512) == 512


async def test_a_short_model_caps_the_window(ollama, settings):
    settings.OLLAMA_CONTEXT_LENGTH = 65536
    assert await hosts.context_window(ollama.url, "qwen2.5:0.5b", None) == 32768
    ollama.add_model(spec("tiny:1b", 2048))
    assert await hosts.context_window(ollama.url, "tiny:1b", None) == 2048
    assert await hosts.context_window(ollama.url, "tiny:1b", 32768) == 2048


async def test_the_length_is_asked_once_per_model(ollama):
    windows = await asyncio.gather(
        *(hosts.context_window(ollama.url, "llama3.2:3b", n) for n in (None, 8192) * 10)
    )
    assert windows == [4096, 8192] * 10
    assert shows(ollama) == 1
    # `name` and `name:latest` are one model.
    ollama.add_model(spec("plain:latest", 2048))
    assert await hosts.context_window(ollama.url, "plain", None) == 2048
    assert await hosts.context_window(ollama.url, "plain:latest", None) == 2048
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 2048) == 2048
    assert shows(ollama) == 2


async def test_the_cache_expires_and_can_be_dropped(ollama, monkeypatch):
    await hosts.context_window(ollama.url, "llama3.2:3b", None)
    hosts.forget_context_lengths()
    await hosts.context_window(ollama.url, "llama3.2:3b", None)
    assert shows(ollama) == 2
    monkeypatch.setattr(hosts, "SHOW_TTL_SECONDS", 0.0)
    await hosts.context_window(ollama.url, "llama3.2:3b", None)
    assert shows(ollama) == 3


async def test_the_cache_is_per_host(ollama):
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 100_000) == 100_000
    # What one host said of a model is not taken for another's: this one cannot say.
    assert await hosts.context_window(NOWHERE, "llama3.2:3b", 200_000) == 200_000
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 200_000) == 131072
    assert shows(ollama) == 1


async def test_a_model_without_a_length_gets_the_cap(ollama):
    ollama.add_model(SpecWithoutLength(**dataclasses.asdict(spec("odd:1b", 0))))
    assert await hosts.context_window(ollama.url, "odd:1b", None) == 4096
    assert await hosts.context_window(ollama.url, "odd:1b", 100_000) == 100_000
    assert shows(ollama) == 1  # an answer, kept like any other


async def test_a_failed_show_falls_back_and_is_not_kept(ollama):
    ollama.script(path="/api/show", status=500, status_error="boom")
    assert await hosts.context_window(ollama.url, "llama3.2:3b", None) == 4096
    assert await hosts.context_window(ollama.url, "llama3.2:3b", 200_000) == 131072
    assert shows(ollama) == 2  # the failure was not cached: asked again, and answered

    assert await hosts.context_window(ollama.url, "missing:7b", 8192) == 8192  # a 404
    assert await hosts.context_window(ollama.url, "missing:7b", None) == 4096
    assert shows(ollama) == 4


async def test_a_host_that_is_down_falls_back(settings):
    settings.OLLAMA_CONTEXT_LENGTH = 2048
    assert await hosts.context_window(NOWHERE, "llama3.2:3b", None) == 2048
    assert await hosts.context_window(NOWHERE, "llama3.2:3b", 8192) == 8192
