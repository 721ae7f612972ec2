"""Stream handles returned by the Ollama client.

`ResponseStream` wraps the decoded NDJSON of /api/chat, /api/generate and /api/pull;
`RawStream` relays an Ollama response's bytes unchanged (for an Ollama-compatible proxy).
Both close the upstream HTTP response as soon as they are closed (`aclose()`, leaving
`async with`, or cancelling the task that iterates them): that is how Ollama is told to stop
generating.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from types import TracebackType
from typing import Generic, TypeVar

import httpx

from core.ollama.errors import OllamaError

T = TypeVar("T")


class ResponseStream(Generic[T]):
    """An async iterator of typed chunks, usable as an async context manager.

    Prefer `async with client.chat(...) as stream: async for chunk in stream: ...` so the
    upstream response is closed even when the loop is left early; `break` alone does not
    close an async iterator.
    """

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[T, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> ResponseStream[T]:
        return self

    def __anext__(self) -> Awaitable[T]:
        # The generator's own awaitable: no coroutine of ours per chunk (issue 16).
        return self._agen.__anext__()

    async def aclose(self) -> None:
        """Close the upstream response now (Ollama stops generating)."""
        await self._agen.aclose()

    async def __aenter__(self) -> ResponseStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RawStream:
    """An open upstream response: `status_code` and `headers` now, then the body's bytes.

    The error statuses were already turned into typed errors when it was opened, so a
    RawStream is always a 2xx/3xx answer. Transport failures while reading the body raise
    `OllamaTimeout` / `OllamaProtocolError`. Mid-stream `{"error": ...}` lines are relayed
    unchanged (they are part of Ollama's protocol). Reading to the end, or `aclose()`,
    releases the connection.
    """

    __slots__ = ("_closed", "_map_error", "response")

    def __init__(
        self,
        response: httpx.Response,
        map_error: Callable[[httpx.HTTPError, bool], OllamaError],
    ) -> None:
        self.response = response
        self._map_error = map_error
        self._closed = False

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def content_type(self) -> str:
        content_type: str = self.response.headers.get(
            "content-type", "application/json; charset=utf-8"
        )
        return content_type

    @property
    def is_ndjson(self) -> bool:
        return self.content_type.split(";")[0].strip() == "application/x-ndjson"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (no decoding, no re-framing); closes at the end."""
        try:
            async for chunk in self.response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._map_error(exc, True) from exc
        finally:
            await self.aclose()

    async def aiter_lines(self) -> AsyncIterator[bytes]:
        """The body split into lines, each ending in b"\\n" (a last unterminated line as is)."""
        buffer = b""
        async for chunk in self.aiter_bytes():
            buffer += chunk
            if b"\n" not in chunk:
                continue
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if buffer:
            yield buffer

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.response.aclose()

    async def __aenter__(self) -> RawStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RawStreamOpener:
    """`await client.stream_raw(...)` -> RawStream, or `async with client.stream_raw(...)`."""

    __slots__ = ("_open", "_stream")

    def __init__(self, open_: Callable[[], Awaitable[RawStream]]) -> None:
        self._open = open_
        self._stream: RawStream | None = None

    def __await__(self) -> Generator[object, None, RawStream]:
        return self._open().__await__()

    async def __aenter__(self) -> RawStream:
        self._stream = await self._open()
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.aclose()


__all__ = ["RawStream", "RawStreamOpener", "ResponseStream"]
