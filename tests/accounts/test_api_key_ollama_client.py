"""An API key drives the official `ollama` Python client through /ollama/ in a real Daphne:
chat (streaming and not), generate and the model list with a `chat` key; a `read` key lists
but is refused generation; a revoked key is refused."""

from __future__ import annotations

import ollama
import pytest

from accounts import services
from chat.models import Conversation

pytestmark = pytest.mark.integration


def client_with(daphne, raw: str) -> ollama.Client:
    return ollama.Client(host=f"{daphne.url}/ollama", headers={"Authorization": f"Bearer {raw}"})


def test_a_chat_key_drives_the_ollama_client(daphne, user, ollama_double):
    key, raw = services.create_api_key(user, name="script", scope="chat")
    client = client_with(daphne, raw)

    names = {m.model for m in client.list().models}
    assert "llama3.2:3b" in names

    ollama_double.script(reply="Bonjour !")
    reply = client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "Hello"}])
    assert reply.message.content == "Bonjour !"

    ollama_double.script(tokens=["a", "b"])
    streamed = client.chat(
        model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join(part.message.content or "" for part in streamed) == "ab"

    ollama_double.script(reply="42")
    assert client.generate(model="llama3.2:3b", prompt="the answer?").response == "42"

    # recorded for the key's owner, like a token's requests
    assert Conversation.objects.filter(owner=user, source="ollama").count() == 3
    key.refresh_from_db()
    assert key.last_used is not None


def test_a_read_key_lists_but_may_not_generate(daphne, user, ollama_double):
    _, raw = services.create_api_key(user, name="dashboard", scope="read")
    client = client_with(daphne, raw)
    assert client.list().models
    assert client.show("llava:7b").capabilities
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 403
    assert "needs scope 'chat'" in refused.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="llama3.2:3b", prompt="x")
    assert refused.value.status_code == 403
    assert not Conversation.objects.exists()


def test_a_revoked_key_is_refused(daphne, user, ollama_double):
    key, raw = services.create_api_key(user, name="old", scope="chat")
    client = client_with(daphne, raw)
    assert client.list().models
    services.revoke_api_key(user, key.pk)
    with pytest.raises(ollama.ResponseError) as refused:
        client.list()
    assert refused.value.status_code == 401
    assert "revoked" in refused.value.error
