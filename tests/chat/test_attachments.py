"""Uploads attached to chat messages reach Ollama as context and as images."""

import base64

import pytest

from chat.models import Message
from tests.uploads.support import make_pdf, png_1x1, post_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(client, name, content) -> str:
    response = post_file(client, name, content)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_text_attachment_is_added_to_the_context(auth_client, ollama):
    notes = upload(auth_client, "notes.md", b"# Plan\nBuy milk on Tuesday.\n")
    response = auth_client.post(
        "/api/chat/", {"message": "When?", "attachments": [notes]}, format="json"
    )
    assert response.status_code == 200, response.json()
    sent = ollama.last_request("/api/chat").json["messages"][-1]
    assert sent["role"] == "user"
    assert sent["content"].startswith("When?")
    assert "Buy milk on Tuesday." in sent["content"]
    assert 'name="notes.md"' in sent["content"]
    assert "images" not in sent
    # the saved message keeps what the person typed, and which files it used
    user_message = Message.objects.get(role="user")
    assert user_message.content == "When?"
    assert user_message.attachments[0]["name"] == "notes.md"
    assert user_message.attachments[0]["kind"] == "text"


def test_pdf_text_is_extracted(auth_client, ollama):
    pdf = upload(auth_client, "report.pdf", make_pdf(["Quarterly revenue rose 12 percent."]))
    auth_client.post("/api/chat/", {"message": "Summary?", "attachments": [pdf]}, format="json")
    sent = ollama.last_request("/api/chat").json["messages"][-1]["content"]
    assert "Quarterly revenue rose 12 percent." in sent


def test_attachment_text_is_capped(auth_client, ollama, settings):
    settings.ATTACHMENT_MAX_CHARS = 50
    big = upload(auth_client, "big.txt", b"abcdefghij" * 100)
    auth_client.post("/api/chat/", {"message": "x", "attachments": [big]}, format="json")
    sent = ollama.last_request("/api/chat").json["messages"][-1]["content"]
    assert "(truncated)" in sent
    assert "abcdefghij" * 5 in sent and "abcdefghij" * 6 not in sent
    assert Message.objects.get(role="user").attachments[0]["truncated"] is True


def test_images_go_to_a_vision_model(auth_client, ollama):
    png = png_1x1()
    image = upload(auth_client, "dot.png", png)
    response = auth_client.post(
        "/api/chat/",
        {"message": "What is it?", "model": "llava:7b", "attachments": [image]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    sent = ollama.last_request("/api/chat").json["messages"][-1]
    assert sent["images"] == [base64.b64encode(png).decode()]
    assert sent["content"] == "What is it?"


def test_a_model_without_vision_gets_a_clear_error(auth_client, ollama):
    notes = upload(auth_client, "notes.txt", b"text is fine")
    image = upload(auth_client, "dot.png", png_1x1())
    response = auth_client.post(
        "/api/chat/",
        {"message": "x", "model": "llama3.2:3b", "attachments": [notes, image]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "model_lacks_vision"
    assert response.json()["attachments"] == [image]  # the client can mark the culprit
    assert not ollama.requests_to("/api/chat")
    assert not Message.objects.exists()


def test_someone_elses_upload_cannot_be_attached(auth_client, ollama, make_user, api_client):
    api_client.force_authenticate(make_user("bob@example.com"))
    theirs = upload(api_client, "secret.txt", b"bob's secret")
    response = auth_client.post(
        "/api/chat/", {"message": "x", "attachments": [theirs]}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "attachment_not_found"
    assert theirs in response.json()["detail"]
    assert response.json()["attachments"] == [theirs]
    assert not ollama.requests_to("/api/chat")


def test_a_file_gone_from_disk_is_named(auth_client, ollama):
    from uploads.models import Upload
    from uploads.storage import path_of

    kept = upload(auth_client, "kept.txt", b"still here")
    gone = upload(auth_client, "gone.txt", b"about to vanish")
    path_of(Upload.objects.get(pk=gone).stored_name).unlink()
    response = auth_client.post(
        "/api/chat/", {"message": "x", "attachments": [kept, gone]}, format="json"
    )
    assert response.status_code == 410
    assert response.json()["code"] == "attachment_missing"
    assert "gone.txt" in response.json()["detail"]
    assert response.json()["attachments"] == [gone]
    assert not Message.objects.exists()


def test_deleting_an_upload_keeps_the_conversation_readable(auth_client, ollama):
    notes = upload(auth_client, "notes.txt", b"remember this")
    body = auth_client.post(
        "/api/chat/", {"message": "x", "attachments": [notes]}, format="json"
    ).json()
    assert auth_client.delete(f"/api/uploads/{notes}/").status_code == 204
    messages = auth_client.get(f"/api/conversations/{body['conversation']}/messages/").json()
    first = messages["results"][0]
    assert first["attachments"][0]["name"] == "notes.txt"
    # and the conversation goes on
    follow_up = auth_client.post(
        "/api/chat/", {"message": "and?", "conversation": body["conversation"]}, format="json"
    )
    assert follow_up.status_code == 200


def test_too_many_attachments(auth_client, ollama):
    ids = [upload(auth_client, f"f{i}.txt", b"x") for i in range(11)]
    response = auth_client.post("/api/chat/", {"message": "x", "attachments": ids}, format="json")
    assert response.status_code == 400
    assert "attachments" in response.json()
