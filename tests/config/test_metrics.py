"""GET /metrics: protected (off, a bearer token, allowed networks), valid Prometheus text, the
figures of generations, requests, sockets, gates and telemetry, and summed over two web
processes in multiprocess mode."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from chat import hosts
from monitoring.models import GpuSample, HostSample
from tests.support.live import DaphneServer, bearer
from tests.support.websocket import Communicator

TOKEN = "scrape-secret-0123456789"


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, /, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def scraping(settings):
    settings.METRICS_TOKEN = TOKEN


def test_off_by_default(client, db):
    assert client.get("/metrics").status_code == 404


def test_a_token_is_required_and_compared_whole(client, db, scraping):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_allowed_networks(client, db, settings):
    import ipaddress

    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
    settings.METRICS_TOKEN = TOKEN  # both set: both needed
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    answer = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200


def test_bad_networks_are_refused_at_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import Env

    with pytest.raises(ImproperlyConfigured, match="not an IP network"):
        Env({}).network("METRICS_ALLOWED_NETWORKS", "10.0.0.0/33")


def test_a_chat_counts_its_generation_tokens_and_request(client, auth_client, ollama, scraping):
    ollama.script(tokens=["Hello", " there", "!"])
    before = scrape(client)
    response = auth_client.post("/api/chat/", {"message": "hi"}, format="json")
    assert response.status_code == 200
    model, host = response.json()["model"], ollama.url
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ollama_gateway_generations_total", model=model, host=host, outcome="complete") == 1
    assert grew("ollama_gateway_generated_tokens_total", model=model, host=host) == 3
    assert grew("ollama_gateway_time_to_first_token_seconds_count", model=model) == 1
    assert grew("ollama_gateway_queue_wait_seconds_count", host=host) == 1
    assert grew("ollama_gateway_http_requests_total", view="chat", method="POST", status="200") == 1
    assert (
        grew("ollama_gateway_http_requests_total", view="metrics", method="GET", status="200") == 1
    )


def test_a_failed_generation_counts_as_failed(client, auth_client, ollama, scraping):
    ollama.script(tokens=["a", "b"], error_after=1)
    before = scrape(client)
    response = auth_client.post("/api/chat/", {"message": "hi"}, format="json")
    model = response.json().get("model") or "llama3.2:3b"
    after = scrape(client)
    labels = {"model": model, "host": ollama.url, "outcome": "failed"}
    name = "ollama_gateway_generations_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_the_gate_and_telemetry_are_read_when_scraped(client, ollama, scraping, db):
    import asyncio

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        async def run() -> None:
            async with hosts.get_gate().reserve(ollama.url) as reservation:
                await reservation.acquired()
                holding.set()
                while not release.is_set():
                    await asyncio.sleep(0.01)

        asyncio.run(run())

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        found = scrape(client)
    finally:
        release.set()
        holder.join(10)
    assert value(found, "ollama_gateway_generations_in_flight", host=ollama.url) == 1
    assert value(found, "ollama_gateway_queue_length", host=ollama.url) == 0

    sample = HostSample.objects.create(
        host="gpu-box", taken_at=timezone.now(), ram_used_mb=1024, ram_total_mb=4096
    )
    GpuSample.objects.create(
        host_sample=sample,
        host="gpu-box",
        taken_at=sample.taken_at,
        index=0,
        name="RTX 4090",
        utilization_percent=87,
        memory_used_mb=2048,
    )
    found = scrape(client)
    assert value(found, "ollama_gateway_ram_used_bytes", host="gpu-box") == 1024 * 1024 * 1024
    gpu = {"host": "gpu-box", "gpu": "0", "name": "RTX 4090"}
    assert value(found, "ollama_gateway_gpu_utilization_percent", **gpu) == 87
    assert value(found, "ollama_gateway_gpu_memory_used_bytes", **gpu) == 2048 * 1024 * 1024
    assert value(found, "ollama_gateway_scrape_errors") == 0


@pytest.mark.django_db(transaction=True)
async def test_open_websockets_are_counted(client, user, scraping):
    from asgiref.sync import sync_to_async
    from rest_framework_simplejwt.tokens import AccessToken

    from config.asgi import application

    def sockets() -> float:
        return value(scrape(client), "ollama_gateway_websocket_connections", endpoint="chat")

    before = await sync_to_async(sockets)()
    communicator = Communicator(
        application,
        "/ws/chat/",
        headers=[(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())],
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await sync_to_async(sockets)() == before + 1
    await communicator.disconnect()
    assert await sync_to_async(sockets)() == before


@pytest.mark.integration
def test_two_processes_are_summed_in_multiprocess_mode(
    transactional_db, ollama_double, user, tmp_path
):
    ollama_double.script(tokens=["x", "y"], times=None)
    env = {
        "OLLAMA_URL": ollama_double.url,
        "OLLAMA_DEFAULT_MODEL": "llama3.2:3b",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    with DaphneServer("metrics-a", **env) as first, DaphneServer("metrics-b", **env) as second:
        for server in (first, second):
            answer = httpx.post(
                f"{server.url}/api/chat/", json={"message": "hi"}, headers=bearer(user), timeout=30
            )
            assert answer.status_code == 200, answer.text
        for server in (first, second):  # either process tells the sum
            text = httpx.get(
                f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ).text
            found = samples(text)
            labels = {"model": "llama3.2:3b", "host": ollama_double.url, "outcome": "complete"}
            assert value(found, "ollama_gateway_generations_total", **labels) == 2
            tokens = {"model": "llama3.2:3b", "host": ollama_double.url}
            assert value(found, "ollama_gateway_generated_tokens_total", **tokens) == 4


def test_an_embedding_counts_with_its_prompt_tokens(client, user, ollama, scraping):
    from rest_framework_simplejwt.tokens import AccessToken

    before = scrape(client)
    response = client.post(
        "/ollama/api/embed",
        {"model": "llama3.2:3b", "input": ["one two three"]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}",
    )
    assert response.status_code == 200, response.content
    after = scrape(client)
    labels = {"model": "llama3.2:3b", "host": ollama.url}
    name = "ollama_gateway_embeddings_total"
    assert (
        value(after, name, **labels, outcome="complete")
        - value(before, name, **labels, outcome="complete")
        == 1
    )
    prompt = "ollama_gateway_prompt_tokens_total"
    assert (
        value(after, prompt, **labels) - value(before, prompt, **labels)
        == (response.json()["prompt_eval_count"])
    )
