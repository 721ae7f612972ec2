"""The database's own guarantees on upload rows, whatever code writes them."""

from __future__ import annotations

import uuid

import pytest
from django.db import DataError, IntegrityError, transaction

from uploads.models import Upload

pytestmark = pytest.mark.django_db

GOOD_SHA = "a" * 64


def row(user, **fields) -> Upload:
    upload_id = uuid.uuid4()
    values = {
        "id": upload_id,
        "owner": user,
        "original_name": "a.txt",
        "stored_name": f"{upload_id.hex}_a.txt",
        "size": 1,
        "content_type": "text/plain; charset=utf-8",
        "kind": "text",
        "sha256": GOOD_SHA,
    }
    values.update(fields)
    return Upload(**values)


def test_a_valid_row_is_accepted(user):
    row(user).save()
    assert Upload.objects.count() == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"size": 0},
        {"sha256": "a" * 63},
        {"sha256": "a" * 65},
        {"sha256": "A" * 64},
        {"original_name": ""},
        {"content_type": ""},
        {"kind": "html"},
        {"stored_name": "short_a.txt"},
        {"stored_name": "0" * 32 + "_../../etc/passwd"},
        {"stored_name": "0" * 32 + "_..\\secret.txt"},
        {"stored_name": "0" * 32 + "_a..txt"},
    ],
    ids=lambda fields: "-".join(f"{k}={v!r}"[:40] for k, v in fields.items()),
)
def test_the_database_refuses_invalid_rows(user, fields):
    # PostgreSQL refuses an over-long value before the constraints (DataError).
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        row(user, **fields).save()


def test_stored_names_are_unique(user):
    first = row(user)
    first.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        row(user, stored_name=first.stored_name).save()
