"""The chat stream benchmark runs end to end at tiny settings.

Correctness only: every stream receives every token, the figures are there and positive and
the ratios are computed. Nothing here looks at how fast anything was (tests never assert a
wall-clock time, see README, `make test-under-load`; the benchmark prints its figures).
"""

from __future__ import annotations

import json

import pytest

from tests.bench import chat_stream

pytestmark = pytest.mark.integration

TOKENS = 5
REQUESTS = 4

POSITIVE = (
    "ttft_p50_ms",
    "ttft_p95_ms",
    "stream_tps_p50",
    "stream_tps_mean",
    "aggregate_tps",
    "total_p50_ms",
    "wall_seconds",
)


def check_summary(summary: dict, *, gateway: bool) -> None:
    label = summary["label"]
    assert summary["errors"] == [], label
    assert summary["requests"] == REQUESTS, label
    assert summary["completed"] == REQUESTS, label
    assert summary["failed"] == 0, label
    assert summary["tokens_received"] == REQUESTS * TOKENS, label
    for name in POSITIVE:
        assert summary[name] is not None and summary[name] > 0, (label, name)
    if gateway:
        assert summary["accepted_p50_ms"] > 0, label
        assert summary["started_p50_ms"] >= summary["accepted_p50_ms"], label
        assert summary["server_cpu_seconds"] is not None, label


def test_benchmark_runs_at_tiny_settings(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = chat_stream.main(
        [
            "--concurrency",
            "1,2",
            "--tokens",
            str(TOKENS),
            "--requests",
            str(REQUESTS),
            "--warmup",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0

    result = json.loads(out.read_text())
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        check_summary(level["direct"], gateway=False)
        check_summary(level["gateway"], gateway=True)
        for value in level["ratios"].values():
            assert value is not None and value > 0
    one, two = result["levels"]
    # The run at the default gate (OLLAMA_MAX_CONCURRENCY=1) only where it can differ.
    assert one["gateway_gate_one"] is None
    check_summary(two["gateway_gate_one"], gateway=True)
    assert all(v is not None and v > 0 for v in two["ratios_gate_one"].values())

    printed = capsys.readouterr().out
    assert "== concurrency 1:" in printed
    assert "== concurrency 2:" in printed
    assert "gw/direct" in printed and "gw1/direct" in printed
    assert "== ratios gateway/direct" in printed
    assert result["report"] in printed


def test_percentile_and_ratio():
    assert chat_stream.percentile([], 0.5) is None
    assert chat_stream.percentile([3.0], 0.95) == 3.0
    assert chat_stream.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert chat_stream.percentile([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0
    assert chat_stream.ratio(2.0, 4.0) == 0.5
    assert chat_stream.ratio(None, 4.0) is None
    assert chat_stream.ratio(1.0, 0.0) is None


def test_requests_per_level():
    config = chat_stream.BenchConfig()
    assert config.requests_at(1) == 20
    assert config.requests_at(50) == 150
    assert chat_stream.BenchConfig(requests=10).requests_at(50) == 50
