"""/ollama/api/pull, delete, create, copy and push: staff only (the models are everyone's),
forwarded to Ollama for staff; and anything else under /ollama/ a JSON 404 in Ollama's shape."""

from __future__ import annotations

import httpx
import ollama
import pytest

from accounts.services import create_api_key
from tests.support.live import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def staff(make_user):
    return make_user("root@example.com", is_staff=True)


@pytest.fixture
def staff_client(daphne, staff):
    return ollama.Client(host=f"{daphne.url}/ollama", headers=bearer(staff))


@pytest.fixture
def client(daphne, user):
    return ollama.Client(host=f"{daphne.url}/ollama", headers=bearer(user))


def refused(call) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as caught:
        call()
    return caught.value


def test_non_staff_are_refused_in_ollamas_shape(client, daphne, user, ollama_double):
    calls = {
        "pulling": lambda: client.pull("gemma3:1b"),
        "deleting": lambda: client.delete("llama3.2:3b"),
        "creating": lambda: client.create("mine", from_="llama3.2:3b"),
        "copying": lambda: client.copy("llama3.2:3b", "backup"),
        "pushing": lambda: client.push("llama3.2:3b"),
    }
    for action, call in calls.items():
        error = refused(call)
        assert error.status_code == 403
        assert error.error.startswith(f"forbidden: {action} models is for staff only")
    for method, path in [
        ("POST", "pull"),
        ("DELETE", "delete"),
        ("POST", "create"),
        ("POST", "copy"),
        ("POST", "push"),
    ]:
        response = httpx.request(
            method,
            f"{daphne.url}/ollama/api/{path}",
            json={"model": "llama3.2:3b"},
            headers=bearer(user),
        )
        assert response.status_code == 403
        assert list(response.json()) == ["error"]
    # nothing reached Ollama, and every model is still there
    assert not [r for r in ollama_double.requests if r.path != "/api/tags"]
    assert "llama3.2:3b" in ollama_double.installed_models


def test_without_credentials_it_is_a_401(daphne, ollama_double):
    response = httpx.post(f"{daphne.url}/ollama/api/pull", json={"model": "gemma3:1b"})
    assert response.status_code == 401 and "error" in response.json()


def test_staff_pull_streams_ollamas_progress(staff_client, client, ollama_double):
    progress = list(staff_client.pull("gemma3:1b", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.completed for p in progress)
    assert "gemma3:1b" in ollama_double.installed_models
    assert ollama_double.last_request("/api/pull").json["model"] == "gemma3:1b"
    # the gateway's lists are fresh at once: anyone can chat with it
    client.chat(model="gemma3:1b", messages=[{"role": "user", "content": "hi"}])
    assert staff_client.pull("smollm2:135m").status == "success"  # not streaming
    error = refused(lambda: staff_client.pull("nothing:here"))
    assert "file does not exist" in error.error


def test_staff_delete(staff_client, ollama_double):
    assert staff_client.delete("qwen2.5:0.5b").status == "success"
    assert "qwen2.5:0.5b:latest" not in ollama_double.installed_models
    assert "qwen2.5:0.5b" not in ollama_double.installed_models
    error = refused(lambda: staff_client.delete("qwen2.5:0.5b"))
    assert error.status_code == 404
    assert error.error == 'model "qwen2.5:0.5b" not found'


def test_staff_create_copy_and_push(staff_client, client, ollama_double):
    created = list(staff_client.create("pirate", from_="llama3.2:3b", system="Arr.", stream=True))
    assert created[-1].status == "success"
    sent = ollama_double.last_request("/api/create").json
    assert (sent["model"], sent["from"], sent["system"]) == ("pirate", "llama3.2:3b", "Arr.")
    assert "pirate:latest" in ollama_double.installed_models

    assert staff_client.copy("pirate", "pirate-backup").status == "success"
    assert "pirate-backup:latest" in ollama_double.installed_models
    error = refused(lambda: staff_client.copy("nope:1b", "x"))
    assert error.status_code == 404

    pushed = staff_client.push("pirate")
    assert pushed.status == "success"
    assert ollama_double.last_request("/api/push").json["model"] == "pirate"
    assert refused(lambda: staff_client.push("nope:1b")).status_code == 404

    # what staff made is everyone's at once
    listed = {m.model for m in client.list().models}
    assert {"pirate:latest", "pirate-backup:latest"} <= listed


def test_an_api_key_may_not_administer_models_even_staffs(daphne, staff, ollama_double):
    _, key = create_api_key(staff, name="ci", scope="chat")
    keyed = ollama.Client(host=f"{daphne.url}/ollama", headers={"Authorization": f"Bearer {key}"})
    error = refused(lambda: keyed.pull("gemma3:1b"))
    assert error.status_code == 403
    assert not ollama_double.requests_to("/api/pull")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ollama/api/nope"),
        ("POST", "/ollama/api/blobs/sha256:abc"),
        ("GET", "/ollama/nothing/here"),
        ("DELETE", "/ollama/api/chat/extra"),
    ],
)
def test_anything_unknown_is_a_json_404_in_ollamas_shape(daphne, user, method, path):
    response = httpx.request(method, f"{daphne.url}{path}", headers=bearer(user))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "not found"}
