"""core.streaming.batches(): every item, then the end, whatever the queue's fill; cancellable."""

from __future__ import annotations

import asyncio

import pytest

from core.streaming import QUEUE_SIZE, batches

# Only bounds a hang (the failure mode of a lost end marker): draining the queue takes
# milliseconds, so a loaded machine is nowhere near it.
HANG_BOUND = 60


async def eager(count: int, error: Exception | None = None):
    """A source that never suspends: it fills the queue in one turn of the event loop."""
    for index in range(count):
        yield index
    if error is not None:
        raise error


async def collect(source, max_batch: int = 512) -> list[int]:
    items: list[int] = []
    async with asyncio.timeout(HANG_BOUND):
        async for batch in batches(source, max_batch=max_batch):
            assert 0 < len(batch) <= max_batch
            items.extend(batch)
    return items


@pytest.mark.parametrize(
    "count", [0, 1, QUEUE_SIZE - 1, QUEUE_SIZE, QUEUE_SIZE + 1, 2 * QUEUE_SIZE, 2 * QUEUE_SIZE + 3]
)
async def test_every_item_then_the_end_whatever_the_queue_fill(count):
    assert await collect(eager(count)) == list(range(count))


@pytest.mark.parametrize("count", [0, QUEUE_SIZE - 1, QUEUE_SIZE, QUEUE_SIZE + 1])
async def test_an_error_of_the_source_reaches_the_reader_after_its_items(count):
    items: list[int] = []
    with pytest.raises(ValueError, match="upstream broke"):
        async with asyncio.timeout(HANG_BOUND):
            async for batch in batches(eager(count, ValueError("upstream broke"))):
                items.extend(batch)
    assert items == list(range(count))


async def test_closing_the_reader_cancels_a_pump_blocked_on_a_full_queue():
    closed = asyncio.Event()

    async def endless():
        try:
            index = 0
            while True:  # never suspends by itself: the pump blocks on the full queue
                yield index
                index += 1
        finally:
            closed.set()

    reader = batches(endless())
    first = await anext(reader)
    assert first[0] == 0
    async with asyncio.timeout(HANG_BOUND):
        await reader.aclose()
    # Closed by then (generate() saves the partial reply there), not whenever it is collected.
    assert closed.is_set()


async def test_closing_the_reader_cancels_a_pump_waiting_on_its_source():
    waiting = asyncio.Event()
    cancelled = asyncio.Event()

    async def stalled():
        yield "first"
        waiting.set()
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield "never"

    reader = batches(stalled())
    assert await anext(reader) == ["first"]
    await waiting.wait()
    async with asyncio.timeout(HANG_BOUND):
        await reader.aclose()
    assert cancelled.is_set()


async def test_closing_the_reader_after_the_source_ended_on_a_full_queue():
    # The pump is waiting to hand over its end marker: closing must not wait for it.
    ended = asyncio.Event()

    async def source():
        for index in range(QUEUE_SIZE):
            yield index
        ended.set()

    reader = batches(source(), max_batch=1)
    assert await anext(reader) == [0]
    await ended.wait()
    async with asyncio.timeout(HANG_BOUND):
        await reader.aclose()


async def test_a_pump_cancelled_by_someone_else_still_ends_the_reader():
    # The shutdown's drain cancels the task a generation runs in, which here is the pump.
    pump_task: list[asyncio.Task] = []
    waiting = asyncio.Event()

    async def tracked():
        task = asyncio.current_task()
        assert task is not None
        pump_task.append(task)
        yield "first"
        waiting.set()
        await asyncio.Event().wait()
        yield "never"

    reader = batches(tracked())
    assert await anext(reader) == ["first"]
    await waiting.wait()
    pump_task[0].cancel()
    async with asyncio.timeout(HANG_BOUND):
        rest = [batch async for batch in reader]
    assert rest == []


async def test_a_pump_cancelled_by_someone_else_on_a_full_queue_still_ends_the_reader():
    pump_task: list[asyncio.Task] = []
    full = asyncio.Event()

    async def tracked():
        task = asyncio.current_task()
        assert task is not None
        pump_task.append(task)
        for index in range(QUEUE_SIZE + 1):  # the last put waits for room
            if index == QUEUE_SIZE:
                full.set()
            yield index

    reader = batches(tracked(), max_batch=1)
    assert await anext(reader) == [0]
    await full.wait()
    pump_task[0].cancel()
    items = [0]
    async with asyncio.timeout(HANG_BOUND):
        async for batch in reader:
            items.extend(batch)
    assert items[:QUEUE_SIZE] == list(range(QUEUE_SIZE))


async def test_items_that_are_exceptions_are_items():
    errors = [ValueError("one"), KeyError("two")]

    async def source():
        for error in errors:
            yield error

    items = []
    async with asyncio.timeout(HANG_BOUND):
        async for batch in batches(source()):
            items.extend(batch)
    assert items == errors
