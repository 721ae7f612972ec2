"""An httpx transport on aiohttp, for the Ollama client (`OLLAMA_HTTP_CLIENT=aiohttp`).

aiohttp parses HTTP in C and keeps its idle connections in a plain deque, where httpcore
parses in Python (h11) and checks every pooled connection's socket on every request start
and close (O(connections), 38 % of the relay's CPU at 50 streams): issue 16. Behind httpx's
API the client's code and error mapping stay the same; this module makes aiohttp fail,
time out, pool and hang up the way httpx's own transport does:

- failures raise the httpx exception httpcore raises (`core.ollama.aiohttp_errors`);
- timeouts: `connect` bounds the TCP connect, `read` each wait for data, `pool` the wait for
  a free connection (aiohttp has no write timeout; Ollama's requests are small);
- `max_connections` caps the open connections, `max_keepalive_connections` the idle ones,
  `keepalive_expiry` their idle life;
- closing a response before its end closes its connection, which is how Ollama is told to
  stop generating.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.tracing import Trace

from core.ollama.aiohttp_errors import PoolTimeoutError, to_httpx_error

# What aiohttp raises through a request or a body read; mapped to httpx's classes.
_FAILURES = (aiohttp.ClientError, HttpProcessingError)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector with httpx's pool semantics (see the module's docstring)."""

    def __init__(self, limits: httpx.Limits, ssl: Any) -> None:
        super().__init__(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl,
        )
        self._max_idle = limits.max_keepalive_connections

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature, overridden)
    ) -> Connection:
        # aiohttp bounds the wait for a free connection and the TCP connect together by
        # `timeout.connect` and reports both as a connect timeout; httpx times the wait by
        # itself (its pool timeout, passed here as `connect`) and calls it a pool timeout.
        key = req.connection_key
        if not self._conns.get(key) and self._available_connections(key) <= 0:
            try:
                async with asyncio.timeout(timeout.connect):
                    await self._wait_for_available_connection(key, traces)
            except TimeoutError as exc:
                raise PoolTimeoutError(f"No free connection to {req.url.host} in time") from exc
        return await super().connect(req, traces, timeout)

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        # aiohttp keeps every released connection idle (until keepalive_timeout); httpx keeps
        # at most max_keepalive_connections of them and closes the others.
        if self._max_idle is not None and len(self._conns.get(key, ())) >= self._max_idle:
            should_close = True
        super()._release(key, protocol, should_close=should_close)

    # A client whose event loop closed without `close_all()` (asgiref's async_to_sync runs a
    # sync caller's coroutine in a loop of its own) can no longer be closed; its sockets go
    # when collected, as httpx's do, where aiohttp would log an error for the session and
    # another for the connector.
    @property
    def closed(self) -> bool:
        return self._closed or self._loop.is_closed()

    def __del__(self, *args: Any) -> None:
        if not self._loop.is_closed():
            super().__del__(*args)


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response's body for httpx: each read as it arrives, failures as httpx's."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
        except _FAILURES as exc:
            # aiohttp raises a failure (a drop, a read timeout) ahead of the bytes that arrived
            # before it and were not read yet; httpcore hands those over first, and the last
            # tokens of a reply cut short are among them. Only the private buffer has them.
            if content._buffer:
                yield content._read_nowait(-1)
            raise to_httpx_error(exc) from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()  # back to the pool
        else:
            # Cut short (closed early, cancelled, failed): drop the connection, not drain it,
            # so Ollama sees the hang-up and stops generating.
            response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's `AsyncHTTPTransport` for plain HTTP/1.1, on aiohttp.

    The aiohttp session is created on first use, in the event loop of the request (like
    httpx's, the transport belongs to that loop).
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        # The CA bundle httpx verifies against (certifi), not the system's, for HTTPS hosts.
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=_Connector(self._limits, self._ssl),
            # httpx.AsyncClient keeps the cookies and sends them in the request's headers.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes Content-Encoding itself
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        timeout = request.extensions.get("timeout", {})
        headers = request.headers.multi_items()
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp does the chunked framing
            data = request.stream  # type: ignore[assignment]
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # the wait for a free connection: _Connector
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except _FAILURES as exc:
            raise to_httpx_error(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                if response.version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


__all__ = ["AiohttpTransport"]
