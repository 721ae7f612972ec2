"""/ollama/api/embed and the older /ollama/api/embeddings: the official `ollama` client's
embed() through the gateway (a real Daphne), the gate, the records without content; and the
pieces under them: the Ollama double's endpoints and the core client's embed()."""

from __future__ import annotations

import asyncio
import json

import httpx
import ollama
import pytest

from chat.models import Conversation, Message
from core.ollama import ModelNotFound, OllamaBadRequest, OllamaClient
from tests.ollama_double.server import embedding_of, tokenize
from tests.support.live import bearer

TEXTS = ["Why is the sky blue?", "Because of Rayleigh scattering."]


# --------------------------------------------------------------------------- the double


def test_the_double_answers_embed_in_ollamas_shape(ollama_double):
    response = httpx.post(
        f"{ollama_double.url}/api/embed", json={"model": "llama3.2:3b", "input": TEXTS}
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    ]
    assert body["model"] == "llama3.2:3b"
    assert body["embeddings"] == [embedding_of("llama3.2:3b", t) for t in TEXTS]
    assert len(body["embeddings"][0]) == 3072  # the model's embedding_length
    assert sum(x * x for x in body["embeddings"][0]) == pytest.approx(1.0)  # normalised
    assert body["prompt_eval_count"] == sum(len(tokenize(t)) for t in TEXTS)
    assert body["total_duration"] >= body["load_duration"] >= 0

    def post(path: str, payload) -> httpx.Response:
        return httpx.post(f"{ollama_double.url}{path}", json=payload)

    missing = post("/api/embed", {"model": "nope:1b", "input": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope:1b' not found"})
    bad = post("/api/embed", {"model": "llama3.2:3b", "input": [1, 2]})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid input type"})
    empty = post("/api/embed", {"model": "llama3.2:3b", "input": []})
    assert empty.json() == {"model": "llama3.2:3b", "embeddings": []}
    cut = post("/api/embed", {"model": "llama3.2:3b", "input": "x", "dimensions": 4}).json()
    assert cut["embeddings"] == [embedding_of("llama3.2:3b", "x", dimensions=4)]
    long = " word" * 5000  # over the default 4096-token context
    too_long = post("/api/embed", {"model": "llama3.2:3b", "input": long, "truncate": False})
    assert too_long.status_code == 400
    truncated = post("/api/embed", {"model": "llama3.2:3b", "input": long}).json()
    assert truncated["prompt_eval_count"] == 4096

    legacy = post("/api/embeddings", {"model": "llama3.2:3b", "prompt": "hi"})
    assert legacy.json() == {"embedding": embedding_of("llama3.2:3b", "hi")}
    assert post("/api/embeddings", {"model": "llama3.2:3b"}).json() == {"embedding": []}
    gone = post("/api/embeddings", {"model": "nope:1b", "prompt": "x"})
    assert gone.status_code == 404
    assert gone.json() == {"error": 'model "nope:1b" not found, try pulling it first'}


async def test_the_core_client_embeds(ollama_double):
    async with OllamaClient(ollama_double.url) as client:
        result = await client.embed("llama3.2:3b", TEXTS, dimensions=16)
        for text, vector in zip(TEXTS, result.embeddings, strict=True):
            assert vector == pytest.approx(embedding_of("llama3.2:3b", text, dimensions=16))
        assert result.prompt_eval_count == sum(len(tokenize(t)) for t in TEXTS)
        assert result.timings is not None and (result.timings.total_duration or 0) > 0
        assert result.raw["model"] == "llama3.2:3b"
        single = await client.embed("llama3.2:3b", "one")
        assert len(single.embeddings) == 1
        with pytest.raises(ModelNotFound) as missing:
            await client.embed("nope:1b", "x")
        assert missing.value.model == "nope:1b"
        with pytest.raises(OllamaBadRequest):
            await client.embed("llama3.2:3b", " w" * 5000, truncate=False)
    sent = ollama_double.requests_to("/api/embed")[0].json
    assert sent == {"model": "llama3.2:3b", "input": TEXTS, "dimensions": 16}


# --------------------------------------------------------------------------- through the gateway


@pytest.fixture
def client(daphne, user):
    return ollama.Client(host=f"{daphne.url}/ollama", headers=bearer(user))


@pytest.mark.integration
def test_the_official_clients_embed(client, ollama_double, user):
    result = client.embed(model="llama3.2:3b", input=TEXTS)
    assert result.model == "llama3.2:3b"
    for text, vector in zip(TEXTS, result.embeddings, strict=True):
        assert list(vector) == pytest.approx(embedding_of("llama3.2:3b", text))
    assert result.prompt_eval_count == sum(len(tokenize(t)) for t in TEXTS)
    assert result.total_duration > 0 and result.load_duration is not None
    assert ollama_double.last_request("/api/embed").json == {
        "model": "llama3.2:3b",
        "input": TEXTS,
    }

    one = client.embed(model="llama3.2:3b", input="solo", dimensions=32, truncate=True)
    assert list(one.embeddings[0]) == pytest.approx(
        embedding_of("llama3.2:3b", "solo", dimensions=32)
    )
    sent = ollama_double.last_request("/api/embed").json
    assert (sent["dimensions"], sent["truncate"]) == (32, True)

    legacy = client.embeddings(model="llama3.2:3b", prompt="the older endpoint")
    assert list(legacy.embedding) == pytest.approx(
        embedding_of("llama3.2:3b", "the older endpoint")
    )


@pytest.mark.integration
def test_embeddings_are_recorded_without_their_content(client, daphne, ollama_double, user):
    client.embed(model="llama3.2:3b", input=TEXTS, options={"num_ctx": 2048})
    conversation = Conversation.objects.get(owner=user)
    assert (conversation.source, conversation.title) == ("ollama", "embeddings: llama3.2:3b")
    (record,) = conversation.messages.all()
    assert (record.role, record.content, record.status) == ("assistant", "", "complete")
    assert conversation.current_leaf_id == record.pk
    assert record.prompt_eval_count == sum(len(tokenize(t)) for t in TEXTS)
    assert record.eval_count == 0  # an embedding generates nothing
    assert (record.total_duration or 0) > 0 and record.load_duration is not None
    assert record.queue_wait is not None and record.in_flight_at_start == 1
    assert (record.model, record.ollama_host) == ("llama3.2:3b", ollama_double.url)
    assert record.options == {"num_ctx": 2048}
    for text in TEXTS:  # neither the texts nor the vectors are kept anywhere
        assert not Message.objects.filter(content__contains=text).exists()
        assert not Conversation.objects.filter(title__contains=text).exists()
    # monitoring's per-request figures and throughput see it like any reply
    rows = httpx.get(f"{daphne.url}/api/monitoring/requests/", headers=bearer(user)).json()
    (row,) = [r for r in rows["results"] if r["id"] == record.pk]
    assert row["prompt_eval_count"] == record.prompt_eval_count
    throughput = httpx.get(f"{daphne.url}/api/monitoring/throughput/", headers=bearer(user))
    assert throughput.status_code == 200


@pytest.mark.integration
def test_the_rules_of_every_chat_hold(client, daphne, ollama_double, user, settings):
    def refused(call) -> ollama.ResponseError:
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        return caught.value

    missing = refused(lambda: client.embed(model="nope:1b", input="x"))
    assert missing.status_code == 404 and "nope:1b" in missing.error
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    too_long = refused(lambda: client.embed(model="llama3.2:3b", input=["ok", "x" * (limit + 1)]))
    assert too_long.status_code == 400
    assert too_long.error == f"input[1] has {limit + 1} characters; the limit is {limit}."
    legacy = refused(lambda: client.embeddings(model="llama3.2:3b", prompt="x" * (limit + 1)))
    assert legacy.error.startswith("prompt has")
    options = refused(lambda: client.embed(model="llama3.2:3b", input="x", options={"num_gpu": 9}))
    assert options.status_code == 400 and "num_gpu" in options.error
    pinned = refused(lambda: client.embed(model="llama3.2:3b", input="x", keep_alive=-1))
    assert pinned.status_code == 403
    assert not ollama_double.requests_to("/api/embed")

    for body, message in [
        ({"input": "x"}, "model is required"),
        ({"model": "llama3.2:3b", "input": [1]}, "invalid input type"),
        ({"model": "llama3.2:3b", "input": "x", "truncate": "no"}, "truncate must be a boolean"),
    ]:
        response = httpx.post(f"{daphne.url}/ollama/api/embed", json=body, headers=bearer(user))
        assert (response.status_code, response.json()) == (400, {"error": message})
    # Ollama's own errors after the gate are recorded, as a failed generation is
    response = httpx.post(
        f"{daphne.url}/ollama/api/embed",
        json={"model": "llama3.2:3b", "input": " w" * 5000, "truncate": False},
        headers=bearer(user),
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "input exceeds maximum context length"}
    failed = Message.objects.get(conversation__owner=user)
    assert (failed.status, failed.error_code, failed.content) == ("failed", "bad_request", "")


@pytest.mark.integration
def test_an_embedding_waits_its_turn_at_the_gate(daphne, make_user, ollama_double):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    held = ollama_double.script(tokens=["first ", "reply"], hold_after=1)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=daphne.url, timeout=30) as http:
            async with http.stream(
                "POST",
                "/ollama/api/chat",
                json={"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}]},
                headers=bearer(alice),
            ) as generation:
                lines = generation.aiter_lines()
                await anext(lines)  # the first token: alice holds the slot
                waiting = asyncio.create_task(
                    http.post(
                        "/ollama/api/embed",
                        json={"model": "llama3.2:3b", "input": "wait for me"},
                        headers=bearer(bob),
                    )
                )
                while True:  # until the gateway's own view shows bob waiting (an event)
                    now = await http.get("/api/monitoring/now/", headers=bearer(bob))
                    queue = [e for h in now.json()["hosts"] for e in h["queue"]]
                    if queue:
                        break
                    await asyncio.sleep(0.02)
                assert queue[0]["user"] == bob.pk and queue[0]["position"] == 1
                assert not ollama_double.requests_to("/api/embed")  # Ollama has not seen it
                ollama_double.release(held)
                assert json.loads([line async for line in lines][-1])["done"] is True
            response = await asyncio.wait_for(waiting, 30)
            assert response.status_code == 200
            assert len(response.json()["embeddings"]) == 1

    asyncio.run(scenario())
    record = Message.objects.get(conversation__owner=bob)
    assert record.queue_wait and record.queue_wait > 0
