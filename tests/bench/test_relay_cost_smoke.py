"""The relay-cost benchmark (issue 16) runs end to end at tiny settings.

Structure only: every target relays every token of every stream, in both modes, and the
tables are printed. Never a duration or a CPU figure (tests never assert on time; the
benchmark prints its figures). The Redis mode uses the suite's Redis, on a database of its
own, flushed before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.bench import relay_cost
from tests.support.redis_db import flushed, redis_test_url

pytestmark = pytest.mark.integration

TOKENS = 5
STREAMS = [1, 2]
WS_STREAMS = 3
SEQUENTIAL = 2
REDIS_URL = redis_test_url(9)


@pytest.fixture
def redis_url():
    yield from flushed(REDIS_URL)


def test_relay_cost_runs_at_tiny_settings(tmp_path: Path, redis_url, capsys):
    out, table = tmp_path / "relay.json", tmp_path / "relay.md"
    code = relay_cost.main(
        [
            *("--streams", ",".join(map(str, STREAMS)), "--ws-streams", str(WS_STREAMS)),
            *("--tokens", str(TOKENS), "--sequential", str(SEQUENTIAL)),
            *("--warmup", "1", "--warm-round", "0", "--redis-url", redis_url),
            *("--json", str(out), "--markdown", str(table)),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    rows = {(r["mode"], r["target"], r["streams"]): r for r in result["rows"]}

    expected = {("-", "direct", n) for n in STREAMS} | {("-", "peer", n) for n in STREAMS}
    for mode in ("embedded", "redis"):
        expected |= {(mode, target, n) for target in ("sse", "ws", "ollama") for n in STREAMS}
        expected.add((mode, "ws", WS_STREAMS))
    assert set(rows) == expected

    for key, row in rows.items():
        requests = SEQUENTIAL if row["streams"] == 1 else row["streams"]
        assert row["errors"] == [], key
        assert (row["requests"], row["completed"]) == (requests, requests), key
        assert row["tokens"] == requests * TOKENS, key  # no token lost, none counted twice
        assert row["cpu_seconds"] is not None, key  # the serving process was measured
        assert row["ttft_p50_ms"] is not None, key
    goals = {g["goal"] for g in result["goals"]}
    assert any("WebSocket streams on one Daphne" in g for g in goals)
    assert any("TTFT p50" in g for g in goals)

    printed = capsys.readouterr().out
    assert "| mode | target | streams |" in printed
    assert "| goal | met | this run |" in printed
    assert table.read_text().strip() == result["markdown"].strip()


def test_cpu_of_this_process_is_read_from_proc():
    before = relay_cost.process_cpu(os.getpid())
    sum(i * i for i in range(300_000))  # some CPU
    after = relay_cost.process_cpu(os.getpid())
    assert before is not None and after is not None and after >= before
    assert relay_cost.process_cpu(None) is None
