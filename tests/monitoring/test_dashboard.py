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


def test_a_host_without_gpu_gets_one_card_instead_of_four_gpu_charts(logged_in):
    """What dashboard.js decides on: the page has the card (hidden until then) and marks the four
    GPU charts; a host whose probe found no NVIDIA driver has gpu_available false, the probe's
    reason and no GPU rows, in the latest figures and in the history alike."""
    from datetime import timedelta

    from django.utils import timezone

    from .conftest import make_sample

    html = logged_in.get("/monitoring/").content.decode()
    card = re.search(r'<section class="mon-card mon-no-gpu" id="mon-no-gpu"[^>]*>', html)
    assert card is not None and " hidden" in card.group(0)
    assert "No NVIDIA GPU on" in html
    assert len(re.findall(r'<figure class="mon-chart" data-gpu-chart>', html)) == 4
    assert "data-gpu-chart><figcaption>RAM" not in html

    now = timezone.now()
    reason = "NVML: Driver Not Loaded"
    for seconds in (20, 10):
        make_sample(
            "cpu-box", now - timedelta(seconds=seconds), ram_used_mb=900.0, cpu_percent=7.0,
            gpu_available=False, gpu_reason=reason,
        )  # fmt: skip
    latest = logged_in.get("/api/monitoring/latest/").json()["hosts"]
    assert [(h["host"], h["gpu_available"], h["gpu_reason"], h["gpus"]) for h in latest] == [
        ("cpu-box", False, reason, [])
    ]
    # Buckets are aligned on the epoch: at 5 s, two samples 10 s apart are always two points
    # (at the default, 12 s, they shared one whenever a boundary did not fall between them).
    series = logged_in.get("/api/monitoring/series/", {"resolution": 5}).json()["hosts"]
    assert [(h["host"], h["gpus"], len(h["points"])) for h in series] == [("cpu-box", [], 2)]
