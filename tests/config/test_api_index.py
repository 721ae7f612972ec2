"""`GET /api/` is the API's index (never Django's debug 404), the APIs' unknown paths are their
own JSON 404s, DEBUG or not, and the docs pages lead back to the app. Operation ids read as a
client generator wants them."""

from __future__ import annotations

import re

import pytest
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db

OPERATION_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# What drf-spectacular's default naming leaves at the end: `auth_logout_create`.
DEFAULT_SUFFIXES = ("_create", "_retrieve", "_list", "_update", "_partial_update", "_destroy")


@pytest.mark.parametrize("debug", [True, False])
def test_the_index_lists_the_docs_and_every_group(client, settings, debug):
    settings.DEBUG = debug
    response = client.get("/api/")  # not signed in: the index is for newcomers
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    index = response.json()
    assert index["docs"]["schema"] == "http://testserver/api/schema/"
    assert index["docs"]["swagger_ui"] == "http://testserver/api/docs/"
    assert index["docs"]["redoc"] == "http://testserver/api/redoc/"
    assert index["endpoints"]["auth"]["token"] == "http://testserver/api/auth/token/"
    assert index["endpoints"]["conversations"]["conversations"].endswith("/api/conversations/")
    assert set(index["endpoints"]) >= {"auth", "chat", "conversations", "models", "uploads"}
    assert index["websockets"]["chat"] == "ws://testserver/ws/chat/"
    assert index["other_apis"]["openai"]["base_url"] == "http://testserver/v1"
    assert index["other_apis"]["ollama"]["models"] == "http://testserver/ollama/api/tags"
    # Every link is served: none leads to the APIs' 404.
    for group in index["endpoints"].values():
        for url in group.values():
            path = url.removeprefix("http://testserver")
            assert resolve(path).func.__name__ != "unmatched", path


def test_the_index_asks_for_no_credentials_and_ignores_bad_ones(client):
    response = client.get("/api/", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 200


def test_the_browsable_index(client):
    response = client.get("/api/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"/api/schema/" in response.content


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_paths_are_json_404s_in_their_own_shapes(client, settings, debug, method):
    settings.DEBUG = debug
    api = getattr(client, method)("/api/nope/")
    assert api.status_code == 404
    assert api.json() == {"detail": "Not found.", "code": "not_found"}
    ollama = getattr(client, method)("/ollama/nope")
    assert ollama.status_code == 404
    assert ollama.json() == {"error": "not found"}
    openai = getattr(client, method)("/v1/nope")
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("path", "other"), [("/api/docs/", "/api/redoc/"), ("/api/redoc/", "/api/docs/")]
)
def test_swagger_ui_and_redoc_lead_back_to_the_app(client, path, other):
    response = client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<a class="docs-home" href="/">← Back to Ollama Gateway</a>' in page
    assert f'href="{other}"' in page
    assert 'href="/api/"' in page
    assert "<script>" not in page  # the CSP allows no inline script


def test_operation_ids_read_well_and_are_unique():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    ids = [
        operation["operationId"]
        for item in schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(ids) > 30
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        assert OPERATION_ID.match(operation_id), operation_id
        assert not operation_id.endswith(DEFAULT_SUFFIXES), operation_id
    operations = {
        (method.upper(), path): operation["operationId"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert operations[("POST", "/api/auth/logout/")] == "logout"
    assert operations[("POST", "/api/auth/token/")] == "obtain_token"
    assert operations[("POST", "/api/auth/token/refresh/")] == "refresh_token"
    assert operations[("POST", "/api/chat/")] == "chat"
    assert operations[("POST", "/api/chat/stream/")] == "stream_chat"
    assert operations[("GET", "/api/conversations/")] == "list_conversations"
    assert operations[("POST", "/api/conversations/")] == "create_conversation"
    assert operations[("GET", "/api/conversations/{id}/")] == "get_conversation"
    assert operations[("PATCH", "/api/conversations/{id}/")] == "partial_update_conversation"
    assert operations[("DELETE", "/api/conversations/{id}/")] == "delete_conversation"
    assert operations[("GET", "/api/conversations/{id}/messages/")] == "list_conversation_messages"
    assert operations[("POST", "/api/messages/{id}/regenerate/")] == "regenerate_message"
    assert operations[("GET", "/api/uploads/{id}/download/")] == "download_upload"
    assert operations[("GET", "/api/models/")] == "list_models"
