"""The Ollama double speaks Ollama's wire protocol (checked with raw httpx)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ollama_double import BUSY_MESSAGE, OllamaDouble, tokenize

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)$")
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
USER = [{"role": "user", "content": "Say hello to the world"}]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http(ollama_double):
    with httpx.Client(base_url=ollama_double.url, timeout=10) as client:
        yield client


def read_stream(http, path, body):
    """POST and return (response, raw body bytes, [(arrival time, parsed line)])."""
    with http.stream("POST", path, json=body) as r:
        raw, lines, buf = b"", [], b""
        for chunk in r.iter_raw():
            raw += chunk
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append((time.monotonic(), json.loads(line)))
    return r, raw, lines


def test_root_head_and_version(http):
    r = http.get("/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"].startswith("text/plain")
    assert http.head("/").status_code == 200
    assert http.get("/api/version").json() == {"version": "0.12.6"}


def test_tokenize_keeps_every_character():
    for text in ["Hello, world!  How's it going?\n\nFine.", "", "   ", "a", "été — ça va ?"]:
        assert "".join(tokenize(text)) == text
    assert tokenize("Hello world") == ["Hello", " world"]


def test_chat_stream_wire_format_and_timings(ollama_double, http):
    reply = "Hello, world! How are you today?"
    ollama_double.script(reply=reply, token_delay=0.01)
    r, raw, lines = read_stream(http, "/api/chat", {"model": "llama3.2:3b", "messages": USER})

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(lines)
    chunks = [obj for _, obj in lines]
    *parts, final = chunks
    for obj in parts:
        assert set(obj) == {"model", "created_at", "message", "done"}
        assert obj["done"] is False and obj["model"] == "llama3.2:3b"
        assert obj["message"]["role"] == "assistant"
        assert RFC3339.match(obj["created_at"]), obj["created_at"]
    assert "".join(p["message"]["content"] for p in parts) == reply
    n = len(tokenize(reply))
    assert len(parts) == n

    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(type(final[k]) is int for k in METRICS)
    assert final["eval_count"] == n
    # eval_duration is the real time spent emitting n tokens at 10 ms each.
    assert 0.01 * n * 1e9 <= final["eval_duration"] < (0.01 * n + 0.5) * 1e9
    assert final["total_duration"] >= (
        final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    )
    assert final["prompt_eval_count"] >= len(tokenize(USER[0]["content"]))
    # Really streamed: the lines arrived spread over the generation, not in one burst.
    assert lines[-1][0] - lines[0][0] >= 0.01 * (n - 1) * 0.8


def test_generate_stream_has_response_and_context(ollama_double, http):
    ollama_double.script(reply="Blue sky")
    body = {"model": "qwen2.5:0.5b", "prompt": "Why is the sky blue?", "system": "Be brief"}
    r, _, lines = read_stream(http, "/api/generate", body)
    chunks = [obj for _, obj in lines]
    assert r.headers["content-type"] == "application/x-ndjson"
    assert [c["response"] for c in chunks[:-1]] == ["Blue", " sky"]
    assert all("message" not in c for c in chunks)
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    assert final["context"] and all(type(i) is int for i in final["context"])
    assert final["eval_count"] == 2


def test_stream_false_returns_one_json_object(ollama_double, http):
    ollama_double.script(reply="All in one piece.")
    r = http.post("/api/chat", json={"model": "llama3.2:3b", "messages": USER, "stream": False})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.text.count("\n") <= 1
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "All in one piece."}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["eval_count"] == len(tokenize("All in one piece."))
    assert all(type(body[k]) is int for k in METRICS)

    ollama_double.script(reply="Gen reply")
    r = http.post("/api/generate", json={"model": "llama3.2:3b", "prompt": "x", "stream": False})
    assert r.json()["response"] == "Gen reply" and isinstance(r.json()["context"], list)


def test_num_predict_truncates_with_done_reason_length(ollama_double, http):
    ollama_double.script(tokens=[f"t{i} " for i in range(10)])
    body = {"model": "llama3.2:3b", "messages": USER, "options": {"num_predict": 3}}
    _, _, lines = read_stream(http, "/api/chat", body)
    chunks = [obj for _, obj in lines]
    assert [c["message"]["content"] for c in chunks[:-1]] == ["t0 ", "t1 ", "t2 "]
    assert chunks[-1]["done_reason"] == "length" and chunks[-1]["eval_count"] == 3


def test_stop_option_cuts_the_reply(ollama_double, http):
    ollama_double.script(reply="one two three four")
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    body["options"] = {"stop": [" three"]}
    r = http.post("/api/chat", json=body)
    assert r.json()["message"]["content"] == "one two"
    assert r.json()["done_reason"] == "stop"


def test_cold_model_pays_load_duration_once(ollama_double, http):
    ollama_double.configure(load_duration=0.2)
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    cold = http.post("/api/chat", json=body).json()
    warm = http.post("/api/chat", json=body).json()
    assert cold["load_duration"] >= 0.2e9
    assert cold["total_duration"] >= cold["load_duration"] + cold["eval_duration"]
    assert warm["load_duration"] < 0.1e9


def test_load_unload_and_ps(ollama_double, http):
    assert http.get("/api/ps").json() == {"models": []}
    r = http.post("/api/chat", json={"model": "llama3.2:3b", "messages": []})
    assert r.status_code == 200
    assert r.json()["done"] is True and r.json()["done_reason"] == "load"
    r = http.post("/api/generate", json={"model": "qwen2.5:0.5b"})
    assert r.json()["done_reason"] == "load" and r.json()["response"] == ""

    ps = http.get("/api/ps").json()["models"]
    assert {m["name"] for m in ps} == {"llama3.2:3b", "qwen2.5:0.5b"}
    for m in ps:
        assert RFC3339.match(m["expires_at"])
        assert m["size_vram"] > 0 and m["digest"] and m["details"]["family"]

    r = http.post("/api/chat", json={"model": "llama3.2:3b", "messages": [], "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    r = http.post("/api/generate", json={"model": "qwen2.5:0.5b", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert http.get("/api/ps").json() == {"models": []}

    # A generation loads the model too.
    http.post("/api/chat", json={"model": "llava:7b", "messages": USER, "stream": False})
    assert [m["name"] for m in http.get("/api/ps").json()["models"]] == ["llava:7b"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, None),
        (b"", 400, "missing request body"),
        (json.dumps({"messages": USER}).encode(), 400, "model is required"),
        (
            json.dumps({"model": "nope:1b", "messages": USER}).encode(),
            404,
            'model "nope:1b" not found, try pulling it first',
        ),
        (
            json.dumps(
                {"model": "llama3.2:3b", "messages": USER, "options": {"temperature": "hot"}}
            ).encode(),
            400,
            'option "temperature" must be of type float32',
        ),
        (
            json.dumps(
                {
                    "model": "llama3.2:3b",
                    "messages": [{"role": "user", "content": "what is it?", "images": ["aGk="]}],
                }
            ).encode(),
            400,
            "registry.ollama.ai/library/llama3.2:3b does not support vision",
        ),
        (
            json.dumps({"model": "llama3.2:3b", "messages": USER, "think": True}).encode(),
            400,
            '"llama3.2:3b" does not support thinking',
        ),
    ],
)
def test_chat_errors_like_ollama(http, body, status, message):
    r = http.post("/api/chat", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"}
    if message is not None:
        assert r.json()["error"] == message


def test_generate_unknown_model_and_vision(http):
    r = http.post("/api/generate", json={"model": "ghost", "prompt": "x"})
    assert r.status_code == 404
    assert r.json() == {"error": 'model "ghost" not found, try pulling it first'}
    r = http.post(
        "/api/generate", json={"model": "qwen2.5:0.5b", "prompt": "x", "images": ["aGk="]}
    )
    assert r.status_code == 400 and "does not support vision" in r.json()["error"]
    r = http.post(
        "/api/generate",
        json={"model": "llava:7b", "prompt": "x", "images": ["aGk="], "stream": False},
    )
    assert r.status_code == 200 and r.json()["prompt_eval_count"] > 500  # image tokens


def test_unknown_options_ignored_known_ones_recorded(ollama_double, http):
    options = {"temperature": 0.2, "top_k": 40, "seed": 7, "stop": ["\n"], "bogus": {"x": 1}}
    r = http.post(
        "/api/chat",
        json={"model": "llama3.2:3b", "messages": USER, "options": options, "stream": False},
        headers={"Authorization": "Bearer t0k"},
    )
    assert r.status_code == 200
    rec = ollama_double.last_request("/api/chat")
    assert rec.method == "POST" and rec.body["options"] == options
    assert rec.body["messages"] == USER
    assert rec.headers["authorization"] == "Bearer t0k"
    assert rec.time <= time.time()


def test_thinking_model_streams_thinking_first(ollama_double, http):
    ollama_double.script(thinking="Hmm, let me see.", reply="Yes.")
    body = {"model": "qwen3:0.6b", "messages": USER, "think": True}
    _, _, lines = read_stream(http, "/api/chat", body)
    msgs = [obj["message"] for _, obj in lines[:-1]]
    assert "".join(m.get("thinking", "") for m in msgs) == "Hmm, let me see."
    assert "".join(m["content"] for m in msgs) == "Yes."
    assert msgs[0]["content"] == "" and msgs[0]["thinking"]
    assert lines[-1][1]["eval_count"] == len(msgs)


def test_midstream_error_line_without_done(ollama_double, http):
    ollama_double.script(reply="one two three four", error_after=2, error_message="CUDA error")
    r, raw, lines = read_stream(http, "/api/chat", {"model": "llama3.2:3b", "messages": USER})
    assert r.status_code == 200
    chunks = [obj for _, obj in lines]
    assert [c["message"]["content"] for c in chunks[:2]] == ["one", " two"]
    assert chunks[2] == {"error": "CUDA error"}
    assert len(chunks) == 3 and raw.endswith(b"\n")
    gen = ollama_double.last_generation
    assert gen.error == "CUDA error" and not gen.completed and gen.tokens_sent == 2


def test_midstream_error_without_streaming_is_a_500(ollama_double, http):
    ollama_double.script(error_after=1, error_message="boom")
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    r = http.post("/api/chat", json=body)
    assert (r.status_code, r.json()) == (500, {"error": "boom"})


def test_scripted_status_errors(ollama_double, http):
    body = {"model": "llama3.2:3b", "messages": USER}
    ollama_double.script(status=500, status_error="llama runner crashed")
    r = http.post("/api/chat", json=body)
    assert (r.status_code, r.json()) == (500, {"error": "llama runner crashed"})
    ollama_double.script(status=503)
    r = http.post("/api/chat", json=body)
    assert (r.status_code, r.json()) == (503, {"error": BUSY_MESSAGE})
    # Scripts can target another endpoint and a number of requests.
    ollama_double.script(status=500, path="/api/tags", times=2)
    assert [http.get("/api/tags").status_code for _ in range(3)] == [500, 500, 200]
    # A script for another model does not apply.
    ollama_double.script(status=500, model="qwen2.5:0.5b")
    assert http.post("/api/chat", json=body | {"stream": False}).status_code == 200


def test_dropped_connection_after_n_tokens(ollama_double, http):
    ollama_double.script(reply="a b c d e f", drop_after=2)
    got = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/api/chat", json={"model": "llama3.2:3b", "messages": USER}) as r,
    ):
        for line in r.iter_lines():
            got.append(json.loads(line))
    assert [g["message"]["content"] for g in got] == ["a", " b"]
    assert ollama_double.wait_until(lambda: ollama_double.last_generation.finished)
    gen = ollama_double.last_generation
    assert gen.dropped and not gen.client_disconnected and not gen.completed


def test_hold_after_pauses_the_stream_until_released(ollama_double, http):
    held = ollama_double.script(reply="a b c d e f", hold_after=2)
    with http.stream("POST", "/api/chat", json={"model": "llama3.2:3b", "messages": USER}) as r:
        lines = r.iter_lines()
        got = [json.loads(next(lines)) for _ in range(2)]
        assert ollama_double.wait_until(lambda: ollama_double.last_generation.held, 60)
        gen = ollama_double.last_generation
        assert gen.tokens_sent == 2 and not gen.completed
        ollama_double.release(held)
        got += [json.loads(line) for line in lines]
    assert "".join(g["message"]["content"] for g in got) == "a b c d e f"
    assert got[-1]["done"] is True
    assert not gen.held and gen.completed


def test_client_hangup_is_detected_and_generation_stops(ollama_double, http):
    ollama_double.script(tokens=["x "] * 50, token_delay=0.4)
    with http.stream("POST", "/api/chat", json={"model": "llama3.2:3b", "messages": USER}) as r:
        next(r.iter_lines())
        hung_up_at = time.monotonic()
    # Leaving the block closed the connection after one token. The double notices at once,
    # while it waits for the next token, not at its next write 0.4 s later.
    assert ollama_double.wait_until(lambda: ollama_double.last_generation.finished, 2)
    assert ollama_double.last_generation.ended_at - hung_up_at < 0.25
    gen = ollama_double.last_generation
    assert gen.client_disconnected and not gen.completed and gen.tokens_sent == 1
    assert ollama_double.in_flight == 0


async def test_slots_queue_and_503_when_queue_full(ollama_double):
    ollama_double.configure(num_parallel=1, max_queue=2, reply="a b c", token_delay=0.01)
    ollama_double.script(tokens=["x"] * 10, token_delay=0.04)  # the first one takes 0.4 s
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    async with httpx.AsyncClient(base_url=ollama_double.url, timeout=10) as client:
        first = asyncio.create_task(client.post("/api/chat", json=body))
        await ollama_double.await_until(lambda: ollama_double.in_flight == 1)
        queued = [asyncio.create_task(client.post("/api/chat", json=body)) for _ in range(2)]
        await ollama_double.await_until(lambda: ollama_double.queued == 2)
        rejected = await client.post("/api/chat", json=body)
        results = [await t for t in [first, *queued]]
    assert rejected.status_code == 503
    assert rejected.json() == {"error": BUSY_MESSAGE}
    assert [r.status_code for r in results] == [200, 200, 200]
    assert ollama_double.max_in_flight == 1
    assert ollama_double.max_queued == 2 and ollama_double.busy_rejections == 1
    gens = ollama_double.generations
    assert [g.queued for g in gens] == [False, True, True]
    # FIFO: each queued request started after the previous one ended.
    assert gens[1].started_at >= gens[0].ended_at and gens[2].started_at >= gens[1].ended_at


async def test_num_parallel_bounds_in_flight(ollama_double):
    ollama_double.configure(num_parallel=3, reply="a b c d", token_delay=0.02)
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    async with httpx.AsyncClient(base_url=ollama_double.url, timeout=10) as client:
        results = await asyncio.gather(*(client.post("/api/chat", json=body) for _ in range(8)))
    assert all(r.status_code == 200 for r in results)
    assert ollama_double.max_in_flight == 3


async def test_client_leaving_the_queue_is_recorded(ollama_double):
    ollama_double.script(tokens=["x"] * 15, token_delay=0.02)
    body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
    async with httpx.AsyncClient(base_url=ollama_double.url, timeout=10) as client:
        first = asyncio.create_task(client.post("/api/chat", json=body))
        await ollama_double.await_until(lambda: ollama_double.in_flight == 1)
        waiting = asyncio.create_task(client.post("/api/chat", json=body))
        await ollama_double.await_until(lambda: ollama_double.queued == 1)
        waiting.cancel()
        await ollama_double.await_until(lambda: ollama_double.queued == 0)
        await first
    gen = ollama_double.generations[1]
    assert gen.status == 499 and gen.client_disconnected and gen.tokens_sent == 0


def test_tags_and_show(http):
    models = http.get("/api/tags").json()["models"]
    names = [m["name"] for m in models]
    assert {"llama3.2:3b", "qwen2.5:0.5b", "llava:7b"} <= set(names)
    for m in models:
        assert set(m) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert RFC3339.match(m["modified_at"]) and re.fullmatch(r"[0-9a-f]{64}", m["digest"])
        assert set(m["details"]) == {
            "parent_model",
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        }
    show = http.post("/api/show", json={"model": "llava:7b"}).json()
    assert show["capabilities"] == ["completion", "vision"]
    assert show["model_info"]["llama.context_length"] == 32768
    assert {"modelfile", "parameters", "template", "details"} <= set(show)
    plain = http.post("/api/show", json={"model": "qwen2.5:0.5b"}).json()
    assert "vision" not in plain["capabilities"] and "completion" in plain["capabilities"]
    r = http.post("/api/show", json={"model": "ghost"})
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_pull_streams_progress_then_model_is_installed(ollama_double, http):
    assert "smollm2:135m" not in [m["name"] for m in http.get("/api/tags").json()["models"]]
    _, _, lines = read_stream(http, "/api/pull", {"model": "smollm2:135m"})
    statuses = [obj for _, obj in lines]
    assert statuses[0] == {"status": "pulling manifest"}
    downloads = [s for s in statuses if s["status"].startswith("downloading ")]
    assert downloads and all(s["status"] == f"downloading {s['digest']}" for s in downloads)
    assert "completed" not in downloads[0] and downloads[0]["total"] > 0
    assert any(s.get("completed") == s["total"] for s in downloads)
    assert [s["status"] for s in statuses[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert "smollm2:135m" in [m["name"] for m in http.get("/api/tags").json()["models"]]

    r = http.post("/api/pull", json={"model": "gemma3:1b", "stream": False})
    assert r.json() == {"status": "success"}
    _, _, lines = read_stream(http, "/api/pull", {"model": "no-such-model"})
    assert lines[-1][1] == {"error": "pull model manifest: file does not exist"}


def test_delete(http):
    assert http.request("DELETE", "/api/delete", json={"model": "qwen2.5:0.5b"}).status_code == 200
    r = http.request("DELETE", "/api/delete", json={"model": "qwen2.5:0.5b"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    assert "qwen2.5:0.5b" not in [m["name"] for m in http.get("/api/tags").json()["models"]]


def test_reset_forgets_scripts_records_and_models(ollama_double, http):
    ollama_double.script(reply="scripted", times=None)
    ollama_double.configure(token_delay=0.5)
    http.request("DELETE", "/api/delete", json={"model": "llava:7b"})
    ollama_double.reset()
    assert ollama_double.requests == [] and ollama_double.generations == []
    r = http.post("/api/chat", json={"model": "llava:7b", "messages": USER, "stream": False})
    assert r.status_code == 200 and r.json()["message"]["content"] != "scripted"
    assert r.json()["eval_duration"] < 0.5e9


def test_default_reply_is_derived_from_the_last_user_message(http):
    body = {"model": "llama3.2:3b", "stream": False}
    a = http.post("/api/chat", json=body | {"messages": USER}).json()["message"]["content"]
    b = http.post("/api/chat", json=body | {"messages": USER}).json()["message"]["content"]
    other = [{"role": "user", "content": "Something else"}]
    c = http.post("/api/chat", json=body | {"messages": other}).json()["message"]["content"]
    assert a == b and a != c and "Something else" in c


def test_context_manager_and_standalone_module():
    with OllamaDouble() as double:
        assert httpx.get(double.url + "/api/version").status_code == 200
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ollama_double", "--port", str(port), "--reply", "Hi there"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert "listening" in proc.stdout.readline()
        body = {"model": "llama3.2:3b", "messages": USER, "stream": False}
        r = httpx.post(f"http://127.0.0.1:{port}/api/chat", json=body)
        assert r.json()["message"]["content"] == "Hi there"
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
