"""What the chat will call for attachments (their text: test_text.py), and the cleanup."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from tests.uploads.support import files_in, png_1x1
from uploads import selectors, services, storage

pytestmark = pytest.mark.django_db


def store(user, name, content):
    return services.store_upload(owner=user, file=SimpleUploadedFile(name, content))


def test_get_user_uploads_in_the_order_given(user):
    a = store(user, "a.txt", b"a\n")
    b = store(user, "b.txt", b"b\n")
    c = store(user, "c.txt", b"c\n")
    ids = [str(c.pk), a.pk, c.pk.hex, str(b.pk).upper()]
    assert selectors.get_user_uploads(user, ids) == [c, a, b]
    assert selectors.get_user_uploads(user, []) == []


def test_get_user_uploads_names_every_missing_id(user, make_user):
    mine = store(user, "a.txt", b"a\n")
    theirs = store(make_user("bob@example.com"), "b.txt", b"b\n")
    unknown = uuid.uuid4()

    with pytest.raises(selectors.UploadsNotFound) as caught:
        selectors.get_user_uploads(user, [mine.pk, theirs.pk, "not-an-id", unknown])

    assert caught.value.missing == [str(theirs.pk), "not-an-id", str(unknown)]
    message = str(caught.value)
    assert message.startswith("No such uploads: ")
    assert str(theirs.pk) in message and "not-an-id" in message and str(unknown) in message
    assert str(mine.pk) not in message


def test_get_upload_is_owner_only(user, make_user):
    upload = store(user, "a.txt", b"a\n")
    assert selectors.get_upload(user, str(upload.pk)) == upload
    with pytest.raises(upload.DoesNotExist):
        selectors.get_upload(make_user("bob@example.com"), upload.pk)
    with pytest.raises(upload.DoesNotExist):
        selectors.get_upload(user, "../etc/passwd")


def test_read_bytes_of_an_image(user):
    upload = store(user, "pixel.png", png_1x1())
    assert upload.is_image
    assert selectors.read_upload_bytes(upload) == png_1x1()
    with selectors.open_upload(upload) as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cleanup_removes_old_leftovers_only(user, upload_dir, capsys):
    kept = store(user, "a.txt", b"a\n")
    gone = store(user, "b.txt", b"b\n")
    (upload_dir / gone.stored_name).unlink()
    old_temp = upload_dir / f"{storage.TEMP_PREFIX}old"
    fresh_temp = upload_dir / f"{storage.TEMP_PREFIX}fresh"
    orphan = upload_dir / f"{uuid.uuid4().hex}_orphan.txt"
    for path in (old_temp, fresh_temp, orphan):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3601
    for path in (old_temp, orphan, upload_dir / kept.stored_name):
        os.utime(path, (an_hour_ago, an_hour_ago))

    call_command("uploads_cleanup", "--dry-run")
    assert len(files_in(upload_dir)) == 4

    call_command("uploads_cleanup")
    out, err = capsys.readouterr()
    assert sorted(files_in(upload_dir)) == sorted([upload_dir / kept.stored_name, fresh_temp])
    assert f"removed orphan file {orphan.name}" in out
    assert f"row without its file: {gone.stored_name}" in err


def test_the_service_drops_control_characters_from_the_display_name(user):
    upload = store(user, "a\x00b\x1b[31m.txt", b"hi\n")
    assert upload.original_name == "ab[31m.txt"
    with pytest.raises(services.UploadError) as caught:
        store(user, "\x00\x01", b"hi\n")
    assert caught.value.code == "no_file"
