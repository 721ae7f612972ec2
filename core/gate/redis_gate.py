"""The shared gate: every process and machine using the same Redis sees one queue per host.

Keys, per host (``{p}`` is ``<key_prefix>:{<host>}``, a Redis Cluster hash tag keeping a host's
keys together):

``{p}:holders``  sorted set, member = reservation token, score = lease expiry (server ms)
``{p}:queue``    sorted set, member = zero-padded ticket (``INCR {p}:seq``) + token, score =
                 the turn's tag (core.gate.turns): the order of service, ties by arrival
``{p}:waiting``  sorted set, member = token, score = waiter lease expiry (server ms)
``{p}:seq``      the ticket counter
``{p}:meta``     hash: ``avg_hold_ms``, a moving average of hold times (for Retry-After),
                 ``g:<token>``, the number in flight when a waiter was handed the slot (until
                 that waiter's next poll reads it), and the turns' books: ``v`` (the virtual
                 time), ``n:<user>`` and ``s:<user>`` (core.gate.turns.Turns)
``{p}:info``     hash: token -> JSON ``{m: queue member, u: user, w: weight, l: label, t: since
                 (server ms)}``, for every holder and waiter

Every decision is one Lua script, so it is atomic, and every script first drops the holders and
waiters whose lease has expired (by the server's clock, ``TIME``: clients' clocks never matter),
then hands free slots to the head of the queue. A holder renews its lease with a heartbeat every
``lease_seconds / 3``; a waiter renews its own each time it polls. A process that dies stops
renewing, so its slot or its place is freed when the lease runs out: never leaked. All keys
carry a TTL renewed on every write, so an idle host leaves nothing behind.

A waiter learns it got the slot (or its new position) by polling every ``poll_interval``
seconds. The tokens are made by the client, so every script is idempotent and safe to retry,
and a release can be sent even when the outcome of an interrupted call is unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import (
    GateEntry,
    GateFull,
    GateLost,
    GateSnapshot,
    GateStats,
    Reservation,
    retry_after_hint,
)
from .turns import check_weight

logger = logging.getLogger(__name__)

_PRELUDE = """
local holders, queue, waiting, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, info = KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local TURN = 2520  -- core.gate.turns.TURN

local function num(value)
  if not value then return 0 end
  return tonumber(value)
end

local function getinfo(token)
  local raw = redis.call('HGET', info, token)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function putinfo(token, record)
  redis.call('HSET', info, token, cjson.encode(record))
end

-- core.gate.turns.Turns, in the same whole numbers
local function arrive(user, weight, fair)
  if fair ~= 1 then return 0 end
  local vtime = num(redis.call('HGET', meta, 'v'))
  local tag = math.max(vtime, num(redis.call('HGET', meta, 'n:' .. user)))
  redis.call('HSET', meta, 'n:' .. user, tag + math.floor(TURN / weight))
  return tag
end

local function served(user, weight, tag, fair)
  if fair ~= 1 then return end
  if tag > num(redis.call('HGET', meta, 'v')) then redis.call('HSET', meta, 'v', tag) end
  redis.call('HSET', meta, 's:' .. user, tag + math.floor(TURN / weight))
end

local function retag(user, fair)
  if fair ~= 1 then return end
  local vtime = num(redis.call('HGET', meta, 'v'))
  local tag = math.max(vtime, num(redis.call('HGET', meta, 's:' .. user)))
  local members = redis.call('ZRANGE', queue, 0, -1)
  table.sort(members)  -- arrival order: a member starts with its zero-padded ticket
  for _, member in ipairs(members) do
    local record = getinfo(string.sub(member, 17))
    if record and record.u == user then
      redis.call('ZADD', queue, tag, member)
      tag = tag + math.floor(TURN / record.w)
    end
  end
  redis.call('HSET', meta, 'n:' .. user, tag)
end

local function forget_idle()
  local v = num(redis.call('HGET', meta, 'v'))
  local fields = redis.call('HGETALL', meta)
  for i = 1, #fields, 2 do
    local kind = string.sub(fields[i], 1, 2)
    if (kind == 'n:' or kind == 's:') and tonumber(fields[i + 1]) <= v then
      redis.call('HDEL', meta, fields[i])
    end
  end
end

-- a waiter leaves before its turn; the user's later requests keep their places
local function drop_queued(token, fair)
  local record = getinfo(token)
  redis.call('ZREM', waiting, token)
  redis.call('HDEL', info, token)
  if record and record.m and redis.call('ZREM', queue, record.m) == 1 then
    retag(record.u, fair)
  end
end

local function purge(fair)
  local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', now)
  for _, token in ipairs(expired) do
    redis.call('ZREM', holders, token)
    redis.call('HDEL', meta, 'g:' .. token)
    redis.call('HDEL', info, token)
  end
  local dead = redis.call('ZRANGEBYSCORE', waiting, '-inf', now)
  for _, token in ipairs(dead) do
    drop_queued(token, fair)
  end
end

-- hand free slots to the head of the queue, noting for each how many were in flight then
-- (until it polls); returns the number of holders
local function promote(maxc, lease, fair)
  local n = redis.call('ZCARD', holders)
  while n < maxc do
    local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    if #head == 0 then break end
    local token = string.sub(head[1], 17)
    redis.call('ZREM', queue, head[1])
    redis.call('ZREM', waiting, token)
    redis.call('ZADD', holders, now + lease, token)
    n = n + 1
    redis.call('HSET', meta, 'g:' .. token, n)
    local record = getinfo(token)
    if record then
      served(record.u, record.w, tonumber(head[2]), fair)
      record.m = nil
      record.t = now
      putinfo(token, record)
    end
  end
  return n
end

local function position(token)
  local record = getinfo(token)
  if not record or not record.m then return nil end
  local rank = redis.call('ZRANK', queue, record.m)
  if rank then return rank + 1 end
  return nil
end

local function touch(ttl)
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, ttl)
  end
end
"""

# ARGV: token, max_concurrency, max_queue, lease_ms, ttl_ms, user, weight, label, fair (1|0)
# -> {0, in_flight} holding | {position, in_flight} queued | {-1, queued, avg_hold_ms} full
_ENTER = (
    _PRELUDE
    + """
local token = ARGV[1]
local maxc, maxq = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local user, weight, label, fair = ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
purge(fair)
local n = promote(maxc, lease, fair)
if redis.call('ZSCORE', holders, token) then   -- a retried call that already got in
  return {0, n}
end
local place = position(token)
if place then
  return {place, n}
end
local q = redis.call('ZCARD', queue)
if q == 0 and n < maxc then
  served(user, weight, arrive(user, weight, fair), fair)
  redis.call('ZADD', holders, now + lease, token)
  putinfo(token, {u = user, w = weight, l = label, t = now})
  touch(ttl)
  return {0, n + 1}
end
if q >= maxq then
  return {-1, q, tonumber(redis.call('HGET', meta, 'avg_hold_ms') or '-1')}
end
local tag = arrive(user, weight, fair)
local member = string.format('%016d', redis.call('INCR', seq)) .. token
redis.call('ZADD', queue, tag, member)
redis.call('ZADD', waiting, now + lease, token)
putinfo(token, {m = member, u = user, w = weight, l = label, t = now})
touch(ttl)
return {redis.call('ZRANK', queue, member) + 1, n}
"""
)

# Both the waiter's poll and the holder's heartbeat.
# ARGV: token, max_concurrency, lease_ms, ttl_ms, fair
# -> {0, in_flight} holding (lease renewed) | {position, in_flight} queued (lease renewed)
#    | {-2, in_flight} neither: the lease expired
_POLL = (
    _PRELUDE
    + """
local token = ARGV[1]
local maxc, lease, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fair = tonumber(ARGV[5])
purge(fair)
local n = promote(maxc, lease, fair)
if redis.call('ZSCORE', holders, token) then
  redis.call('ZADD', holders, 'XX', now + lease, token)
  touch(ttl)
  local granted = redis.call('HGET', meta, 'g:' .. token)
  if granted then
    redis.call('HDEL', meta, 'g:' .. token)
    return {0, tonumber(granted)}
  end
  return {0, n}
end
local place = position(token)
if place then
  redis.call('ZADD', waiting, 'XX', now + lease, token)
  touch(ttl)
  return {place, n}
end
return {-2, n}
"""
)

# ARGV: token, max_concurrency, lease_ms, ttl_ms, held_ms (-1 if it never held the slot), fair
# -> 1 if it was holding the slot, 0 otherwise
_RELEASE = (
    _PRELUDE
    + """
local token = ARGV[1]
local maxc, lease, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local held_ms, fair = tonumber(ARGV[5]), tonumber(ARGV[6])
local was = redis.call('ZREM', holders, token)
redis.call('HDEL', meta, 'g:' .. token)
if was == 1 then
  redis.call('HDEL', info, token)
else
  drop_queued(token, fair)
end
if was == 1 and held_ms >= 0 then
  local avg = tonumber(redis.call('HGET', meta, 'avg_hold_ms') or '-1')
  if avg < 0 then avg = held_ms else avg = 0.8 * avg + 0.2 * held_ms end
  redis.call('HSET', meta, 'avg_hold_ms', math.floor(avg))
end
purge(fair)
promote(maxc, lease, fair)
if redis.call('ZCARD', queue) == 0 then
  forget_idle()
end
touch(ttl)
return was
"""
)

# ARGV: max_concurrency, lease_ms, fair -> {in_flight, queued}
_STATS = (
    _PRELUDE
    + """
local fair = tonumber(ARGV[3])
purge(fair)
local n = promote(tonumber(ARGV[1]), tonumber(ARGV[2]), fair)
return {n, redis.call('ZCARD', queue)}
"""
)

# ARGV: max_concurrency, lease_ms, fair
# -> {{token, record, ...} holding, {token, record, ...} waiting in the order of service}
_SNAPSHOT = (
    _PRELUDE
    + """
local fair = tonumber(ARGV[3])
purge(fair)
promote(tonumber(ARGV[1]), tonumber(ARGV[2]), fair)
local holding, waiting_now = {}, {}
for _, token in ipairs(redis.call('ZRANGE', holders, 0, -1)) do
  table.insert(holding, token)
  table.insert(holding, redis.call('HGET', info, token) or '{}')
end
for _, member in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
  local token = string.sub(member, 17)
  table.insert(waiting_now, token)
  table.insert(waiting_now, redis.call('HGET', info, token) or '{}')
end
return {holding, waiting_now}
"""
)


class _Conn:
    """A client and its scripts, used on one event loop only."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        # Every script is idempotent (tokens are the client's), so a retried call is safe; a
        # health check replaces a pooled connection that a Redis restart broke; the pool waits
        # for a free connection rather than fail when hundreds of waiters poll at once. The
        # app passes its own options (settings.REDIS_POOL_OPTIONS) over these.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            **{
                "socket_connect_timeout": 5,
                "socket_timeout": 5,
                "health_check_interval": 10,
                "retry_on_timeout": True,
                "max_connections": 100,
                "timeout": 10,
                **options,
            },
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.enter = self.client.register_script(_ENTER)
        self.poll = self.client.register_script(_POLL)
        self.release = self.client.register_script(_RELEASE)
        self.stats = self.client.register_script(_STATS)
        self.snapshot = self.client.register_script(_SNAPSHOT)


class RedisGate:
    """The gate shared through Redis by every process and machine that uses it.

    Redis connections belong to an event loop, so nothing loop-bound is made at construction:
    each event loop gets one pooled client on first use, shared by its reservations.
    """

    def __init__(
        self,
        redis_url: str,
        max_concurrency: int = 1,
        max_queue: int = 32,
        lease_seconds: float = 30.0,
        key_prefix: str = "gate",
        poll_interval: float = 0.05,
        client_options: dict[str, Any] | None = None,
        *,
        fair: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        if lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError("lease_seconds and poll_interval must be positive")
        self.redis_url = redis_url
        self.client_options = dict(client_options or {})
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.fair = fair
        self._fair_arg = 1 if fair else 0
        self.lease_seconds = lease_seconds
        self.key_prefix = key_prefix
        self.poll_interval = poll_interval
        self.lease_ms = max(1, int(lease_seconds * 1000))
        # Idle keys go away; any live holder or waiter renews this far more often.
        self.ttl_ms = max(self.lease_ms * 10, 60_000)
        self._background: set[asyncio.Task[Any]] = set()
        self._conns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Conn] = (
            weakref.WeakKeyDictionary()
        )
        self._conns_lock = threading.Lock()

    def _connection(self) -> _Conn:
        loop = asyncio.get_running_loop()
        with self._conns_lock:
            conn = self._conns.get(loop)
            if conn is None:
                conn = self._conns[loop] = _Conn(self.redis_url, self.client_options)
            return conn

    def keys(self, host: str) -> list[str]:
        base = f"{self.key_prefix}:{{{host}}}"
        return [f"{base}:{name}" for name in ("holders", "queue", "waiting", "seq", "meta", "info")]

    def reserve(
        self, host: str, *, user: str = "", weight: int = 1, label: str = ""
    ) -> RedisReservation:
        return RedisReservation(self, host, user=user, weight=check_weight(weight), label=label)

    async def stats(self, host: str) -> GateStats:
        in_flight, queued = await self._connection().stats(
            keys=self.keys(host), args=[self.max_concurrency, self.lease_ms, self._fair_arg]
        )
        return GateStats(
            host=host,
            in_flight=int(in_flight),
            queued=int(queued),
            max_concurrency=self.max_concurrency,
            max_queue=self.max_queue,
        )

    async def snapshot(self, host: str) -> GateSnapshot:
        holding, waiting = await self._connection().snapshot(
            keys=self.keys(host), args=[self.max_concurrency, self.lease_ms, self._fair_arg]
        )
        return GateSnapshot(
            host=host,
            holding=tuple(_entries(holding, positions=False)),
            waiting=tuple(_entries(waiting, positions=True)),
            max_concurrency=self.max_concurrency,
            max_queue=self.max_queue,
        )

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _entries(flat: list[Any], *, positions: bool) -> Iterator[GateEntry]:
    for index in range(0, len(flat), 2):
        token = flat[index].decode() if isinstance(flat[index], bytes) else str(flat[index])
        record = json.loads(flat[index + 1])
        yield GateEntry(
            token=token,
            user=str(record.get("u", "")),
            label=str(record.get("l", "")),
            since=float(record.get("t", 0)) / 1000,
            position=index // 2 + 1 if positions else None,
        )


class RedisReservation(Reservation):
    def __init__(self, gate: RedisGate, host: str, *, user: str, weight: int, label: str) -> None:
        super().__init__(host, user=user, weight=weight, label=label)
        self._gate = gate
        self._keys = gate.keys(host)
        self.token = uuid.uuid4().hex
        self._conn: _Conn | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._start()
        gate = self._gate
        self._conn = gate._connection()
        try:
            result = await self._conn.enter(
                keys=self._keys,
                args=[
                    self.token,
                    gate.max_concurrency,
                    gate.max_queue,
                    gate.lease_ms,
                    gate.ttl_ms,
                    self.user,
                    self.weight,
                    self.label,
                    gate._fair_arg,
                ],
            )
        except BaseException:
            # The script may have run even though its answer never came: release by token.
            await self._finish(held_ms=-1)
            raise
        position, in_flight = int(result[0]), int(result[1])
        if position == -1:
            self._conn = None
            self._exited = True
            avg_ms = int(result[2])
            raise GateFull(
                self.host,
                retry_after_hint(avg_ms / 1000 if avg_ms >= 0 else None, gate.max_concurrency),
            )
        if position == 0:
            self._set_held(in_flight)
        else:
            self._set_position(position)
        self._task = asyncio.create_task(self._heartbeat(), name=f"gate heartbeat {self.host}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._exited:
            return
        held_ms = int(self._held_seconds() * 1000) if self.held else -1
        self._exited = True
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                # It ends at once; the bound only guards against a cancellation swallowed below.
                await asyncio.wait({task}, timeout=5)
        finally:
            await self._finish(held_ms)

    async def _finish(self, held_ms: int) -> None:
        """Release the slot or leave the queue; runs to the end even if cancelled."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        task = asyncio.ensure_future(self._release(conn, held_ms))
        self._gate._keep(task)
        await asyncio.shield(task)

    async def _release(self, conn: _Conn, held_ms: int) -> None:
        gate = self._gate
        try:
            await conn.release(
                keys=self._keys,
                args=[
                    self.token,
                    gate.max_concurrency,
                    gate.lease_ms,
                    gate.ttl_ms,
                    held_ms,
                    gate._fair_arg,
                ],
            )
        except RedisError as error:
            logger.warning(
                "gate: could not release %s on %s (%s); its lease will expire in %s s",
                self.token,
                self.host,
                error,
                gate.lease_seconds,
            )

    async def _heartbeat(self) -> None:
        """Poll while waiting (which renews the waiter's lease), renew the lease while holding."""
        conn = self._conn
        assert conn is not None
        try:
            await self._beat(conn)
        except Exception as error:  # never leave a waiter waiting for a dead task
            logger.exception("gate: heartbeat for %s crashed", self.host)
            self._fail(error)

    async def _beat(self, conn: _Conn) -> None:
        gate = self._gate
        renew_every = gate.lease_seconds / 3
        last_ok = time.monotonic()
        while not self._exited:
            await asyncio.sleep(renew_every if self.held else gate.poll_interval)
            try:
                result = await conn.poll(
                    keys=self._keys,
                    args=[
                        self.token,
                        gate.max_concurrency,
                        gate.lease_ms,
                        gate.ttl_ms,
                        gate._fair_arg,
                    ],
                )
            except RedisError as error:
                if not self.held and time.monotonic() - last_ok > gate.lease_seconds:
                    self._fail(error)
                    return
                logger.warning("gate: heartbeat for %s failed: %s", self.host, error)
                continue
            last_ok = time.monotonic()
            position, in_flight = int(result[0]), int(result[1])
            if position == 0:
                self._set_held(in_flight)
            elif position > 0:
                self._set_position(position)
            elif self.held:
                self.lost = True
                logger.warning(
                    "gate: the lease of a held slot on %s expired before its release", self.host
                )
                return
            else:
                self._fail(GateLost(self.host))
                return
