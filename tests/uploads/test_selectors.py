"""What the chat will call for attachments, and the cleanup of leftovers."""

from __future__ import annotations

import codecs
import os
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from tests.uploads.support import files_in, make_pdf, png_1x1
from uploads import selectors, services, storage
from uploads.extract import ExtractionError

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
    with pytest.raises(ExtractionError) as caught:
        selectors.extract_upload_text(upload)
    assert caught.value.code == "not_text"


def test_extract_text_is_capped_by_the_setting(user, settings):
    settings.ATTACHMENT_MAX_CHARS = 10
    upload = store(user, "notes.txt", b"0123456789abcdef\r\nmore\n")
    result = selectors.extract_upload_text(upload)
    assert result.text == "0123456789"
    assert result.truncated
    assert result.chars_total == 22  # \r\n read as one newline
    assert selectors.extract_upload_text(upload, max_chars=100).text == "0123456789abcdef\nmore\n"


def test_extract_text_uses_the_detected_encoding(user):
    upload = store(user, "notes.txt", codecs.BOM_UTF16_LE + "caf\u00e9\n".encode("utf-16-le"))
    assert upload.content_type == "text/plain; charset=utf-16"
    assert selectors.extract_upload_text(upload).text == "caf\u00e9\n"


def test_extract_text_of_a_pdf(user):
    upload = store(user, "doc.pdf", make_pdf(["first page", "second page"]))
    result = selectors.extract_upload_text(upload)
    assert "first page" in result.text and "second page" in result.text
    assert result.pages_total == 2


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
