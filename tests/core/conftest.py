"""Fixtures of the gate's tests: a gate of each kind, a private key prefix on the test Redis,
the test Redis itself, and the worker processes to reap."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.gate import Gate, LocalGate, RedisGate
from tests.core.test_gate import REDIS_URL, GateFactory, Worker, require_redis


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique key prefix on the test Redis; every key under it is deleted afterwards."""
    require_redis()
    prefix = f"test-gate-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def make_gate(request: pytest.FixtureRequest) -> GateFactory:
    if request.param == "local":
        return lambda max_concurrency=1, max_queue=32: LocalGate(max_concurrency, max_queue)
    prefix = request.getfixturevalue("redis_prefix")

    def factory(max_concurrency: int = 1, max_queue: int = 32) -> Gate:
        return RedisGate(REDIS_URL, max_concurrency, max_queue, lease_seconds=30, key_prefix=prefix)

    return factory


@pytest.fixture
async def test_redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def reap() -> AsyncIterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        if worker.proc.returncode is None:
            worker.proc.kill()
        await worker.proc.wait()
