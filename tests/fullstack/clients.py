"""Clients of the stack for one asyncio loop: WebSocket sockets and SSE streams.

Each keeps every frame/event it received (with the time it arrived) from a reader task, so a
test can wait for "the first frame such that ..." with a bound, and a failure message can say
what was seen instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fullstack.harness import WAIT

TERMINAL = {"chat.done", "chat.error", "chat.cancelled"}
Predicate = Callable[[dict], bool]


def of_type(*types: str, **fields: Any) -> Predicate:
    def match(frame: dict) -> bool:
        return frame.get("type") in types and all(frame.get(k) == v for k, v in fields.items())

    return match


def is_terminal(frame: dict) -> bool:
    return frame.get("type") in TERMINAL


def summary(frames: list[dict], limit: int = 40) -> str:
    """The frames seen, compactly: token frames as their offsets."""
    out: list[str] = []
    for frame in frames:
        kind = frame.get("type")
        if kind in {"chat.token", "content"}:
            out.append(f"{kind}@{frame.get('offset')}+{len(frame.get('content') or '')}")
        elif kind in {"chat.error", "error"}:
            out.append(f"{kind}({frame.get('code')}: {str(frame.get('detail'))[:80]})")
        elif kind == "status":
            out.append(f"status:{frame.get('status')}")
        elif kind in {"chat.queued", "queued"}:
            out.append(f"{kind}({frame.get('position')})")
        else:
            out.append(str(kind))
    if len(out) > limit:
        out = [*out[: limit // 2], f"... {len(out) - limit} more ...", *out[-limit // 2 :]]
    return ", ".join(out)


def assemble(frames: list[dict], token_type: str = "chat.token") -> tuple[str, list[str]]:
    """The reply's text from its token frames, placed by offset; and every gap or
    inconsistent overlap found on the way."""
    text = ""
    problems: list[str] = []
    for frame in frames:
        if frame.get("type") != token_type:
            continue
        offset, content = frame["offset"], frame["content"]
        if offset > len(text):
            problems.append(f"gap: text has {len(text)} chars, frame starts at {offset}")
            text += "\0" * (offset - len(text))
        overlap = text[offset : offset + len(content)]
        if overlap and overlap != content[: len(overlap)]:
            problems.append(f"overlap at {offset} differs: {overlap!r} vs {content!r}")
        text = text[:offset] + content + text[offset + len(content) :]
    return text, problems


END_STATUS = {"chat.done": "complete", "metrics": "complete", "chat.cancelled": "cancelled"}


def first_end(frames: list[dict]) -> tuple[dict | None, list[dict]]:
    """The first end of a reply (`chat.done`/`chat.error`/`chat.cancelled`, or the SSE
    `metrics`/`error` event) and the frames that still came after it."""
    for index, frame in enumerate(frames):
        if frame.get("type") in {*TERMINAL, "metrics", "error"}:
            return frame, frames[index + 1 :]
    return None, []


def reply_id(frames: list[dict]) -> int | None:
    """The reply's message id, from `chat.started` / the SSE `started` status or the end."""
    for frame in frames:
        if frame.get("type") == "chat.started" or frame.get("status") == "started":
            return frame.get("message")
    end, _ = first_end(frames)
    return end.get("message") if end else None


def end_mismatch(frames: list[dict], row, token_type: str = "chat.token") -> str | None:
    """How the saved reply `row` (or None) disagrees with what the client was told, or None."""
    end, after = first_end(frames)
    if end is None:
        return "no end"
    if end["type"] in {"chat.error", "error"} and not end.get("code"):
        return f"{end['type']} without a code: {end}"
    later = [f for f in after if f.get("type") != "pong"]
    if later:
        return f"{len(later)} frames after the end {summary([end])}: {summary(later, 8)}"
    if row is None:
        if end["type"] in {"chat.error", "error"} and end.get("message") is None:
            return None  # refused before a reply existed
        return f"no reply row, but the client was told {summary([end])}"
    if end["type"] in END_STATUS:
        if row.status != END_STATUS[end["type"]]:
            return f"the client was told {summary([end])}, the row is {row.status!r}"
    elif row.status not in {"failed", "interrupted"} or row.error_code != end["code"]:
        return (
            f"the client was told {summary([end])}, the row is {row.status!r} ({row.error_code!r})"
        )
    if end["type"] in {"chat.done", "metrics"}:
        text, problems = assemble(frames, token_type)
        if problems or text != row.content:
            return f"the text received ({len(text)} chars, {problems}) is not the saved reply"
    return None


class _Recorder:
    name: str

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.times: list[float] = []  # time.monotonic() of each frame's arrival
        self._changed = asyncio.Event()
        self.ended = False

    def _add(self, frame: dict) -> None:
        self.frames.append(frame)
        self.times.append(time.monotonic())
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _ended_detail(self) -> str:
        return "ended"

    def find(self, predicate: Predicate, start: int = 0) -> int | None:
        for index in range(start, len(self.frames)):
            if predicate(self.frames[index]):
                return index
        return None

    async def wait_for(
        self, predicate: Predicate, what: str, timeout: float = WAIT, start: int = 0
    ) -> dict:
        """The first frame (from index `start`) matching `predicate`; fails with what was
        seen when the stream ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            index = self.find(predicate, start)
            if index is not None:
                return self.frames[index]
            if self.ended:
                raise AssertionError(
                    f"{self.name}: {self._ended_detail()} before {what}; "
                    f"saw: {summary(self.frames)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout:g} s; saw: {summary(self.frames)}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def index_of(self, frame: dict) -> int:
        return next(i for i, f in enumerate(self.frames) if f is frame)


class WsClient(_Recorder):
    """One authenticated socket on /ws/chat/ (the `Authorization: Bearer` header)."""

    def __init__(self, url: str, headers: dict[str, str], name: str = "ws") -> None:
        super().__init__()
        self.url = url
        self.headers = headers
        self.name = name
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.opened_at = 0.0
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def open(self, timeout: float = WAIT) -> WsClient:
        self.ws = await connect(
            self.url,
            additional_headers=self.headers,
            open_timeout=timeout,
            ping_interval=None,  # idle means idle: only the server's own pings, if any
            close_timeout=2,
            max_size=None,
        )
        self.opened_at = time.monotonic()
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self._add(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            self.ended = True
            self._wake()

    def _ended_detail(self) -> str:
        lived = (self.closed_at or time.monotonic()) - self.opened_at
        return (
            f"socket closed with {self.close_code} {self.close_reason!r} "
            f"{lived:.1f} s after it opened"
        )

    async def send(self, **frame: Any) -> int:
        """Send a frame; returns the index the answers to it start from."""
        assert self.ws is not None
        start = len(self.frames)
        await self.ws.send(json.dumps(frame))
        return start

    async def ping(self, timeout: float = WAIT) -> dict:
        start = await self.send(type="ping")
        return await self.wait_for(of_type("pong"), "pong", timeout, start)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader

    async def __aenter__(self) -> WsClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_many(clients: list[WsClient], at_once: int = 25) -> list[WsClient]:
    """Open sockets a few dozen at a time (Daphne listens with a backlog of 50)."""
    gate = asyncio.Semaphore(at_once)

    async def open_one(client: WsClient) -> None:
        async with gate:
            await client.open()

    await asyncio.gather(*(open_one(c) for c in clients))
    return clients


class Chat:
    """One chat.send on its own socket, and everything that came back for it."""

    def __init__(self, client: WsClient, message: str, expected: str | None = None) -> None:
        self.client = client
        self.message = message
        self.expected = expected
        self.start = 0
        self.sent_at = 0.0

    async def send(self, **extra: Any) -> Chat:
        self.sent_at = time.monotonic()
        self.start = await self.client.send(type="chat.send", message=self.message, **extra)
        return self

    async def wait_for(self, predicate: Predicate, what: str, timeout: float = WAIT) -> dict:
        return await self.client.wait_for(predicate, what, timeout, self.start)

    async def started(self, timeout: float = WAIT) -> dict:
        return await self.wait_for(of_type("chat.started"), "chat.started", timeout)

    async def first_token(self, timeout: float = WAIT) -> dict:
        return await self.wait_for(of_type("chat.token"), "a chat.token", timeout)

    async def terminal(self, timeout: float = WAIT) -> dict:
        return await self.wait_for(
            is_terminal, "a terminal frame (chat.done/chat.error/chat.cancelled)", timeout
        )

    @property
    def frames(self) -> list[dict]:
        return self.client.frames[self.start :]

    def text(self) -> tuple[str, list[str]]:
        return assemble(self.frames)

    def describe(self) -> str:
        return f"{self.client.name} [{self.message[:40]}]: {summary(self.frames)}"


def default_reply(message: str) -> str:
    """What the Ollama double answers to a chat whose last user message is `message` (with
    single spaces and at most 40 words) when no script says otherwise."""
    return f"This is llama3.2:3b replying to: {message}"


# ------------------------------------------------------------------------------- SSE


class SseClient(_Recorder):
    """One `POST /api/chat/stream/`: its `data:` events in order, and whether `[DONE]` came."""

    def __init__(
        self, base_url: str, headers: dict[str, str], message: str, name: str = "sse"
    ) -> None:
        super().__init__()
        self.base_url = base_url
        self.headers = headers
        self.message = message
        self.name = name
        self.status: int | None = None
        self.body = b""
        self.done_marker = False
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None

    def start(self, **extra: Any) -> SseClient:
        self.task = asyncio.create_task(self._run(extra))
        return self

    async def _run(self, extra: dict) -> None:
        timeout = httpx.Timeout(connect=WAIT, read=120.0, write=WAIT, pool=WAIT)
        try:
            async with (
                httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client,
                client.stream(
                    "POST",
                    "/api/chat/stream/",
                    json={"message": self.message, **extra},
                    headers=self.headers,
                ) as response,
            ):
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = await response.aread()
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        self.done_marker = True
                        continue
                    self._add(json.loads(data))
        except Exception as exc:  # reported by the test with what was received
            self.error = exc
        finally:
            self.ended = True
            self._wake()

    def _ended_detail(self) -> str:
        if self.error is not None:
            return f"stream failed ({type(self.error).__name__}: {self.error})"
        if self.status != 200:
            return f"HTTP {self.status} {self.body[:200]!r}"
        return f"stream ended (DONE marker: {self.done_marker})"

    async def finished(self, timeout: float = WAIT) -> SseClient:
        assert self.task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: the stream did not end within {timeout:g} s; "
                f"saw: {summary(self.frames)}"
            ) from None
        return self

    def text(self) -> tuple[str, list[str]]:
        return assemble(self.frames, token_type="content")

    def terminal_event(self) -> dict | None:
        for frame in reversed(self.frames):
            if frame.get("type") in {"metrics", "error"}:
                return frame
        return None

    def describe(self) -> str:
        return (
            f"{self.name}: HTTP {self.status}, DONE={self.done_marker}, "
            f"error={self.error!r}, events: {summary(self.frames)}"
        )

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def through_outage(
    chats: list[Chat],
    streams: list[SseClient],
    sockets: list[WsClient],
    double: Any,
    *,
    begin: Callable[[], Any],
    end: Callable[[], Any],
    seconds: float,
) -> None:
    """Every chat and stream is streaming; then an outage of `seconds` (`begin` .. `end`, run
    in a thread); then every client runs to its end, and listening goes on until Ollama has
    stopped too, so that a frame after the end is seen. The sockets are closed last."""
    try:
        await asyncio.gather(*(chat.send() for chat in chats))
        for stream in streams:
            stream.start()
        await asyncio.gather(
            *(chat.first_token() for chat in chats),
            *(s.wait_for(of_type("content"), "a content event") for s in streams),
        )
        await asyncio.to_thread(begin)
        await asyncio.sleep(seconds)  # the outage itself, not a wait for an event
        await asyncio.to_thread(end)
        await asyncio.gather(
            *(chat.terminal(timeout=60) for chat in chats),
            *(stream.finished(timeout=60) for stream in streams),
            return_exceptions=True,
        )
        await asyncio.to_thread(
            double.wait_until, lambda: all(g.finished for g in double.generations), WAIT
        )
    finally:
        await asyncio.gather(*(s.close() for s in sockets), *(s.cancel() for s in streams))
