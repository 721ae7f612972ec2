"""Adaptive batching of generate()'s events for the HTTP streaming transports.

The generation runs in its own task and fills a queue; the response takes everything queued
at each turn. A fast client gets every token as it comes; when tokens arrive faster than the
response is written, they are written together, so the cost per write is paid once per batch
rather than once per token. Closing the batches (the client went away) cancels the task,
which closes the upstream response and saves the partial reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
QUEUE_SIZE = 4096


async def batches(source: AsyncIterator[T], max_batch: int = 512) -> AsyncIterator[list[T]]:
    queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # handed to the reader, which re-raises it
            await queue.put(exc)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            batch: list[T] = []
            item = await queue.get()
            while True:
                if item is _END:
                    if batch:
                        yield batch
                    return
                if isinstance(item, Exception):
                    raise item
                batch.append(item)
                if queue.empty() or len(batch) >= max_batch:
                    break
                item = queue.get_nowait()
            yield batch
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
