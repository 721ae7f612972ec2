"""One database of the test Redis for a test module, empty before and after each test.

Each module that runs processes against Redis takes its own database number, so that modules
never see each other's keys (the suite fixes the numbers; the server is REDIS_TEST_URL's)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import redis


def redis_test_url(db: int) -> str:
    """REDIS_TEST_URL's server, database `db`."""
    base = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0]
    return f"{base}/{db}"


def flushed(url: str) -> Iterator[str]:
    """For a fixture: `url`'s database emptied, yielded, emptied again."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()  # the suite needs the real Redis: an error here is a failure, not a skip
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()
