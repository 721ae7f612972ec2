"""A name that is a path only under NFKC (fullwidth ../../x.txt) downloads as x.txt.

Before the fix the quoted ASCII fallback of Content-Disposition was `../../x.txt`.
"""

from __future__ import annotations

import pytest

from tests.uploads.support import URL, post_file

pytestmark = pytest.mark.django_db

FULLWIDTH_TRAVERSAL = "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx.txt"


def test_a_fullwidth_traversal_name_is_stored_and_downloaded_as_its_base_name(
    auth_client, upload_dir
):
    created = post_file(auth_client, FULLWIDTH_TRAVERSAL, b"text\n", "text/plain")
    assert created.status_code == 201, created.content
    stored = [path.name for path in upload_dir.iterdir()]
    assert len(stored) == 1 and stored[0].endswith("_x.txt")

    response = auth_client.get(f"{URL}{created.json()['id']}/download/")

    assert response.status_code == 200
    assert (
        response["Content-Disposition"] == "attachment; filename=\"x.txt\"; filename*=UTF-8''x.txt"
    )
    assert b"".join(response.streaming_content) == b"text\n"
