"""The upload path through Django's ASGI handler, the way Daphne runs it."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.test import AsyncClient

from tests.uploads.support import URL, files_in, sha256
from uploads import services
from uploads.models import Upload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    # The ORM calls of these tests (and of the views) run in asgiref's worker thread, whose
    # connection would otherwise stay open and keep PostgreSQL from dropping the test
    # database at the end of the run.
    yield
    await sync_to_async(connections.close_all)()


async def test_upload_and_download_over_asgi(tokens, upload_dir):
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {tokens['access']}"}
    content = b"over asgi\n" * 1000

    response = await client.post(URL, {"file": SimpleUploadedFile("a.txt", content)}, headers=auth)

    assert response.status_code == 201, response.content
    assert response.json()["sha256"] == sha256(content)
    assert len(files_in(upload_dir)) == 1


async def test_size_limit_over_asgi(tokens, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 1000
    response = await AsyncClient().post(
        URL,
        {"file": SimpleUploadedFile("a.txt", b"a" * 5000)},
        headers={"Authorization": f"Bearer {tokens['access']}"},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert files_in(media_root) == []
    assert await sync_to_async(Upload.objects.count)() == 0


async def test_the_asgi_handler_streams_a_download_block_by_block(user, tokens):
    content = bytes(range(256)) * 4 * 300  # 300 KiB
    upload = await sync_to_async(services.store_upload)(
        owner=user, file=SimpleUploadedFile("a.txt", content.hex().encode())
    )
    expected = content.hex().encode()
    path = f"/api/uploads/{upload.pk}/download/"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {tokens['access']}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requested = False
    never = asyncio.Event()

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()  # the client stays connected

    sent = []

    async def send(message):
        sent.append(message)

    # Django warns, then reads the whole file into memory, when it has to consume a sync
    # iterator under ASGI: make that an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await ASGIHandler()(scope, receive, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    bodies = [m["body"] for m in sent[1:] if m.get("body")]
    assert b"".join(bodies) == expected
    assert len(bodies) >= len(expected) // (64 * 1024)
    assert max(len(b) for b in bodies) <= 64 * 1024
