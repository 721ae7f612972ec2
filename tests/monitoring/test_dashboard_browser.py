"""The dashboard in headless Chromium against a real Daphne: it draws the stored history, shows
the latest figures and models, and -- on the embedded in-memory channel layer, where no push
can reach Daphne -- picks up new samples by polling."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from tests.support.live import ARTIFACTS, DaphneServer

from .conftest import make_reply, make_sample

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def add_sample(at, ram_used_mb: float):
    return make_sample(
        "box-a",
        at,
        ram_total_mb=32000.0,
        ram_used_mb=ram_used_mb,
        ram_percent=ram_used_mb / 320,
        cpu_percent=12.5,
        gpu_available=True,
        gpus=[
            {
                "index": 0,
                "uuid": "GPU-1",
                "name": "NVIDIA GeForce RTX 4090",
                "memory_used_mb": 5120.0,
                "memory_total_mb": 24564.0,
                "utilization_percent": 87,
                "temperature_c": 66,
                "power_draw_w": 312.5,
            }
        ],
        models=[
            {
                "ollama_url": "http://ollama:11434",
                "model": "llama3.2:3b",
                "size": 2 * 2**30,
                "size_vram": 2**30,
            }
        ],
        ollama_status=[
            {"url": "http://ollama:11434", "available": True, "reason": None, "models": 1}
        ],
    )


def in_thread(fn, *args, **kwargs):
    """Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-browser)")
def test_dashboard_draws_history_and_polls_new_samples(user, make_user):
    from playwright.sync_api import sync_playwright

    now = timezone.now()
    for i in range(12):
        add_sample(now - timedelta(seconds=120 - 10 * i), ram_used_mb=1000.0 + i)
    # Two of the user's own requests (throughput card) and someone else's, which must not show.
    for seconds_ago, tps, level in ((300, 42.0, 1), (200, 30.0, 2)):
        make_reply(
            user,
            now - timedelta(seconds=seconds_ago),
            tokens_per_second=tps,
            time_to_first_token=0.25,
            queue_wait=0.0,
            in_flight_at_start=level,
            eval_count=100,
        )
    make_reply(make_user("bob@example.com"), now, model="secret:1b", tokens_per_second=1.0)
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value

    with DaphneServer("monitoring-dashboard", TELEMETRY_INTERVAL="1") as server:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = browser.new_context()
                context.add_cookies([{"name": "sessionid", "value": session, "url": server.url}])
                page = context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                # Failed requests are checked by URL (the console message does not name it).
                page.on(
                    "console",
                    lambda msg: (
                        problems.append(msg.text)
                        if msg.type == "error"
                        and not msg.text.startswith("Failed to load resource")
                        else None
                    ),
                )
                page.on(
                    "response",
                    lambda r: (
                        problems.append(f"{r.status} {r.url}")
                        if r.status >= 400 and not r.url.endswith("/favicon.ico")
                        else None
                    ),
                )
                page.goto(f"{server.url}/monitoring/")

                page.wait_for_selector(
                    "#chart-gpu-memory path.mon-line", state="attached", timeout=10_000
                )
                for chart in ("gpu-util", "gpu-temp", "gpu-power", "ram", "cpu"):
                    assert page.locator(f"#chart-{chart} path.mon-line").count() == 1, chart
                legend = page.locator("#chart-gpu-memory .mon-legend").inner_text()
                assert "GPU 0 NVIDIA GeForce RTX 4090: 5120 MB" in legend
                models = page.locator("#mon-models").inner_text()
                assert "llama3.2:3b" in models and "2.00 GB" in models and "(50 %)" in models
                assert page.locator("#mon-host").input_value() == "box-a"

                page.wait_for_selector(
                    "#chart-tps circle.mon-marker", state="attached", timeout=10_000
                )
                assert page.locator("#chart-tps circle.mon-marker").count() == 2
                assert page.locator("#chart-ttft circle.mon-marker").count() == 2
                assert "llama3.2:3b" in page.locator("#chart-tps .mon-legend").inner_text()
                levels = page.locator("#mon-tp-levels tbody tr").all_inner_texts()
                assert [row.split("\t")[:3] for row in levels] == [
                    ["1", "1", "42"],
                    ["2", "1", "30"],
                ]
                recent = page.locator("#mon-tp-recent").inner_text()
                assert "250 ms" in recent and "secret:1b" not in recent
                assert (
                    "2 completed requests, 200 tokens"
                    in page.locator("#mon-tp-status").inner_text()
                )

                in_thread(add_sample, timezone.now(), ram_used_mb=7777.0)
                page.wait_for_function(
                    "() => document.getElementById('mon-host-now').textContent.includes('7777 MB')",
                    timeout=8_000,
                )
                status = page.locator("#mon-status").inner_text()
                assert status == "Polling every 1 s"
                assert problems == []
                shots = ARTIFACTS / "screenshots"
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "monitoring-dashboard.png"), full_page=True)
            finally:
                browser.close()
