"""Staff manage uploads in the admin: list, filter, search, delete (with the file)."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.uploads.support import files_in, png_1x1
from uploads import services
from uploads.models import Upload

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/uploads/upload/"


@pytest.fixture
def staff_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("admin@example.com", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def uploads(make_user):
    carol = make_user("carol@example.com")
    bob = make_user("bob@example.com")
    return [
        services.store_upload(owner=carol, file=SimpleUploadedFile("report.txt", b"report\n")),
        services.store_upload(owner=carol, file=SimpleUploadedFile("pixel.png", png_1x1())),
        services.store_upload(owner=bob, file=SimpleUploadedFile("notes.md", b"# notes\n")),
    ]


def test_changelist_filters_and_search(staff_client, uploads):
    page = staff_client.get(CHANGELIST)
    assert page.status_code == 200
    for name in (b"report.txt", b"pixel.png", b"notes.md"):
        assert name in page.content

    images = staff_client.get(CHANGELIST, {"kind__exact": "image"}).content
    assert b"pixel.png" in images and b"report.txt" not in images

    by_owner = staff_client.get(CHANGELIST, {"q": "bob@example.com"}).content
    assert b"notes.md" in by_owner and b"report.txt" not in by_owner

    by_hash = staff_client.get(CHANGELIST, {"q": uploads[0].sha256}).content
    assert b"report.txt" in by_hash and b"notes.md" not in by_hash


def test_nothing_is_editable_and_nothing_can_be_added(staff_client, uploads):
    upload = uploads[0]
    page = staff_client.get(f"{CHANGELIST}{upload.pk}/change/")
    assert page.status_code == 200
    assert upload.sha256.encode() in page.content
    for field in ("stored_name", "sha256", "size", "original_name", "owner"):
        assert not re.search(rf'<(input|select|textarea)[^>]*name="{field}"'.encode(), page.content)

    assert staff_client.get(f"{CHANGELIST}add/").status_code == 403
    response = staff_client.post(
        f"{CHANGELIST}{upload.pk}/change/", {"stored_name": "x" * 40, "sha256": "0" * 64}
    )
    assert response.status_code == 403
    upload.refresh_from_db()
    assert upload.stored_name.startswith(upload.pk.hex)


def test_deleting_one_upload_removes_its_file(
    staff_client, uploads, upload_dir, django_capture_on_commit_callbacks
):
    target = uploads[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"{CHANGELIST}{target.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Upload.objects.filter(pk=target.pk).exists()
    assert sorted(p.name for p in files_in(upload_dir)) == sorted(
        u.stored_name for u in uploads[1:]
    )


def test_bulk_delete_removes_the_files(
    staff_client, uploads, upload_dir, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            CHANGELIST,
            {
                "action": "delete_selected",
                "_selected_action": [str(u.pk) for u in uploads[:2]],
                "post": "yes",
            },
        )
    assert response.status_code == 302
    assert list(Upload.objects.all()) == [uploads[2]]
    assert files_in(upload_dir) == [upload_dir / uploads[2].stored_name]


def test_non_staff_cannot_see_the_admin(client, user, uploads):
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code in (302, 403)
    assert b"report.txt" not in response.content
