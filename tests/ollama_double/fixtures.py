"""Pytest fixtures for the Ollama double.

Import them into a conftest (or a test module) with
`from tests.ollama_double.fixtures import *  # noqa: F403`.

- `ollama_double_server` (session): one server for the whole run.
- `ollama_double` (function): the same server, reset (scripts, records, loaded models,
  settings; streams still running are aborted) before the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ollama_double.server import OllamaDouble

__all__ = ["ollama_double", "ollama_double_server"]


@pytest.fixture(scope="session")
def ollama_double_server() -> Iterator[OllamaDouble]:
    double = OllamaDouble().start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def ollama_double(ollama_double_server: OllamaDouble) -> Iterator[OllamaDouble]:
    ollama_double_server.reset()
    yield ollama_double_server
