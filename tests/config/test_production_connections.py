"""The full stack's clients: PostgreSQL through a bounded pool, Redis that outlasts idle reads.

Settings are read once per process, so the configuration is read in a fresh one; the channel
layer's behaviour is checked against the real Redis.
"""

import asyncio
import json
import os
import subprocess
import sys

import pytest
import redis

from config.channel_layers import RedisChannelLayer
from tests.config.test_production_settings import BASE_DIR

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0] + "/11"

SHOW = """
import json
from django.conf import settings
print(json.dumps({
    "database": settings.DATABASES["default"],
    "layer": settings.CHANNEL_LAYERS["default"],
    "cache": settings.CACHES["default"],
    "threads": settings.DB_ASYNC_THREADS,
}, default=str))
"""


def settings_with(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + SHOW],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_postgres_connections_come_from_a_bounded_pool(tmp_path):
    shown = settings_with(
        DATABASE_URL="postgres://app@db.internal:5432/app",
        DB_POOL_MAX_SIZE="6",
        VAR_DIR=str(tmp_path),
    )
    database = shown["database"]
    assert database["OPTIONS"]["pool"]["max_size"] == 6
    assert database["CONN_MAX_AGE"] == 0
    assert database["CONN_HEALTH_CHECKS"] is True  # the pool checks a connection it hands out
    assert shown["threads"] == 4


def test_behind_pgbouncer_there_is_no_pool_of_ours(tmp_path):
    shown = settings_with(
        DATABASE_URL="postgres://app@pgbouncer:6432/app",
        DB_POOL_MAX_SIZE="0",
        DB_DISABLE_SERVER_SIDE_CURSORS="true",
        VAR_DIR=str(tmp_path),
    )
    assert "pool" not in shown["database"]["OPTIONS"]
    assert shown["database"]["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_a_persistent_connection_with_the_pool_is_refused(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ.update(
        DATABASE_URL="postgres://app@db.internal:5432/app",
        DB_CONN_MAX_AGE="60",
        VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DB_CONN_MAX_AGE must be 0 with the connection pool" in result.stderr


def test_redis_reads_outlast_the_channel_layers_blocking_pop(tmp_path):
    shown = settings_with(REDIS_URL="redis://redis.internal:6379/0", VAR_DIR=str(tmp_path))
    layer = shown["layer"]
    assert layer["BACKEND"] == "config.channel_layers.RedisChannelLayer"
    host = layer["CONFIG"]["hosts"][0]
    assert host["address"] == "redis://redis.internal:6379/0"
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout
    assert host["health_check_interval"] > 0
    assert shown["cache"]["OPTIONS"]["socket_timeout"] == host["socket_timeout"]


@pytest.fixture
def real_redis():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # the real Redis is required: an error here fails the test
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.mark.redis
async def test_an_idle_receive_survives_longer_than_the_blocking_pop(real_redis, settings):
    # With redis-py's default 5 s read timeout, the 5 s blocking pop timed out inside
    # receive() and Channels closed every idle socket with 1011.
    layer = RedisChannelLayer(hosts=[{"address": real_redis, **settings.REDIS_CLIENT_OPTIONS}])
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    # A whole blocking pop goes by with nothing to read: time passing is the point here.
    await asyncio.sleep(RedisChannelLayer.brpop_timeout + 1.5)
    assert not receiving.done()
    await layer.send(channel, {"type": "late"})
    assert await asyncio.wait_for(receiving, 10) == {"type": "late"}
    assert layer.failures == 0
    await layer.flush()
