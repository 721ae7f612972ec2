"""Daphne's request bodies (config/daphne_http.py): no form parsing by Twisted, a size limit.

Before the fix, Twisted parsed every multipart POST into `request.args` in memory (a 100 MB
anonymous POST to /health: +1.2 GB of RSS) and accepted bodies of any size. These tests run
a real Daphne process, as `make run` and Compose start it.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path

import httpx
import pytest

from config import daphne_http
from tests.support.live import DaphneServer, bearer, set_server_password
from tests.uploads.support import multipart, sha256

MIB = 1024 * 1024
#: The largest file of the Daphne these tests start; its body limit is this + 64 KiB.
UPLOAD_MAX = 16 * MIB
LIMIT = UPLOAD_MAX + 64 * 1024
WAIT = 60.0  # only a failing run waits this long

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    media = tmp_path_factory.mktemp("daphne-http-media")
    with DaphneServer(
        "daphne-http", UPLOAD_MAX_BYTES=str(UPLOAD_MAX), MEDIA_ROOT=str(media)
    ) as daphne:
        yield daphne


def raw_exchange(server: DaphneServer, head: bytes, body: bytes = b"") -> bytes:
    """Send `head` (and `body`), then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_refused(raw: bytes) -> None:
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.1 413 Content Too Large", raw[:500]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)
    assert error["code"] == "request_too_large"
    assert error["max_bytes"] == LIMIT
    assert str(LIMIT) in error["detail"]


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# -- Twisted's form parsing ------------------------------------------------------------------


def test_twisted_no_longer_parses_a_multipart_body(server):
    # A multipart body without a boundary: Twisted's own parser (if it still ran) answered
    # a bare `400 Bad Request` and closed the connection before the app saw the request.
    # Now the body reaches Django, whose parser answers in the app's error format.
    response = httpx.post(
        f"{server.url}/api/auth/token/",
        content=b"not multipart at all",
        headers={"Content-Type": "multipart/form-data"},
        timeout=WAIT,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error", response.text


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_a_multipart_body_costs_about_its_own_size(server):
    size = UPLOAD_MAX - MIB
    body, content_type = multipart([("file", "big.bin", b"\0" * size)])
    small, _ = multipart([("file", "small.bin", b"\0" * 1024)])
    headers = {"Content-Type": content_type}
    # Warm up the same path (imports, templates, the CSRF failure page), then measure the
    # peak RSS of the one big request from a reset high-water mark.
    assert httpx.post(f"{server.url}/health", content=small, headers=headers).status_code == 403
    assert server.process is not None
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current RSS
    before = rss_kib(pid, "VmHWM")

    response = httpx.post(f"{server.url}/health", content=body, headers=headers, timeout=WAIT)

    assert response.status_code == 403  # anonymous: CSRF
    growth = (rss_kib(pid, "VmHWM") - before) * 1024
    # Twisted's email parser cost ~12 times the body; now the body is held about once
    # (Daphne queues it for the app). A wide margin either way.
    assert growth < 4 * size, f"peak RSS grew by {growth / MIB:.0f} MiB for {size / MIB:.0f} MiB"


# -- the body size limit -----------------------------------------------------------------------


def request_head(server: DaphneServer, *lines: str) -> bytes:
    return "\r\n".join(
        ["POST /health HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *lines, "", ""]
    ).encode()


@pytest.mark.parametrize("expect", [[], ["Expect: 100-continue"]])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server, expect):
    head = request_head(
        server,
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {LIMIT + 1}",
        *expect,
    )
    raw = raw_exchange(server, head)  # the body is never sent: the server must answer anyway

    assert_refused(raw)
    assert b"100 Continue" not in raw


def test_a_body_of_any_declared_size_is_refused(server):
    head = request_head(
        server, "Content-Type: application/octet-stream", "Content-Length: 10000000000000"
    )
    assert_refused(raw_exchange(server, head))


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    head = request_head(
        server, "Content-Type: application/octet-stream", "Transfer-Encoding: chunked"
    )
    chunk = b"x" * MIB
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(LIMIT // MIB))
    rest = LIMIT - (LIMIT // MIB) * MIB + 1
    # The last chunk takes the body one byte past the limit; nothing is sent after it, so
    # nothing is left unread when the server closes.
    body += b"%x\r\n" % (rest + 10) + b"x" * rest
    assert_refused(raw_exchange(server, head, body))


def test_a_body_at_the_limit_reaches_the_app(server):
    response = httpx.post(
        f"{server.url}/health",
        content=b"x" * LIMIT,
        headers={"Content-Type": "application/octet-stream"},
        timeout=WAIT,
    )
    assert response.status_code == 403  # Django's CSRF check, not Daphne's 413


# -- what must keep working ----------------------------------------------------------------------


def test_an_upload_at_the_size_limit_works_through_daphne(server, transactional_db, user):
    content = b"0123456789abcde\n" * (UPLOAD_MAX // 16)
    response = httpx.post(
        f"{server.url}/api/uploads/",
        files={"file": ("big.txt", content, "text/plain")},
        headers=bearer(user),
        timeout=WAIT,
    )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == sha256(content)


def test_an_upload_over_the_size_limit_gets_the_apps_error(server, transactional_db, user):
    # Within Daphne's limit (the multipart allowance) but over the file limit: the app's own
    # upload handler refuses it, in its own words.
    content = b"x" * (UPLOAD_MAX + 1)
    response = httpx.post(
        f"{server.url}/api/uploads/",
        files={"file": ("big.txt", content, "text/plain")},
        headers=bearer(user),
        timeout=WAIT,
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "file_too_large"


def multipart_form(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(
        [(name, "", value.encode()) for name, value in fields.items()], uuid.uuid4().hex
    )
    return body, {"Content-Type": content_type}


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


def test_the_login_and_admin_pages_take_multipart_forms(server, transactional_db, make_user):
    admin = make_user("boss@example.com", is_staff=True, is_superuser=True)
    set_server_password(admin, "server password")  # the server hashes with PBKDF2
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        token = csrf_token(client.get("/accounts/login/").text)
        body, headers = multipart_form(
            {
                "csrfmiddlewaretoken": token,
                "username": admin.email,
                "password": "server password",
                "next": "/admin/",
            }
        )
        response = client.post("/accounts/login/", content=body, headers=headers)
        assert response.status_code == 302, response.text
        assert response.headers["location"] == "/admin/"

        page = client.get("/admin/")
        assert page.status_code == 200
        body, headers = multipart_form({"csrfmiddlewaretoken": csrf_token(page.text)})
        response = client.post("/admin/logout/", content=body, headers=headers)
        assert response.status_code == 302, response.text  # not 403: the CSRF token was read
        assert client.get("/admin/").status_code == 302  # signed out


# -- the pieces, in-process ------------------------------------------------------------------------


def test_the_limit_follows_the_settings(settings):
    settings.UPLOAD_MAX_BYTES = 10 * MIB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * MIB
    assert daphne_http.body_limit() == 10 * MIB + 64 * 1024
    settings.UPLOAD_MAX_BYTES = 1000
    assert daphne_http.body_limit() == 2 * MIB + 64 * 1024
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    assert daphne_http.body_limit() == 1000 + 64 * 1024


def test_install_makes_daphne_build_the_bounded_request(monkeypatch, settings):
    from daphne import http_protocol

    monkeypatch.setattr(http_protocol, "WebRequest", http_protocol.WebRequest)
    monkeypatch.setattr(daphne_http.BoundedWebRequest, "max_body_bytes", 0)
    monkeypatch.setattr(daphne_http.BoundedWebRequest, "refusal", b"")
    settings.UPLOAD_MAX_BYTES = 5 * MIB
    daphne_http.install()
    daphne_http.install()  # idempotent
    assert http_protocol.WebRequest is daphne_http.BoundedWebRequest
    assert daphne_http.BoundedWebRequest.max_body_bytes == daphne_http.body_limit()
    assert daphne_http.BoundedWebRequest.refusal.startswith(b"HTTP/1.1 413 ")
