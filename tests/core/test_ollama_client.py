"""The async Ollama client, against the Ollama double over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import re
import socket
import threading

import httpx
import ollama
import psutil
import pytest

from core.ollama import (
    ChatChunk,
    GenerateChunk,
    ModelNotFound,
    OllamaBadRequest,
    OllamaBusy,
    OllamaClient,
    OllamaError,
    OllamaProtocolError,
    OllamaServerError,
    OllamaStreamError,
    OllamaTimeout,
    OllamaUnreachable,
    Timings,
    close_all,
    get_client,
)
from core.ollama.errors import parse_missing_model
from tests.ollama_double import BUSY_MESSAGE, tokenize

MODEL = "llama3.2:3b"
USER = [{"role": "user", "content": "Tell me a story"}]


async def last_chunk(stream):
    """Drain a stream (closing it), and return its final chunk."""
    async with stream as chunks:
        return [chunk async for chunk in chunks][-1]


@pytest.fixture(params=["httpx", "aiohttp"])
def http_client(request):
    """The HTTP stack under OllamaClient: every test that reaches a server runs on both."""
    return request.param


@pytest.fixture
async def client(ollama_double, http_client):
    c = OllamaClient(ollama_double.url, http_client=http_client)
    yield c
    await c.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_connections(port: int) -> int:
    """This process's established TCP connections to `port` (the client side of them)."""
    return sum(
        1
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


@pytest.fixture
def unanswered_port():
    """A port whose listen queue is full: the kernel drops further SYNs, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


@pytest.fixture
async def raw_server():
    """`await raw_server(reply)`: the URL of a TCP server that reads one request and answers
    `reply`'s bytes as they are, then hangs up (`None`: hangs up without a word)."""
    servers = []

    async def start(reply):
        async def answer(reader, writer):
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                # Read the body too: closing with unread bytes would send a reset instead.
                await reader.readexactly(int(length[1]) if length else 0)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- timings


def test_timings_derived_figures():
    t = Timings(
        total_duration=3_000_000_000,
        load_duration=500_000_000,
        prompt_eval_count=20,
        prompt_eval_duration=250_000_000,
        eval_count=50,
        eval_duration=2_000_000_000,
    )
    assert t.tokens_per_second == pytest.approx(25.0)
    assert t.prompt_tokens_per_second == pytest.approx(80.0)
    assert t.total_tokens == 70
    assert t.total_duration_seconds == 3.0 and t.load_duration_seconds == 0.5
    assert t.prompt_eval_duration_seconds == 0.25 and t.eval_duration_seconds == 2.0
    assert t.as_dict()["tokens_per_second"] == pytest.approx(25.0)
    empty = Timings()
    assert empty.tokens_per_second is None and empty.total_tokens is None
    assert Timings(eval_count=3, eval_duration=0).tokens_per_second is None
    assert Timings.from_response({"done": True}) is None


def test_model_name_parsed_from_both_quote_styles():
    assert parse_missing_model('model "llama3:8b" not found, try pulling it first') == "llama3:8b"
    assert parse_missing_model("model 'phi3' not found, try pulling it first") == "phi3"
    assert parse_missing_model("something else") is None


# --------------------------------------------------------------------------- generation


async def test_chat_streams_typed_chunks_and_sends_the_request(ollama_double, client):
    reply = "Once upon a time, a GPU."
    ollama_double.script(reply=reply, token_delay=0.005)
    chunks = []
    async with client.chat(
        MODEL,
        USER,
        options={"temperature": 0.2, "num_ctx": 4096},
        keep_alive="10m",
        format="json",
    ) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert all(isinstance(c, ChatChunk) for c in chunks)
    *parts, final = chunks
    assert "".join(c.content for c in parts) == reply
    assert all(not c.done and c.timings is None for c in parts)
    assert final.done and final.done_reason == "stop" and final.model == MODEL
    t = final.timings
    assert t.eval_count == len(tokenize(reply)) == len(parts)
    assert t.tokens_per_second == pytest.approx(t.eval_count / t.eval_duration * 1e9)
    assert t.eval_duration_seconds >= 0.005 * len(parts)
    assert final.raw["done"] is True

    sent = ollama_double.last_request("/api/chat").body
    assert sent == {
        "model": MODEL,
        "messages": USER,
        "stream": True,
        "options": {"temperature": 0.2, "num_ctx": 4096},
        "format": "json",
        "keep_alive": "10m",
    }


async def test_chat_thinking_and_tools_are_passed(ollama_double, client):
    ollama_double.script(thinking="Let me see.", reply="Done.")
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    chunks = [c async for c in client.chat("qwen3:0.6b", USER, think=True, tools=tools)]
    assert "".join(c.thinking for c in chunks) == "Let me see."
    assert "".join(c.content for c in chunks) == "Done."
    body = ollama_double.last_request("/api/chat").body
    assert body["think"] is True and body["tools"] == tools


async def test_chat_message_images_as_bytes_are_base64_encoded(ollama_double, client):
    messages = [{"role": "user", "content": "What is this?", "images": [b"\x89PNG"]}]
    result = await last_chunk(client.chat("llava:7b", messages))
    assert result.done
    sent = ollama_double.last_request("/api/chat").body["messages"][0]["images"]
    assert sent == [base64.b64encode(b"\x89PNG").decode()]


async def test_generate_streaming_and_not(ollama_double, client):
    ollama_double.script(reply="It is blue.")
    chunks = [c async for c in client.generate(MODEL, "Why is the sky blue?", system="Be terse")]
    assert all(isinstance(c, GenerateChunk) for c in chunks)
    assert "".join(c.response for c in chunks) == "It is blue."
    assert chunks[-1].done and chunks[-1].context and chunks[-1].timings.eval_count == 4
    body = ollama_double.last_request("/api/generate").body
    assert body["prompt"] == "Why is the sky blue?" and body["system"] == "Be terse"

    chunks = [
        c
        async for c in client.generate(
            "llava:7b", "Describe", images=[b"\x89PNG fake", "YWxyZWFkeQ=="]
        )
    ]
    assert chunks[-1].done and "".join(c.response for c in chunks) != ""
    sent = ollama_double.last_request("/api/generate").body
    assert sent["images"] == [base64.b64encode(b"\x89PNG fake").decode(), "YWxyZWFkeQ=="]


# --------------------------------------------------------------------------- models


async def test_model_endpoints(ollama_double, client):
    assert await client.version() == "0.12.6"
    tags = await client.tags()
    names = [m.name for m in tags]
    assert {"llama3.2:3b", "qwen2.5:0.5b", "llava:7b"} <= set(names)
    llava = next(m for m in tags if m.name == "llava:7b")
    assert llava.size > 0 and llava.details.family == "llama" and len(llava.digest) == 64

    show = await client.show("llava:7b")
    assert show.supports_vision and show.capabilities == ["completion", "vision"]
    assert show.context_length == 32768 and show.template and show.details.parameter_size

    assert await client.ps() == []
    loaded = await client.load("qwen2.5:0.5b", keep_alive="1h")
    assert loaded.done_reason == "load"
    assert ollama_double.last_request("/api/generate").body["keep_alive"] == "1h"
    running = await client.ps()
    assert [m.name for m in running] == ["qwen2.5:0.5b"]
    assert running[0].expires_at and running[0].size_vram > 0


async def test_pull_then_delete(ollama_double, client):
    progress = [p async for p in client.pull("smollm2:135m")]
    assert progress[0] == {"status": "pulling manifest"}
    assert progress[-1] == {"status": "success"}
    assert any(p.get("completed") == p.get("total") and "digest" in p for p in progress)
    assert "smollm2:135m" in [m.name for m in await client.tags()]

    await client.delete("smollm2:135m")
    assert "smollm2:135m" not in [m.name for m in await client.tags()]
    with pytest.raises(ModelNotFound) as info:
        await client.delete("smollm2:135m")
    assert info.value.model == "smollm2:135m" and info.value.status_code == 404


async def test_pull_of_an_unknown_model_is_a_stream_error(client):
    with pytest.raises(OllamaStreamError, match="file does not exist"):
        async for _ in client.pull("no-such-model"):
            pass


# --------------------------------------------------------------------------- errors


async def test_unreachable_names_the_host(http_client):
    url = f"http://127.0.0.1:{free_port()}"
    async with OllamaClient(url, connect_timeout=1, http_client=http_client) as c:
        with pytest.raises(OllamaUnreachable) as info:
            await c.tags()
        assert url in str(info.value) and info.value.host == url
        assert info.value.code == "ollama_unreachable" and info.value.http_status == 502
        with pytest.raises(OllamaUnreachable):
            async for _ in c.chat(MODEL, USER):
                pass


async def test_model_not_found_everywhere(client):
    for call in (
        lambda: last_chunk(client.chat("ghost:1b", USER)),
        lambda: client.show("ghost:1b"),
        lambda: last_chunk(client.generate("ghost:1b", "x")),
        lambda: client.load("ghost:1b"),
    ):
        with pytest.raises(ModelNotFound) as info:
            await call()
        assert info.value.model == "ghost:1b" and info.value.code == "model_not_found"
    with pytest.raises(ModelNotFound, match='model "ghost:1b" not found'):
        async for _ in client.chat("ghost:1b", USER):
            pass


async def test_bad_request_carries_ollama_message(client):
    with pytest.raises(OllamaBadRequest) as info:
        async for _ in client.chat(MODEL, USER, options={"temperature": "warm"}):
            pass
    assert info.value.message == 'option "temperature" must be of type float32'
    assert info.value.status_code == 400 and info.value.code == "bad_request"
    images = [{"role": "user", "content": "see", "images": ["aGk="]}]
    with pytest.raises(OllamaBadRequest, match="does not support vision"):
        await last_chunk(client.chat(MODEL, images))


async def test_busy_when_the_queue_is_full(ollama_double, client):
    ollama_double.script(status=503)
    with pytest.raises(OllamaBusy) as info:
        await last_chunk(client.chat(MODEL, USER))
    assert info.value.retry_after == 5.0 and info.value.message == BUSY_MESSAGE
    assert info.value.code == "ollama_busy" and info.value.status_code == 503

    # And for real: one generating, one queued, the third refused.
    ollama_double.configure(max_queue=1, reply="a b", token_delay=0.01)
    ollama_double.script(tokens=["x"] * 20, token_delay=0.02)
    first = asyncio.create_task(last_chunk(client.chat(MODEL, USER)))
    await ollama_double.await_until(lambda: ollama_double.in_flight == 1)
    second = asyncio.create_task(last_chunk(client.chat(MODEL, USER)))
    await ollama_double.await_until(lambda: ollama_double.queued == 1)
    with pytest.raises(OllamaBusy):
        async for _ in client.chat(MODEL, USER):
            pass
    assert (await first).done and (await second).done


async def test_busy_uses_retry_after_header():
    def handler(request):
        return httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "12"})

    async with OllamaClient("http://ollama.test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(OllamaBusy) as info:
            await c.tags()
    assert info.value.retry_after == 12.0


async def test_server_error(ollama_double, client):
    ollama_double.script(status=500, status_error="llama runner process has terminated")
    with pytest.raises(OllamaServerError) as info:
        async for _ in client.chat(MODEL, USER):
            pass
    assert info.value.status_code == 500 and info.value.code == "ollama_error"
    assert info.value.message == "llama runner process has terminated"


async def test_stream_error_after_chunks_were_yielded(ollama_double, client):
    ollama_double.script(reply="alpha beta gamma delta", error_after=2, error_message="OOM")
    got = []
    with pytest.raises(OllamaStreamError) as info:
        async for chunk in client.chat(MODEL, USER):
            got.append(chunk.content)
    assert got == ["alpha", " beta"]
    assert info.value.message == "OOM" and info.value.code == "ollama_stream_error"


async def test_dropped_connection_is_a_protocol_error(ollama_double, client):
    ollama_double.script(reply="alpha beta gamma delta", drop_after=2)
    got = []
    with pytest.raises(OllamaProtocolError) as info:
        async for chunk in client.chat(MODEL, USER):
            got.append(chunk.content)
    assert got == ["alpha", " beta"] and info.value.code == "ollama_protocol_error"
    assert str(info.value) == (
        f"The connection to Ollama at {ollama_double.url} dropped mid-stream: peer closed "
        "connection without sending complete message body (incomplete chunked read)"
    )
    # Dropped before any byte of a non-streamed reply.
    ollama_double.script(drop_after=0)
    with pytest.raises(OllamaProtocolError):
        await last_chunk(client.chat(MODEL, USER))


async def test_what_arrived_before_a_drop_is_delivered_before_the_error(ollama_double, client):
    # A consumer slower than the network: the tokens and the drop are both in when it reads on.
    held = ollama_double.script(tokens=["a", "b", "c", "d"], hold_after=1, drop_after=3)
    got = []
    async with client.chat(MODEL, USER) as stream:
        assert (await anext(stream)).content == "a"
        ollama_double.release(held)
        assert await ollama_double.await_until(lambda: ollama_double.last_generation.dropped)
        # A round trip on another connection, during which the event loop takes the drop in.
        assert (await client.version()) == "0.12.6"
        with pytest.raises(OllamaProtocolError, match="dropped mid-stream"):
            async for chunk in stream:
                got.append(chunk.content)
    assert got == ["b", "c"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"message":{"role":"assistant","content":"a"},"done":false}\nnot json\n',
        b'{"message":{"role":"assistant","content":"a"},"done":false}\n',  # no done
        b"[1, 2]\n",
    ],
)
async def test_malformed_or_unfinished_stream_is_a_protocol_error(body):
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "application/x-ndjson"}
        )
    )
    async with OllamaClient("http://ollama.test", transport=transport) as c:
        with pytest.raises(OllamaProtocolError):
            async for _ in c.chat(MODEL, USER):
                pass


async def test_timeouts(ollama_double, http_client):
    async with OllamaClient(ollama_double.url, read_timeout=0.1, http_client=http_client) as c:
        # Nothing at all (the model is still "loading").
        ollama_double.script(load_duration=0.5)
        with pytest.raises(OllamaTimeout) as info:
            await last_chunk(c.chat(MODEL, USER))
        assert info.value.code == "ollama_timeout"
        # Silence between two tokens.
        ollama_double.script(tokens=["a", "b"], token_delay=0.3)
        with pytest.raises(OllamaTimeout):
            async for _ in c.chat("qwen2.5:0.5b", USER):
                pass


async def test_connect_timeout_is_unreachable(unanswered_port, http_client):
    url = f"http://127.0.0.1:{unanswered_port}"
    async with OllamaClient(url, connect_timeout=0.2, http_client=http_client) as c:
        with pytest.raises(OllamaUnreachable) as info:
            await c.tags()
        assert str(info.value) == f"Timed out connecting to Ollama at {url}"
        with pytest.raises(OllamaUnreachable, match="Timed out connecting"):
            await last_chunk(c.chat(MODEL, USER))


async def test_no_free_connection_within_the_pool_timeout_is_a_timeout(ollama_double, http_client):
    held = ollama_double.script(tokens=["x"] * 3, hold_after=1)
    async with OllamaClient(
        ollama_double.url, read_timeout=0.2, max_connections=1, http_client=http_client
    ) as c:
        upstream = await c.stream_raw("POST", "/api/chat", {"model": MODEL, "messages": USER})
        with pytest.raises(OllamaTimeout) as info:
            await c.tags()  # waits for the one connection, which the stream holds
        assert info.value.code == "ollama_timeout"
        ollama_double.release(held)
        await upstream.aclose()
    assert ollama_double.requests_to("/api/tags") == []


async def test_idle_connections_beyond_max_keepalive_are_closed(ollama_double, http_client):
    before = open_connections(ollama_double.port)
    held = ollama_double.script(reply="a b", hold_after=1, times=3)
    async with OllamaClient(
        ollama_double.url, max_keepalive_connections=1, http_client=http_client
    ) as c:
        streams = [asyncio.create_task(last_chunk(c.chat(MODEL, USER))) for _ in range(3)]
        assert await ollama_double.await_until(
            lambda: open_connections(ollama_double.port) == before + 3
        )
        ollama_double.release(held)
        assert all(chunk.done for chunk in await asyncio.gather(*streams))
        # One is kept for the next request, the two others are closed.
        assert await ollama_double.await_until(
            lambda: open_connections(ollama_double.port) == before + 1
        )
        assert (await c.version()) == "0.12.6"
        assert open_connections(ollama_double.port) == before + 1
    assert await ollama_double.await_until(lambda: open_connections(ollama_double.port) == before)


# A server that breaks HTTP itself, which the double (a real HTTP server) cannot.
HANG_UPS = {
    "nothing": None,
    "half the headers": b"HTTP/1.1 200 OK\r\nContent-Ty",
}
MALFORMED = {
    "status line": b"garbage\r\n\r\n",
    "header line": b"HTTP/1.1 200 OK\r\nContent-Type application/json\r\n\r\n",
    "chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "short body": b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"models":',
}


@pytest.mark.parametrize("reply", HANG_UPS.values(), ids=HANG_UPS.keys())
async def test_hanging_up_before_the_response_is_a_protocol_error(raw_server, http_client, reply):
    url = await raw_server(reply)
    async with OllamaClient(url, http_client=http_client) as c:
        with pytest.raises(OllamaProtocolError) as info:
            await c.tags()
        assert str(info.value) == (
            f"Ollama at {url} closed the connection without a complete response: "
            "Server disconnected without sending a response."
        )
        with pytest.raises(OllamaProtocolError, match="without a complete response"):
            await last_chunk(c.chat(MODEL, USER))
        with pytest.raises(OllamaProtocolError, match="without a complete response"):
            await c.stream_raw("POST", "/api/chat", {"model": MODEL, "messages": USER})


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_response_is_a_protocol_error(raw_server, http_client, reply):
    url = await raw_server(reply)
    async with OllamaClient(url, http_client=http_client) as c:
        with pytest.raises(OllamaProtocolError) as info:
            await c.tags()
        assert info.value.code == "ollama_protocol_error" and info.value.host == url
        with pytest.raises(OllamaProtocolError):
            await last_chunk(c.chat(MODEL, USER))
        with pytest.raises(OllamaProtocolError):
            async with c.stream_raw("GET", "/api/tags") as upstream:
                await upstream.aread()


async def test_a_body_cut_short_reads_the_same_on_both_stacks(raw_server, http_client):
    url = await raw_server(MALFORMED["short body"])
    async with OllamaClient(url, http_client=http_client) as c:
        with pytest.raises(OllamaProtocolError) as info:
            await c.tags()
    assert str(info.value) == (
        f"Ollama at {url} closed the connection without a complete response: peer closed "
        "connection without sending complete message body (received 10 bytes, expected 100)"
    )


def test_every_error_is_an_ollama_error_with_a_code():
    classes = [
        OllamaUnreachable,
        OllamaTimeout,
        ModelNotFound,
        OllamaBusy,
        OllamaBadRequest,
        OllamaStreamError,
        OllamaProtocolError,
        OllamaServerError,
    ]
    codes = {cls.code for cls in classes}
    assert len(codes) == len(classes)
    for cls in classes:
        err = cls("boom", host="http://h:1")
        assert isinstance(err, OllamaError) and err.host == "http://h:1"
        assert err.to_dict()["code"] == cls.code and str(err) == "boom"


# --------------------------------------------------------------------------- cancellation


async def test_aclose_hangs_up_and_ollama_stops(ollama_double, client):
    ollama_double.script(tokens=["tok "] * 200, token_delay=0.02)
    stream = client.chat(MODEL, USER)
    first = await anext(stream)
    assert first.content == "tok "
    await stream.aclose()
    assert await ollama_double.await_until(lambda: ollama_double.last_generation.finished)
    gen = ollama_double.last_generation
    assert gen.client_disconnected and not gen.completed and gen.tokens_sent < 10


async def test_leaving_async_with_early_hangs_up(ollama_double, client):
    ollama_double.script(tokens=["tok "] * 200, token_delay=0.02)
    async with client.chat(MODEL, USER) as stream:
        async for _ in stream:
            break
    assert await ollama_double.await_until(lambda: ollama_double.last_generation.finished)
    assert ollama_double.last_generation.client_disconnected


async def test_cancelling_the_consumer_task_hangs_up(ollama_double, client):
    ollama_double.script(tokens=["tok "] * 200, token_delay=0.02)
    received = asyncio.Event()

    async def consume():
        async for _ in client.chat(MODEL, USER):
            received.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(received.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ollama_double.await_until(lambda: ollama_double.last_generation.finished)
    gen = ollama_double.last_generation
    assert gen.client_disconnected and gen.tokens_sent < 10


async def test_a_complete_stream_is_not_a_hang_up(ollama_double, client):
    ollama_double.script(reply="all of it")
    async for _ in client.chat(MODEL, USER):
        pass
    assert await ollama_double.await_until(lambda: ollama_double.last_generation.finished)
    gen = ollama_double.last_generation
    assert gen.completed and not gen.client_disconnected


# --------------------------------------------------------------------------- raw pass-through


async def test_stream_raw_relays_bytes_unchanged(ollama_double, client):
    ollama_double.script(reply="raw bytes here", times=2)
    body = {"model": MODEL, "messages": USER}
    async with httpx.AsyncClient(base_url=ollama_double.url) as plain:
        direct = (await plain.post("/api/chat", json=body)).content
    upstream = await client.stream_raw("POST", "/api/chat", body)
    assert upstream.status_code == 200 and upstream.is_ndjson
    assert upstream.headers["content-type"] == "application/x-ndjson"
    lines = [line async for line in upstream.aiter_lines()]
    assert all(line.endswith(b"\n") for line in lines)
    relayed = b"".join(lines)
    # Same framing and fields as a direct read (timestamps and durations differ).
    assert len(lines) == direct.count(b"\n")
    mine = [json.loads(x) for x in relayed.splitlines()]
    theirs = [json.loads(x) for x in direct.splitlines()]
    assert [m["message"] for m in mine] == [t["message"] for t in theirs]
    assert [sorted(m) for m in mine] == [sorted(t) for t in theirs]


async def test_stream_raw_non_streaming_endpoint_and_context_manager(client):
    async with client.stream_raw("GET", "/api/version") as upstream:
        assert upstream.status_code == 200
        assert upstream.content_type.startswith("application/json")
        assert json.loads(await upstream.aread()) == {"version": "0.12.6"}


async def test_stream_raw_maps_errors_before_the_first_byte(ollama_double, client, http_client):
    with pytest.raises(ModelNotFound) as info:
        await client.stream_raw("POST", "/api/chat", {"model": "ghost", "messages": USER})
    assert info.value.status_code == 404 and info.value.model == "ghost"
    ollama_double.script(status=503)
    with pytest.raises(OllamaBusy):
        async with client.stream_raw("POST", "/api/chat", {"model": MODEL, "messages": USER}):
            pass
    async with OllamaClient(f"http://127.0.0.1:{free_port()}", http_client=http_client) as dead:
        with pytest.raises(OllamaUnreachable):
            await dead.stream_raw("GET", "/api/tags")


async def test_stream_raw_midstream_error_line_is_relayed(ollama_double, client):
    ollama_double.script(reply="a b c", error_after=1, error_message="bad things")
    upstream = await client.stream_raw("POST", "/api/chat", {"model": MODEL, "messages": USER})
    lines = [line async for line in upstream.aiter_lines()]
    assert json.loads(lines[-1]) == {"error": "bad things"} and len(lines) == 2


async def test_stream_raw_aclose_hangs_up(ollama_double, client):
    ollama_double.script(tokens=["tok "] * 200, token_delay=0.02)
    upstream = await client.stream_raw("POST", "/api/chat", {"model": MODEL, "messages": USER})
    async for _ in upstream.aiter_bytes():
        break
    await upstream.aclose()
    assert await ollama_double.await_until(lambda: ollama_double.last_generation.finished)
    gen = ollama_double.last_generation
    assert gen.client_disconnected and gen.tokens_sent < 10


# --------------------------------------------------------------------------- per-loop cache


async def test_get_client_is_cached_per_loop_and_host(ollama_double, http_client):
    a = get_client(ollama_double.url, http_client=http_client)
    assert get_client(ollama_double.url + "/") is a
    assert get_client("127.0.0.1:1", http_client=http_client) is not a
    assert (await a.version()) == "0.12.6"

    other: list[OllamaClient] = []

    def in_another_loop():
        async def main():
            c = get_client(ollama_double.url, http_client=http_client)
            other.append(c)
            assert get_client(ollama_double.url) is c
            assert await c.version() == "0.12.6"
            await close_all()
            assert c.is_closed

        asyncio.run(main())

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    thread.join(5)
    assert other and other[0] is not a
    assert not a.is_closed  # the other loop's close_all left ours alone

    await close_all()
    assert a.is_closed
    b = get_client(ollama_double.url, http_client=http_client)
    assert b is not a and not b.is_closed
    await close_all()


def test_get_client_needs_a_running_loop():
    with pytest.raises(RuntimeError):
        get_client("http://127.0.0.1:11434")


def test_a_client_left_behind_by_its_closed_loop_goes_quietly(ollama_double, http_client, caplog):
    # asgiref's async_to_sync runs a sync caller's coroutine in a loop of its own, closed after
    # it: the client it cached can no longer be closed, and must not log errors when collected.
    async def use():
        return await get_client(ollama_double.url, http_client=http_client).version()

    assert asyncio.run(use()) == "0.12.6"
    assert asyncio.run(use()) == "0.12.6"  # get_client forgets the first, closed, loop's client
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --------------------------------------------------------------------------- official client


async def test_official_async_client_against_the_double(ollama_double):
    oc = ollama.AsyncClient(host=ollama_double.url)
    try:
        await _exercise_official_async_client(ollama_double, oc)
    finally:
        await oc.close()


async def _exercise_official_async_client(ollama_double, oc):
    listed = await oc.list()
    assert "llava:7b" in [m.model for m in listed.models]

    ollama_double.script(reply="Hello from the double")
    parts = [p async for p in await oc.chat(model=MODEL, messages=USER, stream=True)]
    assert "".join(p.message.content for p in parts) == "Hello from the double"
    assert parts[-1].done and parts[-1].eval_count == len(parts) - 1

    ollama_double.script(reply="Whole")
    whole = await oc.chat(model=MODEL, messages=USER)
    assert whole.message.content == "Whole" and whole.done_reason == "stop"

    gen = await oc.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
    assert gen.done_reason == "length" and gen.eval_count == 1 and gen.context

    show = await oc.show("llava:7b")
    assert show.capabilities == ["completion", "vision"]
    assert show.modelinfo["llama.context_length"] == 32768

    with pytest.raises(ollama.ResponseError) as info:
        await oc.chat(model="ghost", messages=USER)
    assert info.value.status_code == 404 and "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await oc.chat(model=MODEL, messages=USER, options={"temperature": "x"})
    assert info.value.status_code == 400
    ollama_double.script(error_after=1, error_message="midway")
    with pytest.raises(ollama.ResponseError, match="midway"):
        async for _ in await oc.chat(model=MODEL, messages=USER, stream=True):
            pass


def test_official_sync_client_against_the_double(ollama_double):
    with ollama.Client(host=ollama_double.url) as oc:
        _exercise_official_sync_client(ollama_double, oc)


def _exercise_official_sync_client(ollama_double, oc):
    ollama_double.script(reply="sync reply")
    assert oc.chat(model=MODEL, messages=USER).message.content == "sync reply"
    assert [m.name for m in oc.ps().models] == [MODEL]
    pulled = list(oc.pull("gemma3:1b", stream=True))
    assert pulled[-1].status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        oc.show("ghost")
    assert info.value.status_code == 404
