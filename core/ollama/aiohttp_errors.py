"""aiohttp's failures as the httpx exceptions httpcore raises for the same failure.

`OllamaClient` turns httpx exceptions into typed Ollama errors by their class (a connect
timeout makes `OllamaUnreachable`, a read timeout `OllamaTimeout`, a broken response
`OllamaProtocolError`), so the aiohttp transport must raise the class httpcore would, and,
where the detail is shown to users, the same words. httpx_aiohttp's own table gets this wrong
(any `ClientConnectionError`, a server hanging up among them, becomes `ConnectTimeout`, and
a malformed response escapes as a raw aiohttp error).
"""

from __future__ import annotations

import re

import aiohttp
import httpx
from aiohttp.http_exceptions import ContentLengthError, HttpProcessingError, TransferEncodingError


class PoolTimeoutError(aiohttp.ClientError):
    """No connection of the pool came free in time (httpx's pool timeout).

    aiohttp has no error of its own for it: its `connect` timeout covers the wait for a free
    connection and the TCP connect together, and both end as `ConnectionTimeoutError`.
    """


# httpcore's (h11's) wording for a body cut short, which users see in OllamaProtocolError.
_INCOMPLETE_BODY = "peer closed connection without sending complete message body"
_NO_RESPONSE = "Server disconnected without sending a response."
_RECEIVED_OF = re.compile(r"received (\d+) of (\d+) bytes")


def _parser_detail(exc: HttpProcessingError) -> str:
    """aiohttp's parser message on one line, without its caret diagram."""
    lines = (line.strip() for line in exc.message.splitlines())
    return " ".join(line for line in lines if line and set(line) != {"^"})


def _payload_detail(exc: aiohttp.ClientPayloadError) -> str:
    cause = exc.__cause__
    if isinstance(cause, ContentLengthError):
        counts = _RECEIVED_OF.search(cause.message)
        if counts:
            return f"{_INCOMPLETE_BODY} (received {counts[1]} bytes, expected {counts[2]})"
    if isinstance(cause, TransferEncodingError) and cause.message.startswith("Not enough data"):
        return f"{_INCOMPLETE_BODY} (incomplete chunked read)"
    if isinstance(cause, HttpProcessingError):
        return _parser_detail(cause)
    return str(exc)


def to_httpx_error(exc: aiohttp.ClientError | HttpProcessingError) -> httpx.TransportError:
    """The httpx exception httpcore raises for the failure aiohttp reported as `exc`.

    The order matters: aiohttp's classes overlap (a connect timeout is also a server timeout
    and a connection error; a refused connection is also an OS error).
    """
    if isinstance(exc, PoolTimeoutError):
        return httpx.PoolTimeout(str(exc))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc))
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: before headers or mid-body
        return httpx.ReadTimeout(str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        return httpx.ConnectError(str(exc.os_error) or str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):  # the peer hung up before a response
        return httpx.RemoteProtocolError(_NO_RESPONSE)
    if isinstance(exc, aiohttp.ClientPayloadError):  # the body cut short or malformed
        return httpx.RemoteProtocolError(_payload_detail(exc))
    if isinstance(exc, HttpProcessingError):
        return httpx.RemoteProtocolError(_parser_detail(exc))
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        cause = exc.__cause__
        if isinstance(cause, HttpProcessingError):
            return httpx.RemoteProtocolError(_parser_detail(cause))
        return httpx.RemoteProtocolError(exc.message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(str(exc))
    # A reset or another socket error while the request was sent or the response read.
    return httpx.ReadError(str(exc))


__all__ = ["PoolTimeoutError", "to_httpx_error"]
