"""The files page: login required, CSP-friendly markup, its own static files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from uploads import services

pytestmark = pytest.mark.django_db

PAGE = "/uploads/"


def test_the_url_names():
    assert reverse("uploads:index") == PAGE
    assert reverse("uploads_api:list") == "/api/uploads/"


def test_login_is_required(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/uploads/")


def test_page_renders_its_configuration(client, user, settings):
    settings.UPLOAD_MAX_BYTES = 1234
    settings.UPLOAD_QUOTA_BYTES = 99_999
    client.force_login(user)
    response = client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-api-url="/api/uploads/"' in html
    assert 'data-usage-url="/api/uploads/usage/"' in html
    assert 'data-max-bytes="1234"' in html
    assert 'data-quota-bytes="99999"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert re.search(
        r'<input type="file" id="file-input" name="file" multiple accept="[^"]*\.pdf', html
    )
    assert "<progress" not in html  # progress bars are made per upload by the script


def test_page_has_no_inline_script_or_style(client, user):
    client.force_login(user)
    html = client.get(PAGE).content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "the page loads its script"
    assert all(re.search(r'\bsrc="/static/', tag) for tag in scripts), scripts
    assert re.search(r'<script src="/static/uploads/uploads\.js" defer>\s*</script>', html)
    assert '<link rel="stylesheet" href="/static/uploads/uploads.css">' in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert not re.search(r"\sstyle=", html), "no inline styles"
    assert "http://" not in html.replace("http://testserver", "") and "https://" not in html


def test_static_files_exist_and_use_no_cdn():
    for name in ("uploads/uploads.js", "uploads/uploads.css"):
        path = finders.find(name)
        assert path, name
        text = Path(path).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text
    script_path = finders.find("uploads/uploads.js")
    assert script_path
    script = Path(script_path).read_text(encoding="utf-8")
    assert "innerHTML" not in script, "names are user input: set them as text only"
    assert 'upload.addEventListener("progress"' in script


def test_nav_links_to_the_page_for_logged_in_users(client, user):
    assert b'href="/uploads/"' not in client.get("/accounts/login/").content
    client.force_login(user)
    assert b'<a href="/uploads/">Files</a>' in client.get("/").content


def test_uploaded_files_are_not_reachable_as_static_or_media(client, user, settings, upload_dir):
    upload = services.store_upload(owner=user, file=SimpleUploadedFile("a.txt", b"hi\n"))
    client.force_login(user)
    for url in (
        f"/media/uploads/{upload.stored_name}",
        f"/static/uploads/{upload.stored_name}",
        f"/static/../media/uploads/{upload.stored_name}",
        f"/uploads/{upload.stored_name}",
    ):
        assert client.get(url).status_code == 404, url
