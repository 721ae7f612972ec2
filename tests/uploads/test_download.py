"""GET /api/uploads/<id>/download/: streamed, with headers that keep the browser safe."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.uploads.support import URL, png_1x1, sha256
from uploads import services
from uploads.filenames import content_disposition

pytestmark = pytest.mark.django_db


def store(user, name, content):
    return services.store_upload(owner=user, file=SimpleUploadedFile(name, content))


def download(client, upload, **extra):
    response = client.get(f"{URL}{upload.pk}/download/", **extra)
    if response.streaming:
        # Read it all (which also closes the file, as a server would).
        response.body = b"".join(response.streaming_content)
    return response


def test_download_headers_and_streamed_body(auth_client, user):
    content = b"hello\n" * 50_000
    upload = store(user, "notes.txt", content)

    response = download(auth_client, upload)

    assert response.status_code == 200
    assert response.streaming
    data = response.body
    assert data == content and sha256(data) == upload.sha256
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Length"] == str(len(content))
    assert response["Content-Disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Cache-Control"] == "private, no-store"
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"
    assert response["ETag"] == f'"{upload.sha256}"'


def test_the_original_name_is_encoded_safely(auth_client, user):
    name = 'r\u00e9sum\u00e9 "final" 100%.txt'
    upload = store(user, name, b"cv\n")

    header = download(auth_client, upload)["Content-Disposition"]

    assert header == content_disposition(name)
    assert header == (
        'attachment; filename="resume _final_ 100_.txt"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%20100%25.txt"
    )


def test_markup_inside_a_document_is_served_inert(auth_client, user):
    # Markdown may contain HTML further down: it is served as Markdown, as an attachment,
    # sandboxed, never sniffed.
    upload = store(user, "README.md", b"# Title\n\n<script>alert(document.cookie)</script>\n")
    response = download(auth_client, upload)
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]


def test_any_accept_header_gets_the_file(auth_client, user):
    upload = store(user, "pixel.png", png_1x1())
    response = download(auth_client, upload, HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.body == png_1x1()


def test_session_download_works(client, user):
    upload = store(user, "a.txt", b"hello\n")
    client.force_login(user)
    response = download(client, upload)
    assert response.status_code == 200
    assert response.body == b"hello\n"


def test_another_users_file_and_no_login(make_user, api_client):
    alice = make_user("alice@example.com")
    upload = store(alice, "a.txt", b"alice\n")
    bob = APIClient()
    bob.force_authenticate(make_user("bob@example.com"))

    assert download(bob, upload).status_code == 404
    assert download(api_client, upload).status_code == 401


def test_a_missing_file_is_404_not_500(auth_client, user, upload_dir):
    upload = store(user, "a.txt", b"hello\n")
    (upload_dir / upload.stored_name).unlink()
    response = download(auth_client, upload)
    assert response.status_code == 404
    assert response.json() == {"detail": "The stored file is missing.", "code": "file_missing"}


def test_a_symlink_planted_in_place_of_the_file_is_not_followed(
    auth_client, user, upload_dir, tmp_path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret\n")
    upload = store(user, "a.txt", b"hello\n")
    stored = upload_dir / upload.stored_name
    stored.unlink()
    os.symlink(secret, stored)

    response = download(auth_client, upload)

    assert response.status_code == 404
    assert b"server secret" not in response.content
