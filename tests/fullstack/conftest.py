"""Fixtures of the full-stack suite (PostgreSQL only; see harness.py for the pieces).

- `stack`: the module's stack (Redis, proxy, two Daphne, worker, beat), started once per test
  module with the module's `STACK_ENV` on top of the defaults, and revived before each test
  (a test may have stopped Redis or killed a process);
- `start_stack(**env)`: a stack of the test's own, for tests that kill processes or need
  other settings; stopped at the end of the test;
- after every test: `assert_nothing_lost()`, before the database is flushed.

Run (PostgreSQL only; pytest-django creates the test database `test_<name>`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ollama_gateway \
        .venv/bin/pytest tests/fullstack -m fullstack

FULLSTACK_HEAVY=1 makes the concurrency test run 300 chats instead of 200. The processes' logs
are artifacts/fullstack-<test>-<process>-*.log.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.fullstack.harness import Stack, assert_nothing_lost
from tests.support.live import ARTIFACTS, bearer


def _require_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the full-stack suite runs on PostgreSQL only (set DATABASE_URL)")
    if shutil.which("redis-server") is None:
        pytest.fail("the full-stack suite needs the redis-server binary on PATH")


@pytest.fixture(scope="session", autouse=True)
def _fresh_fullstack_logs() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("fullstack-*.log"):
        old.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def _module_stack(
    request, django_db_setup, ollama_double_server, tmp_path_factory
) -> Iterator[Stack]:
    _require_postgres()
    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    stack = Stack(
        tag=tag,
        var_dir=tmp_path_factory.mktemp(f"fullstack-{tag}"),
        ollama_url=ollama_double_server.url,
        env=dict(getattr(request.module, "STACK_ENV", {})),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(_module_stack: Stack, double) -> Stack:
    _module_stack.revive()
    _module_stack.wait_heartbeats()  # the previous test's flush deleted their rows
    return _module_stack


@pytest.fixture
def double(ollama_double):
    """The Ollama double, reset, serving as many generations at once as the gate allows."""
    ollama_double.configure(num_parallel=64)
    return ollama_double


@pytest.fixture
def start_stack(request, django_db_setup, ollama_double_server, tmp_path) -> Iterator:
    stacks: list[Stack] = []

    def start(celery: bool = True, **env: str) -> Stack:
        _require_postgres()
        test = request.node.name.removeprefix("test_").replace("[", "-").rstrip("]")
        stack = Stack(
            tag=f"{test}{len(stacks) or ''}"[:60],
            var_dir=tmp_path / f"stack{len(stacks)}",
            ollama_url=ollama_double_server.url,
            env=env,
            celery=celery,
        )
        stacks.append(stack)
        stack.start().wait_heartbeats()
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop()


@pytest.fixture(autouse=True)
def _nothing_lost(transactional_db, start_stack) -> Iterator[None]:
    """The invariants after every test, while its stack still runs (it may still have to
    mark the replies of a process that died) and before the database is flushed."""
    yield
    if connection.vendor == "postgresql":
        assert_nothing_lost()


@pytest.fixture
def make_users(make_user):
    def make(count: int, prefix: str = "user") -> list:
        return [make_user(f"{prefix}{i}@example.com") for i in range(count)]

    return make


@pytest.fixture
def headers():
    return bearer
