"""aiohttp's exceptions to httpx's: the cases the end-to-end tests of the client cannot provoke
on demand (a reset socket, a bad URL), and the precedence between aiohttp's overlapping classes.
The failures a server can cause are in test_ollama_client.py, on both stacks."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import ContentLengthError, TransferEncodingError

from core.ollama.aiohttp_errors import PoolTimeoutError, to_httpx_error

KEY = ConnectionKey("127.0.0.1", 11434, False, True, None, None, None)


def payload_error(cause: Exception) -> aiohttp.ClientPayloadError:
    exc = aiohttp.ClientPayloadError(f"Response payload is not completed: {cause!r}")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "expected", "message"),
    [
        pytest.param(PoolTimeoutError("no slot"), httpx.PoolTimeout, "no slot", id="pool timeout"),
        # A connect timeout is also a server timeout and a connection error.
        pytest.param(
            aiohttp.ConnectionTimeoutError("slow"),
            httpx.ConnectTimeout,
            "slow",
            id="connect timeout",
        ),
        pytest.param(
            aiohttp.SocketTimeoutError("quiet"), httpx.ReadTimeout, "quiet", id="read timeout"
        ),
        pytest.param(
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),
            httpx.ConnectError,
            "[Errno 111] refused",
            id="refused",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            httpx.RemoteProtocolError,
            "Server disconnected without sending a response.",
            id="hang-up before the response",
        ),
        pytest.param(
            payload_error(TransferEncodingError("Not enough data to satisfy transfer length.")),
            httpx.RemoteProtocolError,
            "peer closed connection without sending complete message body "
            "(incomplete chunked read)",
            id="chunked body cut short",
        ),
        pytest.param(
            payload_error(
                ContentLengthError("Not enough data (received 3 of 9 bytes).")  # aiohttp's words
            ),
            httpx.RemoteProtocolError,
            "peer closed connection without sending complete message body "
            "(received 3 bytes, expected 9)",
            id="sized body cut short",
        ),
        pytest.param(
            payload_error(TransferEncodingError("Invalid chunk size:\n\n  b'zz'\n    ^")),
            httpx.RemoteProtocolError,
            "Invalid chunk size: b'zz'",
            id="bad chunk",
        ),
        # A reset while sending or reading is a broken response, not a connect failure.
        pytest.param(
            aiohttp.ClientOSError(104, "Connection reset by peer"),
            httpx.ReadError,
            None,
            id="reset",
        ),
        pytest.param(
            aiohttp.ClientConnectionResetError("closing transport"),
            httpx.ReadError,
            None,
            id="reset on write",
        ),
        pytest.param(aiohttp.InvalidURL("ftp://x"), httpx.UnsupportedProtocol, None, id="bad url"),
    ],
)
def test_to_httpx_error(exc, expected, message):
    mapped = to_httpx_error(exc)
    assert type(mapped) is expected
    if message is not None:
        assert str(mapped) == message
