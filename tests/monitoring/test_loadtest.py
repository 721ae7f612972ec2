"""manage.py loadtest: real concurrent chats through POST /api/chat/stream/ of a Daphne process
on the test database, relaying the Ollama double; and its arithmetic and verdict on made-up
figures. Nothing here asserts how fast anything was: only that the figures are there, positive
and consistent."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from chat.models import Conversation, Message
from monitoring.loadtest.driver import (
    Auth,
    LoadTestConfig,
    LoadTestResult,
    RequestResult,
    token_expiry,
)
from monitoring.loadtest.report import format_table, write_csv, write_html
from monitoring.loadtest.verdict import LevelSummary, hints_for, summarize, verdict
from tests.support.live import DaphneServer, bearer, set_server_password

MODEL = "llama3.2:3b"


@pytest.fixture(scope="module")
def loadtest_server(django_db_setup, ollama_double_server):
    """The app with tight per-user chat limits (the test user is exempt by permission) and a
    gate wide enough for the levels."""
    with DaphneServer(
        "loadtest-daphne",
        OLLAMA_URL=ollama_double_server.url,
        OLLAMA_DEFAULT_MODEL=MODEL,
        OLLAMA_MAX_CONCURRENCY="4",
        CHAT_MESSAGES_PER_MINUTE="1",
        CHAT_MAX_GENERATIONS_PER_USER="1",
    ) as server:
        yield server


@pytest.fixture
def server(transactional_db, loadtest_server, ollama_double, user):
    ollama_double.configure(token_delay=0.002, num_parallel=2)
    user.user_permissions.add(Permission.objects.get(codename="chat_without_limits"))
    return loadtest_server


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def positive(row: dict[str, str], name: str) -> float:
    value = float(row[name])
    assert value > 0, (name, row)
    return value


@pytest.mark.integration
def test_loadtest_against_the_double(server, user, tmp_path, monkeypatch):
    monkeypatch.delenv("LOADTEST_PASSWORD", raising=False)
    monkeypatch.delenv("LOADTEST_TOKEN", raising=False)
    out = io.StringIO()
    call_command(
        "loadtest",
        model=MODEL,
        concurrency="1,2",
        requests=4,
        url=server.url,
        email=user.email,  # no password: a token minted with the test's (= the server's) key
        out=str(tmp_path),
        max_tokens=8,
        stdout=out,
    )
    printed = out.getvalue()
    assert "No LOADTEST_PASSWORD: minted a 2-hour access token" in printed
    assert "rate_limited" not in printed and "too_many_generations" not in printed
    assert "Verdict:" in printed
    assert "agg. tok/s" in printed and "How the verdict is reached" in printed

    (csv_path,) = tmp_path.glob("loadtest-*.csv")
    (html_path,) = tmp_path.glob("loadtest-*.html")
    assert csv_path.stem.removeprefix("loadtest-") == html_path.stem.removeprefix("loadtest-")
    rows = read_csv(csv_path)
    assert [(r["level"], r["index"]) for r in rows] == [
        ("1", "1"),
        ("1", "2"),
        ("1", "3"),
        ("1", "4"),
        ("2", "1"),
        ("2", "2"),
        ("2", "3"),
        ("2", "4"),
    ]
    for row in rows:
        assert row["ok"] == "True" and row["error"] == "", row
        assert row["model"] == MODEL
        assert row["http_status"] == "200"
        assert int(row["eval_count"]) == 8  # max_tokens reached the double as num_predict
        for name in (
            "tokens_per_second",
            "level_aggregate_tokens_per_second",
            "level_wall_seconds",
            "wall_seconds",
            "client_ttft_seconds",
            "time_to_first_token_seconds",
            "total_duration_seconds",
        ):
            positive(row, name)
        assert float(row["queue_wait_seconds"]) >= 0
        assert int(row["in_flight_at_start"]) >= 1
        assert float(row["load_duration_seconds"]) >= 0
        assert row["ram_used_mb_delta"] != ""  # real psutil on both sides
        if row["gpu_count"] == "0":  # no NVIDIA GPU here: the GPU columns stay empty
            assert row["gpu_memory_used_mb_before"] == row["gpu_memory_used_mb_delta"] == ""
        message = Message.objects.get(pk=int(row["message"]))
        assert str(message.conversation_id) == row["conversation"]
        assert message.conversation.owner == user
        assert message.eval_count == 8
    # The level's aggregate is all its tokens over its wall time, repeated on each of its rows.
    for level in ("1", "2"):
        level_rows = [r for r in rows if r["level"] == level]
        wall = positive(level_rows[0], "level_wall_seconds")
        tokens = sum(int(r["eval_count"]) for r in level_rows)
        assert float(level_rows[0]["level_aggregate_tokens_per_second"]) == pytest.approx(
            tokens / wall, rel=1e-4
        )
    assert Conversation.objects.filter(owner=user, title__startswith="[loadtest").count() == 9
    # Marked as the load test's: out of the conversation list unless asked for.
    assert set(Conversation.objects.filter(owner=user).values_list("source", flat=True)) == {
        "loadtest"
    }

    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 2
    assert "Tokens/s: per request and aggregate" in page
    assert "Latency: time to first token and queue wait" in page
    assert "Verdict:" in page
    for external in ("<script", "<link", "src=", "@import", "url("):
        assert external not in page  # self-contained
    assert "https://" not in page


@pytest.mark.integration
def test_password_login_one_level_and_cleanup(server, user, tmp_path, monkeypatch):
    set_server_password(user, "load test password")  # the server hashes with PBKDF2
    monkeypatch.setenv("LOADTEST_PASSWORD", "load test password")
    out = io.StringIO()
    call_command(
        "loadtest",
        model=MODEL,
        concurrency="2",
        requests=2,
        url=server.url,
        email=user.email,
        out=str(tmp_path),
        max_tokens=4,
        warmup=0,
        cleanup=True,
        stdout=out,
    )
    printed = out.getvalue()
    assert "minted" not in printed
    assert "Verdict: not enough data" in printed
    assert "deleted the 2 conversations of the run" in printed
    assert len(read_csv(next(tmp_path.glob("loadtest-*.csv")))) == 2
    assert not Conversation.objects.filter(owner=user).exists()


@pytest.mark.integration
def test_a_refused_token_and_a_missing_model_are_clear_errors(server, user, tmp_path):
    with pytest.raises(CommandError, match=r"The server refused the token \(HTTP 401"):
        call_command("loadtest", model=MODEL, url=server.url, token="not.a.jwt", out=str(tmp_path))
    token = bearer(user)["Authorization"].removeprefix("Bearer ")
    with pytest.raises(CommandError, match=r"The warm-up request failed: HTTP 404 model_not_found"):
        call_command(
            "loadtest",
            model="missing:7b",
            url=server.url,
            token=token,
            out=str(tmp_path),
            stdout=io.StringIO(),
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.django_db
def test_argument_errors(tmp_path, monkeypatch, user):
    monkeypatch.delenv("LOADTEST_TOKEN", raising=False)
    monkeypatch.delenv("LOADTEST_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="Authenticate with --token"):
        call_command("loadtest", model=MODEL)
    with pytest.raises(CommandError, match="not both"):
        call_command("loadtest", model=MODEL, token="t", email="a@b.c")
    with pytest.raises(CommandError, match="not a list of integers"):
        call_command("loadtest", model=MODEL, token="t", concurrency="1,x")
    with pytest.raises(CommandError, match="levels must be positive"):
        call_command("loadtest", model=MODEL, token="t", concurrency="0,2")
    with pytest.raises(CommandError, match=r"No user with email nobody@example\.com"):
        call_command("loadtest", model=MODEL, email="nobody@example.com")
    # A user under the per-user limits is warned about before the run.
    errors = io.StringIO()
    with pytest.raises(CommandError, match=r"Cannot reach http://127\.0\.0\.1:9"):
        call_command(
            "loadtest", model=MODEL, email=user.email, url="http://127.0.0.1:9", stderr=errors
        )
    assert "is subject to the per-user chat limits" in errors.getvalue()
    user.is_active = False
    user.save()
    with pytest.raises(CommandError, match="inactive"):
        call_command("loadtest", model=MODEL, email=user.email)
    with pytest.raises(CommandError, match=r"Cannot reach http://127\.0\.0\.1:9"):
        call_command(
            "loadtest", model=MODEL, token="t", url="http://127.0.0.1:9", out=str(tmp_path)
        )


# --------------------------------------------------------------------------- arithmetic


METRICS = {
    "type": "metrics",
    "message": 7,
    "tokens_per_second": 41.5,
    "eval_count": 120,
    "prompt_eval_count": 30,
    "time_to_first_token_seconds": 0.2,
    "queue_wait_seconds": 0.5,
    "in_flight_at_start": 2,
    "load_duration_seconds": 1.5,
    "total_duration_seconds": 3.5,
    "gpu_usage_before": [
        {
            "index": 0,
            "memory_used_mb": 1000.0,
            "memory_total_mb": 8000.0,
            "utilization_percent": 10,
        },
        {
            "index": 1,
            "memory_used_mb": 3000.0,
            "memory_total_mb": 8000.0,
            "utilization_percent": 30,
        },
    ],
    "gpu_usage_after": [
        {
            "index": 0,
            "memory_used_mb": 1500.0,
            "memory_total_mb": 8000.0,
            "utilization_percent": 90,
        },
        {
            "index": 1,
            "memory_used_mb": 3100.0,
            "memory_total_mb": 8000.0,
            "utilization_percent": 70,
        },
    ],
    "resource_delta": {
        "gpu": [{"utilization_percent_delta": 80.0}, {"utilization_percent_delta": 40.0}],
        "gpu_memory_used_mb_delta": 600.0,
        "ram_used_mb_delta": 12.5,
    },
}


def test_metrics_event_to_request_figures():
    result = RequestResult(level=2, index=1)
    result.take_metrics(METRICS)
    assert result.message == 7
    assert (result.tokens_per_second, result.eval_count, result.in_flight_at_start) == (
        41.5,
        120,
        2,
    )
    assert result.gpu_count == 2
    assert result.gpu_memory_used_mb_before == 4000.0
    assert result.gpu_memory_used_mb_after == 4600.0
    assert result.gpu_memory_total_mb == 16000.0
    assert result.gpu_utilization_percent_before == 20.0
    assert result.gpu_utilization_percent_after == 80.0
    assert result.gpu_utilization_percent_delta == 60.0
    assert result.gpu_memory_used_mb_delta == 600.0
    assert result.ram_used_mb_delta == 12.5
    assert result.reloaded  # load_duration 1.5 s > 0.5 s

    empty = RequestResult(level=1, index=1)
    empty.take_metrics({"gpu_usage_before": [], "gpu_usage_after": None, "resource_delta": None})
    assert empty.gpu_count == 0 and empty.gpu_memory_used_mb_before is None
    assert empty.gpu_utilization_percent_after is None and not empty.reloaded


def request(level, index, tps, tokens, **extra) -> RequestResult:
    values = {"ok": True, "tokens_per_second": tps, "eval_count": tokens} | extra
    return RequestResult(level=level, index=index, **values)


def test_level_summary():
    results = [
        request(2, 1, 30.0, 100, time_to_first_token_seconds=0.1, queue_wait_seconds=0.0),
        request(2, 2, 20.0, 50, time_to_first_token_seconds=0.3, in_flight_at_start=2),
        request(2, 3, 10.0, 50, load_duration_seconds=2.0, in_flight_at_start=1),
        RequestResult(level=2, index=4, error="HTTP 503 queue_full: busy", eval_count=999),
    ]
    summary = summarize(2, results, wall=4.0)
    assert (summary.requests, summary.ok, summary.failed) == (4, 3, 1)
    assert summary.eval_tokens == 200  # the failed request's figures do not count
    assert summary.aggregate_tokens_per_second == 50.0
    assert summary.per_request_tps_p50 == 20.0
    assert (summary.per_request_tps_min, summary.per_request_tps_max) == (10.0, 30.0)
    assert summary.ttft_p50 == pytest.approx(0.2)
    assert summary.max_in_flight == 2
    assert summary.reloads == 1
    assert summary.errors == ["HTTP 503 queue_full: busy"]
    assert summary.gpu_count == 0 and summary.gpu_memory_fraction_max is None


def level(concurrency, per, agg, **extra) -> LevelSummary:
    values = {
        "concurrency": concurrency,
        "requests": 4,
        "ok": 4,
        "failed": 0,
        "wall_seconds": 1.0,
        "eval_tokens": 100,
        "aggregate_tokens_per_second": agg,
        "per_request_tps_p50": per,
        "per_request_tps_min": per,
        "per_request_tps_max": per,
        "ttft_p50": 0.1 * concurrency,
        "ttft_p95": 0.2 * concurrency,
        "client_ttft_p50": 0.1,
        "queue_wait_p50": 0.0,
        "queue_wait_max": 0.0,
        "max_in_flight": concurrency,
        "reloads": 0,
        "gpu_count": 1,
        "gpu_memory_used_mb_max": 4000.0,
        "gpu_memory_total_mb": 8000.0,
        "gpu_memory_fraction_max": 0.5,
        "gpu_utilization_after_avg": 90.0,
        "gpu_memory_delta_avg": 10.0,
    }
    return LevelSummary(**(values | extra))


@pytest.mark.parametrize(
    ("levels", "start"),
    [
        ([level(1, 40, 40), level(4, 12, 45)], "Verdict: compute-bound"),
        ([level(1, 40, 40), level(4, 38, 140)], "Verdict: not saturated"),
        ([level(1, 40, 40), level(4, 28, 90)], "Verdict: not saturated"),
        ([level(1, 40, 40), level(4, 39, 41)], "Verdict: serialised by Ollama"),
        ([level(1, 40, 40), level(4, 20, 40, reloads=3)], "Verdict: VRAM-bound"),
        (
            [level(1, 40, 40), level(4, 20, 40, gpu_memory_fraction_max=0.97)],
            "Verdict: VRAM-bound",
        ),
        (
            [level(1, 40, 40), level(4, 40, 40, max_in_flight=1, queue_wait_p50=3.0)],
            "Verdict: gate-bound",
        ),
        ([level(1, 40, 40)], "Verdict: not enough data"),
        ([level(1, 40, 40), level(4, 0, 0, ok=0)], "Verdict: not enough data"),
    ],
)
def test_verdict(levels, start):
    lines = verdict(levels)
    assert lines[0].startswith(start), lines


def test_verdict_details():
    compute = verdict([level(1, 40, 40), level(4, 12, 45)])
    assert (
        "per-request tokens/s 40.0 -> 12.0 (x0.30), aggregate 40.0 -> 45.0 (x1.12)" in (compute[0])
    )
    assert compute[1] == "GPU memory peaked at 50% of the total."
    vram = verdict([level(1, 40, 40, reloads=1), level(2, 30, 60, reloads=2)])
    assert "the model was reloaded (load_duration > 0.5 s) at concurrency 2 (2x)" in vram[0]
    gate = verdict([level(1, 40, 40), level(8, 40, 40, max_in_flight=1)])
    assert "Set OLLAMA_MAX_CONCURRENCY (and OLLAMA_NUM_PARALLEL" in gate[0]
    assert "to at least 8" in gate[0]
    no_gpu = [
        level(c, 40 / c, 40, gpu_count=0, gpu_memory_fraction_max=None, gpu_memory_used_mb_max=None)
        for c in (1, 4)
    ]
    lines = verdict(no_gpu)
    assert lines[0].startswith("Verdict: compute-bound")
    assert lines[-1].startswith("No GPU figures in the metrics")


def test_verdict_finds_the_knee():
    serialised = verdict([level(1, 40, 40), level(2, 40, 80), level(4, 40, 82), level(8, 40, 80)])
    assert serialised[0].startswith(
        "Verdict: serialised by Ollama at concurrency 2 (aggregate x2.00 over concurrency 1): "
        "from concurrency 2 to 8:"
    )
    assert "it runs 2 generation(s) of this model at once" in serialised[0]
    compute = verdict([level(1, 40, 40), level(2, 35, 70), level(4, 18, 72)])
    assert compute[0].startswith("Verdict: compute-bound at concurrency 2")
    growing = verdict([level(1, 40, 40), level(2, 40, 80), level(4, 39, 150)])
    assert growing[0].startswith("Verdict: not saturated")


def test_verdict_leaves_out_the_levels_the_gate_queued():
    lines = verdict(
        [
            level(1, 40, 40),
            level(2, 40, 80),
            level(4, 40, 80, max_in_flight=2, queue_wait_p50=1.0),
            level(8, 40, 80, max_in_flight=2, queue_wait_p50=3.0),
        ]
    )
    assert lines[0].startswith("Verdict: not saturated: from concurrency 1 to 2:")
    assert lines[2].startswith("The gateway's gate admitted at most 2 generations at once")


def test_hints_name_the_settings():
    limited = [RequestResult(level=1, index=1, error_code="rate_limited")]
    assert "CHAT_MESSAGES_PER_MINUTE=0" in hints_for(limited)[0]
    assert "OLLAMA_MAX_QUEUE" in hints_for([RequestResult(1, 1, error_code="queue_full")])[0]
    assert hints_for([request(1, 1, 10.0, 5)]) == []


def test_token_expiry_reads_the_claim(user, db):
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    assert token_expiry(str(token)) == token["exp"]
    assert token_expiry("garbage") is None
    assert Auth("garbage").expires_in() is None


def test_files_from_made_up_figures(tmp_path):
    config = LoadTestConfig(url="http://gw", model="m:1b", concurrency=(1, 2), out_dir=tmp_path)
    result = LoadTestResult(config=config, started_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    result.requests = [
        request(1, 1, 40.0, 100, gpu_count=1, gpu_memory_used_mb_after=4000.0),
        request(2, 1, 25.0, 100, gpu_count=1, gpu_memory_used_mb_after=4100.0),
        request(2, 2, 24.0, 100, gpu_count=1, gpu_memory_used_mb_after=4100.0),
    ]
    result.levels = [level(1, 40.0, 40.0), level(2, 24.5, 49.0)]
    result.verdict = verdict(result.levels)
    csv_path = write_csv(result, tmp_path / "x.csv")
    rows = read_csv(csv_path)
    assert [r["level_aggregate_tokens_per_second"] for r in rows] == ["40.0", "49.0", "49.0"]
    assert rows[0]["run"] == "20250301-120000" and rows[0]["model"] == "m:1b"
    page = write_html(result, tmp_path / "x.html").read_text()
    assert page.count("<svg") == 3  # tokens/s, latency, GPU
    assert "GPU: memory used" in page
    assert page.count('class="dot"') == 3  # one dot per request on the tokens/s chart
    table = format_table(result.levels)
    assert table.splitlines()[0].split()[0] == "conc."
    assert "4,000 (50%)" in table
