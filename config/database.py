"""Database work of long-lived async tasks, on a bounded set of threads.

Django's async ORM runs queries through asgiref's thread-sensitive executor: per request
context one thread, and outside any context one thread for the whole process. A generation
outlives the request or socket frame that started it, and hundreds run at once, so its queries
go here instead: at most ``DB_ASYNC_THREADS`` threads, each handing its connection back after
every call. Connections are then bounded by the pool (``DB_POOL_MAX_SIZE`` per process), a
connection broken by a database restart is never reused, and no thread outlives its work
holding a connection.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, sync_to_async
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.DB_ASYNC_THREADS, thread_name_prefix="db"
            )
        return _executor


def release_connections() -> None:
    """Hand this thread's connections back (to the pool, or close them).

    SQLite keeps its connection while it is healthy: opening one costs more than a query, and
    the threads that hold them are bounded.
    """
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            continue
        if connection.vendor == "sqlite" and not connection.errors_occurred:
            continue
        connection.close()


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    finally:
        release_connections()


async def run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn`` (sync, using the ORM) on a database thread and return its result.

    Called under ``async_to_sync`` (a sync view waiting for a generation), the waiting thread
    does the work, as Django's async ORM would: it is idle meanwhile, and it holds the
    request's transaction if there is one.
    """
    if getattr(AsyncToSync.executors, "current", None) is not None:
        return await sync_to_async(_call, thread_sensitive=True)(fn, *args, **kwargs)
    return await run_detached(fn, *args, **kwargs)


async def run_detached(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`run()` always on the bounded threads: for work that may outlive its caller."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _get_executor(), functools.partial(_call, fn, *args, **kwargs)
    )
