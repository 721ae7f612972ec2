"""The /monitoring/ page: login required, its own static JS (no inline script, no CDN)."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_requires_login():
    response = Client().get("/monitoring/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_page_wires_its_endpoints_and_scripts(logged_in, settings):
    settings.TELEMETRY_INTERVAL = 2.5
    response = logged_in.get("/monitoring/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-interval="2.5"' in html
    assert 'data-latest-url="/api/monitoring/latest/"' in html
    assert 'data-series-url="/api/monitoring/series/"' in html
    assert 'data-ws-path="/ws/monitoring/"' in html
    for chart in ("gpu-memory", "gpu-util", "gpu-temp", "gpu-power", "ram", "cpu"):
        assert f'id="chart-{chart}"' in html
    assert 'data-throughput-url="/api/monitoring/throughput/"' in html
    assert 'data-requests-url="/api/monitoring/requests/"' in html
    assert 'data-staff="false"' in html
    assert "Throughput (tokens/s per model)" in html
    for element in ("chart-tps", "chart-ttft", "mon-tp-levels", "mon-tp-models", "mon-tp-recent"):
        assert f'id="{element}"' in html
    assert "Your own requests" in html
    assert "throughput.js" in html
    # Scripts only by src, from our own static files.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts, "the page loads its scripts"
    for attrs, body in scripts:
        assert body.strip() == ""
        found = re.search(r'src="([^"]+)"', attrs)
        assert found is not None, attrs
        src = found.group(1)
        assert src.startswith(settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/")
        assert "//" not in src
    assert 'href="/monitoring/"' in html  # the nav link in base.html


def test_staff_are_told_they_see_everyone(make_user):
    client = Client()
    client.force_login(make_user("ops@example.com", is_staff=True))
    html = client.get("/monitoring/").content.decode()
    assert 'data-staff="true"' in html
    assert "Every user's requests" in html


@pytest.mark.parametrize(
    "name",
    [
        "monitoring/dashboard.js",
        "monitoring/charts.js",
        "monitoring/throughput.js",
        "monitoring/dashboard.css",
    ],
)
def test_static_files_exist_and_load_nothing_from_elsewhere(name):
    path = finders.find(name)
    assert path, f"{name} is missing"
    text = open(path, encoding="utf-8").read()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    assert "innerHTML" not in text  # names from the machine are set as text, never as HTML
