"""Uploads attached to chat messages reach Ollama as context and as images."""

import base64
import resource
import signal

import pytest

from chat.models import Message
from tests.uploads.support import make_pdf, make_pdf_sharing_one_stream, png_1x1, post_file
from uploads import sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(client, name, content) -> str:
    response = post_file(client, name, content)
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.fixture
def spawns(monkeypatch) -> list:
    """The children started to read PDFs."""
    children = []
    spawn = sandbox._spawn

    async def counting(*args, **kwargs):
        process = await spawn(*args, **kwargs)
        children.append(process)
        return process

    monkeypatch.setattr(sandbox, "_spawn", counting)
    return children


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


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


def test_a_pdf_is_parsed_once_however_often_it_is_attached(auth_client, ollama, spawns):
    pdf = upload(auth_client, "report.pdf", make_pdf(["Revenue rose 12 percent."]))
    for question in ("Summary?", "And again?"):
        response = auth_client.post(
            "/api/chat/simple/", {"message": question, "attachments": [pdf]}, format="json"
        )
        assert response.status_code == 200, response.json()
        sent = ollama.last_request("/api/chat").json["messages"][-1]["content"]
        assert "Revenue rose 12 percent." in sent
    assert len(spawns) == 1  # the second message read the cached text


def test_a_pdf_that_burns_cpu_is_refused_at_the_limit(
    auth_client, ollama, settings, spawns, monkeypatch
):
    """The finding: pages sharing one large stream of text operators that draw nothing."""
    # At the tests' priority, so that a busy machine cannot starve the child into its
    # wall-clock limit before it reaches its CPU limit.
    monkeypatch.setattr(sandbox, "NICENESS", 0)
    settings.UPLOAD_EXTRACT_CPU_SECONDS = 1
    settings.UPLOAD_EXTRACT_WALL_SECONDS = 60.0
    settings.UPLOAD_EXTRACT_MEMORY_MB = 200
    hostile = upload(auth_client, "pages.pdf", make_pdf_sharing_one_stream(40, 200_000))
    here = cpu_seconds(resource.RUSAGE_SELF)

    response = auth_client.post(
        "/api/chat/simple/", {"message": "Summary?", "attachments": [hostile]}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "attachment_unreadable"
    assert body["reason"] == "cpu_limit"
    assert body["attachments"] == [hostile]
    assert "pages.pdf" in body["detail"] and "CPU-time limit of 1 s" in body["detail"]
    # a child burnt the CPU and was ended by the kernel; the web process did not
    assert [child.returncode for child in spawns] == [-signal.SIGXCPU]
    assert cpu_seconds(resource.RUSAGE_SELF) - here < 0.5
    assert not ollama.requests_to("/api/chat")
    assert not Message.objects.exists()

    # the refusal is cached: the next message is refused without parsing it again
    again = auth_client.post(
        "/api/chat/", {"message": "Again?", "attachments": [hostile]}, format="json"
    )
    assert again.status_code == 400
    assert again.json()["reason"] == "cpu_limit"
    assert len(spawns) == 1


def test_a_pdf_without_text_is_refused(auth_client, ollama):
    scan = upload(auth_client, "scan.pdf", make_pdf(["", ""]))
    response = auth_client.post(
        "/api/chat/", {"message": "x", "attachments": [scan]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "attachment_unreadable"
    assert response.json()["reason"] == "no_text"
    assert not ollama.requests_to("/api/chat")


def test_an_encrypted_pdf_is_refused(auth_client, ollama):
    locked = upload(auth_client, "locked.pdf", make_pdf(["secret"], user_password="pw"))
    response = auth_client.post(
        "/api/chat/", {"message": "x", "attachments": [locked]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "attachment_unreadable"
    assert response.json()["reason"] == "pdf_encrypted"
    assert "password" in response.json()["detail"]


def test_a_server_that_cannot_start_the_reader_says_so(auth_client, ollama, monkeypatch):
    from uploads.models import Upload

    pdf = upload(auth_client, "report.pdf", make_pdf(["fine"]))

    async def no_processes(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(sandbox, "_spawn", no_processes)
    response = auth_client.post("/api/chat/", {"message": "x", "attachments": [pdf]}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "attachment_unavailable"
    assert response["Retry-After"]
    # nothing was learnt about the file: the next message reads it
    assert Upload.objects.get(pk=pdf).text_state == "pending"
    monkeypatch.undo()
    response = auth_client.post("/api/chat/", {"message": "x", "attachments": [pdf]}, format="json")
    assert response.status_code == 200
