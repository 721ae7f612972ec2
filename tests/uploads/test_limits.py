"""The limits: size (enforced while streaming), quota, rate, and the type allowlist."""

from __future__ import annotations

import pytest
from django.core.files import uploadhandler
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from tests.uploads.support import (
    ELF,
    HTML,
    JPEG,
    SVG,
    URL,
    files_in,
    multipart,
    png_1x1,
    post_file,
    post_raw,
)
from uploads import handlers, services
from uploads.models import Upload

pytestmark = pytest.mark.django_db

LIMIT = 100_000


@pytest.fixture
def small_limit(settings):
    settings.UPLOAD_MAX_BYTES = LIMIT
    return LIMIT


@pytest.fixture
def handler_spy(monkeypatch, upload_dir):
    """Records what the upload handler is given, and the biggest file ever on disk."""
    seen = {"new_files": 0, "bytes": 0, "largest_on_disk": 0, "default_handlers": 0}
    original_new_file = handlers.LimitedUploadHandler.new_file
    original_chunk = handlers.LimitedUploadHandler.receive_data_chunk

    def largest() -> int:
        return max((p.stat().st_size for p in files_in(upload_dir)), default=0)

    def new_file(self, *args, **kwargs):
        seen["new_files"] += 1
        return original_new_file(self, *args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        seen["bytes"] += len(raw_data)
        try:
            return original_chunk(self, raw_data, start)
        finally:
            seen["largest_on_disk"] = max(seen["largest_on_disk"], largest())

    def default_handler_used(self, *args, **kwargs):
        seen["default_handlers"] += 1
        raise AssertionError("Django's default upload handlers must not see the body")

    for default in (
        uploadhandler.MemoryFileUploadHandler,
        uploadhandler.TemporaryFileUploadHandler,
    ):
        monkeypatch.setattr(default, "receive_data_chunk", default_handler_used)
    monkeypatch.setattr(handlers.LimitedUploadHandler, "new_file", new_file)
    monkeypatch.setattr(handlers.LimitedUploadHandler, "receive_data_chunk", receive_data_chunk)
    return seen


def nothing_stored(media_root, settings) -> bool:
    return (
        files_in(media_root) == []
        and files_in(settings.FILE_UPLOAD_TEMP_DIR) == []
        and Upload.objects.count() == 0
    )


# -- size --------------------------------------------------------------------------------


def test_a_file_of_exactly_the_limit_is_accepted(auth_client, small_limit):
    response = post_file(auth_client, "big.txt", b"a" * LIMIT)
    assert response.status_code == 201, response.content
    assert response.json()["size"] == LIMIT


def test_one_byte_over_the_limit_is_413(auth_client, small_limit, media_root, settings):
    response = post_file(auth_client, "big.txt", b"a" * (LIMIT + 1))
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "file_too_large"
    assert body["max_bytes"] == LIMIT
    assert "97.7 KB (100000 bytes)" in body["detail"]
    assert nothing_stored(media_root, settings)


def test_the_handler_stops_reading_at_the_limit(
    auth_client, small_limit, handler_spy, media_root, settings, monkeypatch
):
    # The early Content-Length check is switched off: only the streaming check can stop
    # this 5 MB body.
    monkeypatch.setattr(handlers, "MULTIPART_ALLOWANCE", 10**12)
    response = post_file(auth_client, "huge.txt", b"a" * (50 * LIMIT))

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert handler_spy["new_files"] == 1
    assert handler_spy["default_handlers"] == 0
    # Django handed over at most one chunk past the limit, and nothing past it was written.
    assert handler_spy["bytes"] <= LIMIT + handlers.LimitedUploadHandler.chunk_size
    assert 0 < handler_spy["largest_on_disk"] <= LIMIT
    assert nothing_stored(media_root, settings)


def test_a_declared_content_length_over_the_limit_is_refused_before_reading(
    auth_client, small_limit, handler_spy, media_root, settings
):
    body, content_type = multipart([("file", "a.txt", b"hello\n")])
    # The test client's payload raises if more is read than it holds: a declared length
    # of 1 GB would blow up any attempt to read it.
    response = post_raw(auth_client, body, content_type, CONTENT_LENGTH=str(10**9))

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert "953.7 MB (1000000000 bytes)" in response.json()["detail"]
    assert handler_spy == {
        "new_files": 0,
        "bytes": 0,
        "largest_on_disk": 0,
        "default_handlers": 0,
    }
    assert nothing_stored(media_root, settings)


@pytest.mark.parametrize("early_check", [True, False], ids=["content-length", "streaming"])
def test_session_uploads_are_limited_too(
    user, small_limit, handler_spy, media_root, settings, monkeypatch, early_check
):
    # The session authenticator's CSRF check parses the body before the view runs: the
    # limiting handler must already be installed by then.
    if not early_check:
        monkeypatch.setattr(handlers, "MULTIPART_ALLOWANCE", 10**12)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/uploads/")
    file = SimpleUploadedFile("huge.txt", b"a" * (50 * LIMIT))
    response = client.post(
        URL, {"file": file}, headers={"X-CSRFToken": client.cookies["csrftoken"].value}
    )

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert handler_spy["new_files"] == (0 if early_check else 1)
    assert handler_spy["default_handlers"] == 0
    assert handler_spy["bytes"] <= LIMIT + handlers.LimitedUploadHandler.chunk_size
    assert nothing_stored(media_root, settings)


def test_the_service_enforces_the_size_limit_for_other_callers(user, small_limit, media_root):
    with pytest.raises(services.UploadError) as caught:
        services.store_upload(owner=user, file=SimpleUploadedFile("a.txt", b"a" * (LIMIT + 1)))
    assert caught.value.code == "file_too_large"
    assert files_in(media_root) == []


# -- quota -------------------------------------------------------------------------------


def test_quota_is_per_user(auth_client, user, make_user, settings, upload_dir):
    settings.UPLOAD_QUOTA_BYTES = 1000
    assert post_file(auth_client, "a.txt", b"a" * 600).status_code == 201

    refused = post_file(auth_client, "b.txt", b"b" * 600)
    assert refused.status_code == 413
    body = refused.json()
    assert body["code"] == "quota_exceeded"
    assert (body["used_bytes"], body["quota_bytes"], body["size"]) == (600, 1000, 600)
    assert "Delete some files first" in body["detail"]
    assert len(files_in(upload_dir)) == 1

    other = APIClient()
    other.force_authenticate(make_user("bob@example.com"))
    assert post_file(other, "b.txt", b"b" * 600).status_code == 201

    # exactly filling the quota is allowed
    assert post_file(auth_client, "c.txt", b"c" * 400).status_code == 201
    assert post_file(auth_client, "d.txt", b"d").status_code == 413


def test_deleting_frees_quota(auth_client, settings, django_capture_on_commit_callbacks):
    settings.UPLOAD_QUOTA_BYTES = 1000
    first = post_file(auth_client, "a.txt", b"a" * 600).json()["id"]
    assert post_file(auth_client, "b.txt", b"b" * 600).status_code == 413
    with django_capture_on_commit_callbacks(execute=True):
        assert auth_client.delete(f"{URL}{first}/").status_code == 204
    assert post_file(auth_client, "b.txt", b"b" * 600).status_code == 201


# -- rate ----------------------------------------------------------------------------------


def test_uploads_are_throttled_per_user(auth_client, make_user, settings, upload_dir):
    settings.UPLOAD_RATE = "2/min"
    assert post_file(auth_client, "a.txt", b"a\n").status_code == 201
    assert post_file(auth_client, "b.txt", b"b\n").status_code == 201

    blocked = post_file(auth_client, "c.txt", b"c\n")
    assert blocked.status_code == 429
    assert 0 < int(blocked["Retry-After"]) <= 60
    assert blocked.json()["code"] == "throttled"
    assert len(files_in(upload_dir)) == 2

    # reading is not throttled, nor is another user
    for _ in range(5):
        assert auth_client.get(URL).status_code == 200
    other = APIClient()
    other.force_authenticate(make_user("bob@example.com"))
    assert post_file(other, "a.txt", b"a\n").status_code == 201


def test_a_throttled_session_upload_leaves_no_file(user, settings, upload_dir):
    # The CSRF check has parsed (and spooled) the body before the throttle refuses it.
    settings.UPLOAD_RATE = "1/min"
    client = Client()
    client.force_login(user)
    assert client.post(URL, {"file": SimpleUploadedFile("a.txt", b"a\n")}).status_code == 201
    response = client.post(URL, {"file": SimpleUploadedFile("b.txt", b"b\n")})
    assert response.status_code == 429
    assert len(files_in(upload_dir)) == 1


# -- the type allowlist --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.txt", b"", "empty_file"),
        ("image.png", SVG, "content_mismatch"),
        ("page.txt", HTML, "markup_not_allowed"),
        ("photo.png", JPEG, "content_mismatch"),
        ("notes.txt", ELF, "executable_content"),
        ("pixel.pdf", png_1x1(), "content_mismatch"),
        ("page.html", b"<p>hi</p>", "extension_not_allowed"),
        ("drawing.svg", SVG, "extension_not_allowed"),
        ("setup.exe", b"MZ\x90\x00" + bytes(60), "extension_not_allowed"),
        ("README", b"hello\n", "extension_not_allowed"),
        ("bad.txt", b"caf\xe9\n", "invalid_encoding"),
        ("data.json", b"not json", "invalid_json"),
    ],
)
def test_refused_types(auth_client, media_root, settings, name, content, code):
    response = post_file(auth_client, name, content, content_type="image/png")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    assert nothing_stored(media_root, settings)


def test_invalid_text_beyond_the_sniffed_head_is_refused(auth_client, media_root, settings):
    content = b"a" * 100_000 + b"\xff\xfe broken"
    response = post_file(auth_client, "log.txt", content)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_encoding"
    assert "at byte 100000" in response.json()["detail"]
    assert nothing_stored(media_root, settings)
