"""Uploads from several threads at once: each with its own client and database connection."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.uploads.support import files_in, post_file, sha256
from uploads import services
from uploads.models import Upload

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 6


def run_together(jobs):
    """Run the callables in threads released at the same moment; return their results."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        try:
            barrier.wait(timeout=30)
            return job()
        finally:
            connection.close()  # each thread's own connection

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_concurrent_uploads_from_several_users(make_user, upload_dir):
    users = [make_user(f"user{i}@example.com") for i in range(THREADS)]
    contents = [f"file of user {i}\n".encode() * (1000 * (i + 1)) for i in range(THREADS)]

    def job(i):
        return lambda: post_file(client_for(users[i]), f"f{i}.txt", contents[i])

    responses = run_together([job(i) for i in range(THREADS)])

    assert [r.status_code for r in responses] == [201] * THREADS, [r.content for r in responses]
    for i, response in enumerate(responses):
        upload = Upload.objects.get(pk=response.json()["id"])
        assert upload.owner == users[i]
        assert upload.sha256 == sha256(contents[i])
        assert (upload_dir / upload.stored_name).read_bytes() == contents[i]
    assert len(files_in(upload_dir)) == THREADS


def test_concurrent_uploads_by_one_user_cannot_overrun_the_quota(
    user, settings, upload_dir, monkeypatch
):
    settings.UPLOAD_QUOTA_BYTES = 2500
    # A slow quota query widens the window between the check and the insert: without the
    # per-user lock, several threads would all see room for their file.
    real_used_bytes = services.used_bytes

    def slow_used_bytes(owner):
        used = real_used_bytes(owner)
        time.sleep(0.2)
        return used

    monkeypatch.setattr(services, "used_bytes", slow_used_bytes)
    content = b"x" * 1000
    responses = run_together(
        [lambda: post_file(client_for(user), "f.txt", content) for _ in range(THREADS)]
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 201] + [413] * (THREADS - 2), [r.content for r in responses]
    refused = [r.json() for r in responses if r.status_code == 413]
    assert all(body["code"] == "quota_exceeded" for body in refused)
    assert Upload.objects.filter(owner=user).count() == 2
    assert len(files_in(upload_dir)) == 2
