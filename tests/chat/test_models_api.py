import json

import pytest
from asgiref.sync import async_to_sync

from tests.ollama_double.server import OllamaDouble
from tests.support.live import free_port

pytestmark = pytest.mark.django_db


def test_models_list_with_loaded_flag(auth_client, ollama):
    auth_client.post("/api/models/load/", {"model": "qwen2.5:0.5b"}, format="json")
    models = {m["name"]: m for m in auth_client.get("/api/models/").json()["models"]}
    assert {"llama3.2:3b", "qwen2.5:0.5b", "llava:7b"} <= set(models)
    assert models["qwen2.5:0.5b"]["loaded"] is True
    assert models["llama3.2:3b"]["loaded"] is False
    assert models["llava:7b"]["size"] > 0
    assert models["llava:7b"]["details"]["quantization_level"]
    assert models["llava:7b"]["hosts"] == [ollama.url]


def test_running_models(auth_client, ollama):
    assert auth_client.get("/api/models/running/").json() == {"models": []}
    auth_client.post("/api/models/load/", {"model": "llama3.2:3b"}, format="json")
    running = auth_client.get("/api/models/running/").json()["models"]
    assert [(m["name"], m["host"]) for m in running] == [("llama3.2:3b", ollama.url)]
    assert running[0]["size_vram"] >= 0


def test_load_reports_the_load_time(auth_client, ollama):
    ollama.configure(load_duration=0.05)
    body = auth_client.post("/api/models/load/", {"model": "llama3.2:3b"}, format="json").json()
    assert body["done_reason"] == "load"
    assert body["seconds"] >= 0.05
    missing = auth_client.post("/api/models/load/", {"model": "nope"}, format="json")
    assert missing.status_code == 404


def test_models_when_ollama_is_down(auth_client, settings):
    settings.OLLAMA_URLS = [f"http://127.0.0.1:{free_port()}"]
    response = auth_client.get("/api/models/")
    assert response.status_code == 502
    assert response.json()["code"] == "ollama_unreachable"


def test_pull_and_delete_are_for_staff_only(auth_client, ollama):
    assert (
        auth_client.post("/api/models/pull/", {"model": "gemma3:1b"}, format="json").status_code
        == 403
    )
    assert auth_client.delete("/api/models/llama3.2:3b/").status_code == 403


@pytest.fixture
def staff_client(make_user, api_client):
    api_client.force_authenticate(make_user("root@example.com", is_staff=True))
    return api_client


def test_pull_streams_progress(staff_client, ollama):
    response = staff_client.post("/api/models/pull/", {"model": "gemma3:1b"}, format="json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"

    async def read():
        return b"".join([chunk async for chunk in response.streaming_content])

    lines = [json.loads(line) for line in async_to_sync(read)().splitlines()]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert any("completed" in line and "total" in line for line in lines)
    names = [m["name"] for m in staff_client.get("/api/models/").json()["models"]]
    assert "gemma3:1b" in names


def test_pull_without_streaming_and_of_an_unknown_model(staff_client, ollama):
    done = staff_client.post(
        "/api/models/pull/", {"model": "smollm2:135m", "stream": False}, format="json"
    )
    assert done.status_code == 200 and done.json()["status"] == "success"
    unknown = staff_client.post(
        "/api/models/pull/", {"model": "no-such-model", "stream": False}, format="json"
    )
    assert unknown.status_code == 502  # Ollama's own 500, relayed as an upstream failure
    assert unknown.json()["detail"]
    bad_host = staff_client.post(
        "/api/models/pull/", {"model": "x", "host": "http://evil:1"}, format="json"
    )
    assert bad_host.status_code == 400


def test_delete(staff_client, ollama):
    assert staff_client.delete("/api/models/qwen2.5:0.5b/").status_code == 204
    names = [m["name"] for m in staff_client.get("/api/models/").json()["models"]]
    assert "qwen2.5:0.5b" not in names
    missing = staff_client.delete("/api/models/qwen2.5:0.5b/")
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"


def test_several_hosts_merge_and_route_by_model(auth_client, ollama, settings):
    with OllamaDouble().start() as second:
        second.remove_model("llama3.2:3b")
        ollama.remove_model("qwen2.5:0.5b")
        settings.OLLAMA_URLS = [ollama.url, second.url]
        models = {m["name"]: m["hosts"] for m in auth_client.get("/api/models/").json()["models"]}
        assert models["llama3.2:3b"] == [ollama.url]
        assert models["qwen2.5:0.5b"] == [second.url]
        assert sorted(models["llava:7b"]) == sorted([ollama.url, second.url])

        auth_client.post("/api/chat/", {"message": "x", "model": "qwen2.5:0.5b"}, format="json")
        assert second.requests_to("/api/chat") and not ollama.requests_to("/api/chat")
        auth_client.post("/api/chat/", {"message": "x", "model": "llama3.2:3b"}, format="json")
        assert len(ollama.requests_to("/api/chat")) == 1


def test_the_least_busy_host_gets_the_chat(ollama, settings, user):
    import asyncio

    from chat import hosts

    settings.OLLAMA_MAX_CONCURRENCY = 1
    with OllamaDouble().start() as second:
        settings.OLLAMA_URLS = [ollama.url, second.url]

        async def scenario():
            gate = hosts.get_gate()
            async with gate.reserve(ollama.url) as busy:
                await busy.acquired()
                return await hosts.pick_host("llava:7b")

        assert asyncio.run(scenario()) == second.url
        assert asyncio.run(hosts.pick_host("llava:7b")) == ollama.url


# --------------------------------------------------------------------------- keep_alive


def load(client, model: str = "llama3.2:3b", **fields):
    return client.post("/api/models/load/", {"model": model, **fields}, format="json")


@pytest.mark.parametrize("keep_alive", ["10m", "1h", 60, 3600, "1h0m0s"])
def test_users_choose_a_keep_alive_within_the_bounds(auth_client, ollama, keep_alive):
    response = load(auth_client, keep_alive=keep_alive)
    assert response.status_code == 200, response.content
    # Ollama gets the value as the client wrote it (a number stays a number)
    assert ollama.last_request("/api/generate").json["keep_alive"] == keep_alive
    assert "llama3.2:3b" in ollama.loaded_models


@pytest.mark.parametrize(
    ("keep_alive", "what"),
    [
        ("0", "unload"),
        (0, "unload"),
        ("30s", "unload"),
        (-1, "longer than 1h"),
        ("-1m", "longer than 1h"),
        ("999h", "longer than 1h"),
        (86400, "longer than 1h"),
    ],
)
def test_unloading_or_pinning_a_model_is_for_staff(
    auth_client, staff_client, ollama, keep_alive, what
):
    assert load(staff_client, "qwen2.5:0.5b").status_code == 200  # someone's model is loaded
    before = len(ollama.requests_to("/api/generate"))

    response = load(auth_client, "qwen2.5:0.5b", keep_alive=keep_alive)
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "keep_alive_forbidden"
    assert "Only staff" in body["detail"] and what in body["detail"]
    assert (body["keep_alive_min"], body["keep_alive_max"]) == (60, 3600)
    # nothing reached Ollama: the model stays loaded for everyone
    assert len(ollama.requests_to("/api/generate")) == before
    assert "qwen2.5:0.5b" in ollama.loaded_models

    # staff may
    assert load(staff_client, "qwen2.5:0.5b", keep_alive=keep_alive).status_code == 200
    assert ollama.last_request("/api/generate").json["keep_alive"] == keep_alive


def test_staff_unload_a_model(staff_client, ollama):
    load(staff_client, "qwen2.5:0.5b")
    assert "qwen2.5:0.5b" in ollama.loaded_models
    assert load(staff_client, "qwen2.5:0.5b", keep_alive=0).status_code == 200
    assert "qwen2.5:0.5b" not in ollama.loaded_models


def test_the_maximum_is_a_setting(auth_client, ollama, settings):
    settings.OLLAMA_KEEP_ALIVE_MAX = 7200
    assert load(auth_client, keep_alive="2h").status_code == 200
    response = load(auth_client, keep_alive="2h1s")
    assert response.status_code == 403
    assert "longer than 2h" in response.json()["detail"]


@pytest.mark.parametrize("keep_alive", ["forever", "300", "-1", "5 minutes", True, [1], None])
def test_a_keep_alive_ollama_would_refuse_is_a_400(auth_client, ollama, keep_alive):
    before = len(ollama.requests)
    response = load(auth_client, keep_alive=keep_alive)
    assert response.status_code == 400, response.content
    body = response.json()
    expected = "invalid_input" if keep_alive is None else "invalid_keep_alive"  # null: DRF's
    assert body["code"] == expected
    assert body["detail"].startswith("keep_alive: ")
    assert len(ollama.requests) == before
