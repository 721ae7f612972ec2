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
import enum
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

T = TypeVar("T")


class _End(enum.Enum):
    """The marker queued after the last item (an enum member, so that `is` narrows it)."""

    END = enum.auto()


_END = _End.END
QUEUE_SIZE = 4096


async def batches(source: AsyncIterator[T], max_batch: int = 512) -> AsyncGenerator[list[T], None]:
    queue: asyncio.Queue[T | _End] = asyncio.Queue(QUEUE_SIZE)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        finally:
            # Cancelled while waiting for room, the source is suspended at a yield: closed
            # now, not whenever it is collected (generate() saves the partial reply then).
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def wake(_task: asyncio.Task[None]) -> None:
        # Wakes a reader waiting on an empty queue. When the queue is full the marker is not
        # needed: the reader drains it, then finds it empty and the pump done (below). The end
        # itself is the pump's outcome, which needs no room: it is never lost, however the pump
        # ended (the source finished or failed, or the pump was cancelled by someone else, e.g.
        # the shutdown interrupting the generations it tracks).
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    task.add_done_callback(wake)
    try:
        while True:
            batch: list[T] = []
            item: T | _End = _END if queue.empty() and task.done() else await queue.get()
            while item is not _END:
                batch.append(item)
                if queue.empty() or len(batch) >= max_batch:
                    break
                item = queue.get_nowait()
            if batch:
                yield batch
            if item is _END:
                # Every item has been delivered; the source's error, if any, is raised last.
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
                return
    finally:
        if not task.done():
            task.cancel()  # the reader went away: closes the upstream, saves the partial reply
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved (and dropped) if the reader left before the end
