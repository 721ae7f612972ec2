"""POST/GET/DELETE /api/uploads/: storage, ownership, authentication, atomicity."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.uploads.support import (
    STORED_NAME,
    URL,
    files_in,
    make_pdf,
    multipart,
    png_1x1,
    post_file,
    post_raw,
    sha256,
)
from uploads import services
from uploads.models import Upload

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def store(user, name="a.txt", content=b"hello\n") -> Upload:
    return services.store_upload(owner=user, file=SimpleUploadedFile(name, content))


# -- the round trip ------------------------------------------------------------------------


def test_upload_then_download_round_trip_with_jwt(auth_client, user, upload_dir):
    content = "# Notes\n\ncaf\u00e9 \u4e2d\u6587\n".encode()
    response = post_file(auth_client, "notes.md", content, content_type="text/html")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["original_name"] == "notes.md"
    assert body["size"] == len(content)
    assert body["sha256"] == sha256(content)
    # the detected type, not the client's claim
    assert body["content_type"] == "text/markdown; charset=utf-8"
    assert body["kind"] == "text"
    assert response["Location"].endswith(f"/api/uploads/{body['id']}/")

    upload = Upload.objects.get(pk=body["id"])
    assert upload.owner == user
    assert STORED_NAME.fullmatch(upload.stored_name)
    assert upload.stored_name == f"{upload.pk.hex}_notes.md"
    assert files_in(upload_dir) == [upload_dir / upload.stored_name]
    assert (upload_dir / upload.stored_name).read_bytes() == content

    download = auth_client.get(body["download_url"])
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert data == content
    assert sha256(data) == body["sha256"]

    detail = auth_client.get(f"{URL}{body['id']}/")
    assert detail.status_code == 200
    assert detail.json() == body
    listing = auth_client.get(URL).json()
    assert listing["count"] == 1
    assert listing["results"] == [body]


@pytest.mark.parametrize(
    ("name", "content", "content_type", "kind"),
    [
        ("pixel.png", png_1x1(), "image/png", "image"),
        ("doc.pdf", make_pdf(["hello"]), "application/pdf", "pdf"),
        ("data.json", b'{"a": 1}', "application/json", "text"),
        ("main.py", b"print('hi')\n", "text/plain; charset=utf-8", "text"),
    ],
)
def test_type_is_detected_from_the_content(auth_client, name, content, content_type, kind):
    response = post_file(auth_client, name, content, content_type="text/html")
    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == content_type
    assert response.json()["kind"] == kind


def test_stored_files_are_private_to_the_server_account(auth_client, upload_dir):
    response = post_file(auth_client, "a.txt", b"secret\n")
    assert response.status_code == 201
    stored = files_in(upload_dir)[0]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(upload_dir.stat().st_mode) == 0o700


def test_session_login_works_with_the_csrf_token(user, upload_dir):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/uploads/").status_code == 200  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    file = SimpleUploadedFile("a.txt", b"hello\n")

    refused = client.post(URL, {"file": file})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert files_in(upload_dir) == []

    file.seek(0)
    accepted = client.post(URL, {"file": file}, headers={"X-CSRFToken": token})
    assert accepted.status_code == 201, accepted.content
    assert client.get(URL).json()["count"] == 1
    download = client.get(accepted.json()["download_url"])
    assert download.status_code == 200
    assert download.getvalue() == b"hello\n"


# -- authentication and ownership ----------------------------------------------------------


def test_unauthenticated_requests_get_401(api_client, user, upload_dir):
    upload = store(user)
    before = files_in(upload_dir)
    requests = [
        api_client.get(URL),
        post_file(api_client, "a.txt", b"hello\n"),
        api_client.get(f"{URL}{upload.pk}/"),
        api_client.get(f"{URL}{upload.pk}/download/"),
        api_client.delete(f"{URL}{upload.pk}/"),
        api_client.get(f"{URL}usage/"),
    ]
    for response in requests:
        assert response.status_code == 401, response.request
        assert response.json()["code"] == "not_authenticated"
    assert Upload.objects.count() == 1
    assert files_in(upload_dir) == before


def test_another_users_upload_is_404_everywhere(make_user, upload_dir):
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    upload = store(alice, "alice.txt", b"alice's secret\n")
    bob_client = client_for(bob)

    for response in [
        bob_client.get(f"{URL}{upload.pk}/"),
        bob_client.get(f"{URL}{upload.pk}/download/"),
        bob_client.delete(f"{URL}{upload.pk}/"),
    ]:
        assert response.status_code == 404
        assert response.json() == {"detail": "No upload with this id.", "code": "not_found"}
    assert bob_client.get(URL).json()["count"] == 0
    assert Upload.objects.filter(pk=upload.pk).exists()
    assert (upload_dir / upload.stored_name).read_bytes() == b"alice's secret\n"


def test_unknown_id_is_404(auth_client):
    assert auth_client.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert auth_client.get(f"{URL}not-a-uuid/").status_code == 404


def test_list_is_paginated_newest_first_and_only_own(user, make_user):
    other = make_user("other@example.com")
    store(other, "theirs.txt")
    now = timezone.now()
    for i in range(23):
        upload = store(user, f"f{i:02}.txt", f"file {i}\n".encode())
        Upload.objects.filter(pk=upload.pk).update(created=now - timedelta(minutes=23 - i))
    client = client_for(user)

    first = client.get(URL).json()
    assert first["count"] == 23
    assert [u["original_name"] for u in first["results"][:3]] == ["f22.txt", "f21.txt", "f20.txt"]
    assert len(first["results"]) == 20
    second = client.get(first["next"]).json()
    assert [u["original_name"] for u in second["results"]] == ["f02.txt", "f01.txt", "f00.txt"]
    assert second["next"] is None


def test_usage_reports_the_quota(user, settings):
    settings.UPLOAD_QUOTA_BYTES = 10_000
    settings.UPLOAD_MAX_BYTES = 5_000
    store(user, "a.txt", b"x" * 100)
    store(user, "b.txt", b"y" * 50)
    assert client_for(user).get(f"{URL}usage/").json() == {
        "files": 2,
        "used_bytes": 150,
        "quota_bytes": 10_000,
        "max_upload_bytes": 5_000,
    }


# -- malformed requests --------------------------------------------------------------------


def test_no_file_field_is_400(auth_client, upload_dir):
    response = auth_client.post(URL, {"other": "value"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "no_file"
    assert "'file'" in response.json()["detail"]


def test_a_text_field_named_file_is_not_a_file(auth_client):
    response = auth_client.post(URL, {"file": "just text"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "no_file"


def test_json_body_is_415(auth_client):
    response = auth_client.post(URL, {"file": "x"}, format="json")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("parts", "detail"),
    [
        ([("file", "a.txt", b"one\n"), ("file", "b.txt", b"two\n")], "more than one"),
        ([("attachment", "a.txt", b"one\n")], "field 'file', not 'attachment'"),
        ([("file", "a.txt", b"one\n"), ("other", "b.txt", b"two\n")], "more than one"),
    ],
    ids=["two-files", "wrong-field", "extra-file"],
)
def test_exactly_one_file_in_the_field_file(auth_client, upload_dir, parts, detail):
    body, content_type = multipart(parts)
    response = post_raw(auth_client, body, content_type)
    assert response.status_code == 400
    assert response.json()["code"] == "unexpected_file"
    assert detail in response.json()["detail"]
    assert Upload.objects.count() == 0
    assert files_in(upload_dir) == []


def test_malformed_multipart_is_400(auth_client, upload_dir):
    response = post_raw(auth_client, b"garbage", "multipart/form-data")  # no boundary
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"
    assert files_in(upload_dir) == []


# -- hostile file names --------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "../../../etc/passwd.txt",
        "..\\..\\windows\\win.ini.txt",
        "..%2F..%2F..%2Fetc%2Fpasswd.txt",
        "%252e%252e%252fsecret.txt",
        "/absolute/path.txt",
        "C:\\Users\\x\\notes.txt",
        "NUL.txt",
        "-rf.txt",
        "evil\u202etxt.md",
        "r\u00e9sum\u00e9 \u65e5\u672c.txt",
        "a" * 300 + ".txt",
        "x\x00y.txt",
        "<script>alert(1)<\\script>.txt",
    ],
)
def test_hostile_names_are_stored_safely(auth_client, media_root, upload_dir, filename):
    body, content_type = multipart([("file", filename, b"hello\n")])
    response = post_raw(auth_client, body, content_type)

    assert response.status_code == 201, response.content
    upload = Upload.objects.get(pk=response.json()["id"])
    assert STORED_NAME.fullmatch(upload.stored_name), upload.stored_name
    assert len(upload.stored_name) <= 200
    assert not any(sep in upload.original_name for sep in ("/", "\\", "\x00"))
    # nothing anywhere else: not beside MEDIA_ROOT, not in the temp folder
    assert files_in(media_root.parent) == [upload_dir / upload.stored_name]
    download = auth_client.get(f"{URL}{upload.pk}/download/")
    assert b"".join(download.streaming_content) == b"hello\n"
    header = download["Content-Disposition"]
    assert header.startswith("attachment; filename=")
    assert not any(ch in header for ch in "\r\n\x00\u202e")


def test_a_dot_file_name_has_no_allowed_extension(auth_client, upload_dir):
    body, content_type = multipart([("file", ".htaccess", b"Deny from all\n")])
    response = post_raw(auth_client, body, content_type)
    assert response.status_code == 400
    assert response.json()["code"] == "extension_not_allowed"
    assert files_in(upload_dir) == []


# -- atomicity ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("database down"), IntegrityError("boom")])
def test_a_failed_insert_leaves_no_file_and_no_row(user, upload_dir, monkeypatch, error):
    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Upload, "save", fail)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    response = post_file(client, "a.txt", b"hello\n")

    assert response.status_code == 500
    assert files_in(upload_dir) == []
    monkeypatch.undo()
    assert Upload.objects.count() == 0


def test_the_service_cleans_up_when_the_insert_fails(user, upload_dir, monkeypatch):
    monkeypatch.setattr(Upload, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        store(user)
    assert files_in(upload_dir) == []


def test_delete_removes_the_row_now_and_the_file_after_commit(
    auth_client, upload_dir, django_capture_on_commit_callbacks
):
    upload_id = post_file(auth_client, "a.txt", b"hello\n").json()["id"]
    stored = upload_dir / Upload.objects.get(pk=upload_id).stored_name

    with django_capture_on_commit_callbacks() as callbacks:
        response = auth_client.delete(f"{URL}{upload_id}/")
    assert response.status_code == 204
    assert not Upload.objects.filter(pk=upload_id).exists()
    assert stored.exists(), "the file must outlive an uncommitted delete"

    for callback in callbacks:
        callback()
    assert files_in(upload_dir) == []
    assert auth_client.get(f"{URL}{upload_id}/").status_code == 404


def test_deleting_a_user_removes_their_files(
    make_user, upload_dir, django_capture_on_commit_callbacks
):
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    store(alice, "a.txt")
    store(alice, "b.txt")
    kept = store(bob, "c.txt")

    with django_capture_on_commit_callbacks(execute=True):
        alice.delete()
    assert files_in(upload_dir) == [upload_dir / kept.stored_name]
