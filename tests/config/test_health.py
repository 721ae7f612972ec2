import asyncio

import pytest
from django.test import Client

from config import health


@pytest.fixture(autouse=True)
def _generous_check_timeout(settings):
    # The checks here answer, or fail, at once; on a loaded machine "at once" may exceed the
    # production default of 3 s, so the bound is the test's own and generous (only a broken
    # run would wait for it). The timeout itself is tested with a check that never answers.
    settings.READY_CHECK_TIMEOUT = 60.0


def test_health_needs_no_login_or_database():
    response = Client().get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_everything_is_up(ollama):
    response = Client().get("/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True
    assert body["checks"]["ollama"]["ok"] is True


@pytest.mark.django_db
def test_ready_names_ollama_when_it_is_down(settings):
    from tests.support.live import free_port

    settings.OLLAMA_URLS = [f"http://127.0.0.1:{free_port()}"]
    response = Client().get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["ollama"]
    assert "127.0.0.1" in body["checks"]["ollama"]["error"]


@pytest.mark.django_db
def test_ready_with_one_of_two_ollama_hosts_down(ollama, settings):
    from tests.support.live import free_port

    settings.OLLAMA_URLS = [f"http://127.0.0.1:{free_port()}", ollama.url]
    assert Client().get("/ready").status_code == 200


@pytest.mark.django_db
def test_ready_names_the_failing_part(monkeypatch, ollama):
    async def broken():
        raise ConnectionError("connection refused")

    monkeypatch.setitem(health.READINESS_CHECKS, "channel_layer", broken)
    response = Client().get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["channel_layer"]
    assert "connection refused" in body["checks"]["channel_layer"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_a_check_that_never_answers_is_cut_off_at_the_configured_timeout(monkeypatch, settings):
    started = []

    async def answers():
        return None

    async def never_answers():
        started.append(True)
        await asyncio.Event().wait()

    monkeypatch.setitem(health.READINESS_CHECKS, "database", answers)
    monkeypatch.setitem(health.READINESS_CHECKS, "channel_layer", answers)
    monkeypatch.setitem(health.READINESS_CHECKS, "ollama", never_answers)
    settings.READY_CHECK_TIMEOUT = 0.25  # the check never answers: no machine is too slow
    response = Client().get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert started == [True]
    assert body["failing"] == ["ollama"]
    assert body["checks"]["ollama"]["error"] == "no answer within 0.25 s"
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_ready_reports_an_unreachable_channel_layer(settings, ollama):
    # A real failure rather than a stub: point the channel layer at a Redis port nothing
    # listens on, and the check must time out or fail, naming the channel layer.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        response = Client().get("/ready")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 503
    assert response.json()["failing"] == ["channel_layer"]


def test_openapi_schema_and_docs_are_served(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/auth/token/" in schema.content
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/redoc/").status_code == 200
