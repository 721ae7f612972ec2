"""The /api/ps probe against real HTTP servers: the Ollama double, and a tiny http.server for
the answers a real Ollama would not give (errors, HTML, hangs)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.probes import OllamaPsProbe, parse_ps

from .conftest import load_model


class Handler(BaseHTTPRequestHandler):
    # (status, content type, body bytes, delay seconds) set per test on the server object.
    def do_GET(self):
        status, ctype, body, delay = self.server.answer  # type: ignore[attr-defined]
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the probe gave up waiting (the timeout test): expected

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.answer = (200, "application/json", b'{"models": []}', 0)  # type: ignore[attr-defined]
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_loaded_models_from_the_double(ollama_double):
    load_model(ollama_double, "llama3.2:3b", keep_alive="10m")
    load_model(ollama_double, "qwen2.5:0.5b", keep_alive=-1)

    report = OllamaPsProbe().probe(ollama_double.url + "/")

    assert report.available is True and report.reason is None
    assert report.url == ollama_double.url + "/"
    assert ollama_double.last_request("/api/ps") is not None
    by_name = {m.name: m for m in report.models}
    assert set(by_name) == {"llama3.2:3b", "qwen2.5:0.5b"}
    llama = by_name["llama3.2:3b"]
    assert llama.size == 2019393189 + 512 * 2**20
    assert llama.size_vram == llama.size
    assert llama.expires_at is not None
    expires = datetime.fromisoformat(llama.expires_at)
    remaining = (expires - datetime.now(UTC)).total_seconds()
    assert 500 < remaining <= 600
    # keep_alive=-1: loaded "forever", which Ollama writes as a date centuries ahead.
    forever = by_name["qwen2.5:0.5b"].expires_at
    assert forever is not None and datetime.fromisoformat(forever).year > 2200
    assert report.elapsed_ms is not None and report.elapsed_ms >= 0


def test_nothing_loaded_is_available_and_empty(ollama_double):
    report = OllamaPsProbe().probe(ollama_double.url)
    assert report.available is True
    assert report.models == []


def test_error_status_gives_the_reason(ollama_double):
    ollama_double.script(path="/api/ps", status=500, status_error="runner crashed")
    report = OllamaPsProbe().probe(ollama_double.url)
    assert report.available is False
    assert report.reason == "HTTP 500: runner crashed"


def test_refused_connection():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = OllamaPsProbe().probe(f"http://127.0.0.1:{port}")
    assert report.available is False
    assert report.reason is not None
    assert report.reason.startswith("cannot connect: ConnectError")


def test_slow_server_times_out(tiny):
    tiny.answer = (200, "application/json", b'{"models": []}', 1.5)
    report = OllamaPsProbe(timeout=0.3).probe(url_of(tiny))
    # Not the late answer: the timeout (the answer would have made it available).
    assert report.available is False
    assert report.reason == "no answer within 0.3 s"


def test_html_instead_of_json(tiny):
    tiny.answer = (200, "text/html", b"<html>nginx welcome</html>", 0)
    report = OllamaPsProbe().probe(url_of(tiny))
    assert report.available is False
    assert report.reason == "the answer is not JSON"
    assert tiny.paths == ["/api/ps"]


def test_json_of_the_wrong_shape(tiny):
    tiny.answer = (200, "application/json", b'{"status": "ok"}', 0)
    report = OllamaPsProbe().probe(url_of(tiny))
    assert report.available is False
    assert report.reason == 'not an Ollama /api/ps answer (no "models" list)'


def test_proxy_error_page_is_cut_short(tiny):
    tiny.answer = (502, "text/html", b"x" * 5000, 0)
    report = OllamaPsProbe().probe(url_of(tiny))
    assert report.reason == "HTTP 502: " + "x" * 200


def test_malformed_entries_are_skipped_not_fatal(tiny):
    body = {
        "models": [
            "nonsense",
            {"size": 5},
            {
                "name": "gemma3:1b",
                "size": 1_000,
                "size_vram": -3,
                "expires_at": "2025-01-02T03:04:05.123456789-07:00",
                "context_length": 8192,
            },
            {"model": "smollm2:135m", "size": "big", "expires_at": "soon"},
        ]
    }
    tiny.answer = (200, "application/json", json.dumps(body).encode(), 0)
    report = OllamaPsProbe().probe(url_of(tiny))
    assert report.available is True
    assert report.skipped == 2
    gemma, smol = report.models
    assert (gemma.name, gemma.size, gemma.size_vram, gemma.context_length) == (
        "gemma3:1b",
        1000,
        None,
        8192,
    )
    # Nanoseconds cut to microseconds; the offset kept.
    assert gemma.expires_at == "2025-01-02T03:04:05.123456-07:00"
    assert (smol.name, smol.size, smol.expires_at) == ("smollm2:135m", None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-06-04T14:38:31.83753-07:00", "2024-06-04T14:38:31.837530-07:00"),
        ("2024-06-04T14:38:31Z", "2024-06-04T14:38:31+00:00"),
        ("2024-06-04T14:38:31", None),  # no offset: refuse to guess
        ("", None),
    ],
)
def test_expires_at_parsing(raw, expected):
    models, _ = parse_ps({"models": [{"name": "m", "expires_at": raw}]})
    assert models[0].expires_at == expected


def test_servers_are_probed_in_parallel():
    # Three servers that answer only once all three have been asked: probed one after the
    # other, the first would wait for an answer that never comes and time out. The order of
    # events says it, not a clock (the timeout is only reached when the test fails).
    listeners = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        listeners.append(sock)

    def answer_when_all_asked() -> None:
        connections = [listener.accept()[0] for listener in listeners]
        body = b'{"models": []}'
        for connection in connections:
            connection.recv(65536)  # the request
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            connection.close()

    server = threading.Thread(target=answer_when_all_asked, daemon=True)
    server.start()
    try:
        urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in listeners]
        reports = OllamaPsProbe(timeout=30).probe_many(urls)
    finally:
        for sock in listeners:
            sock.close()
    assert [r.url for r in reports] == urls
    assert [(r.available, r.reason) for r in reports] == [(True, None)] * 3


def test_a_server_that_never_answers_costs_one_timeout():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        [report] = OllamaPsProbe(timeout=0.2).probe_many(
            [f"http://127.0.0.1:{sock.getsockname()[1]}"]
        )
    finally:
        sock.close()
    assert (report.available, report.reason) == (False, "no answer within 0.2 s")
