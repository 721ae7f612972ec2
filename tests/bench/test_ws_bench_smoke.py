"""The WebSocket benchmark runs end to end at tiny settings, and its checks catch what they must.

Correctness only: every socket receives every token once, in order (the benchmark checks the
offsets of every frame), the figures are there and positive and the ratios are computed.
Nothing here looks at how fast anything was (tests never assert a wall-clock time; the
benchmark prints its figures).
"""

from __future__ import annotations

import json
import resource

import pytest

from tests.bench import ws_stream

pytestmark = pytest.mark.integration

TOKENS = 5
LEVELS = [1, 3]
SAMPLES = 2  # sockets per level at least: 2 rounds of 1, 1 round of 3
IDLE = 10

POSITIVE = ("ttft_p50_ms", "ttft_p95_ms", "aggregate_tps", "total_p50_ms", "wall_seconds")


def check_summary(summary: dict, sockets: int, *, gateway: bool) -> None:
    label = summary["label"]
    assert summary["errors"] == [], label
    assert summary["sockets"] == sockets, label
    assert summary["completed"] == sockets, label
    assert summary["failed"] == 0, label
    assert summary["tokens_received"] == sockets * TOKENS, label
    for name in POSITIVE:
        assert summary[name] is not None and summary[name] > 0, (label, name)
    assert summary["frames_p50"] >= 1, label
    # A rate needs two frames; the gateway coalesces tokens, so a reply may come in one.
    if summary["single_frame"] < summary["completed"]:
        assert summary["stream_tps_p50"] > 0, label
    else:
        assert summary["stream_tps_p50"] is None, label
    assert summary["client_cpu_seconds"] >= 0, label
    if gateway:
        assert summary["accepted_p50_ms"] > 0, label
        assert summary["started_p50_ms"] >= summary["accepted_p50_ms"], label
        assert summary["ttft_p50_ms"] >= summary["started_p50_ms"], label
        assert summary["server_ttft_p50_ms"] > 0, label
        assert summary["connect_p50_ms"] > 0, label
        assert summary["server_cpu_seconds"] is not None, label
        assert summary["server_rss_mb"] > 0, label
        assert summary["double_cpu_seconds"] is not None, label  # the double is a process
    else:
        assert summary["single_frame"] == 0, label  # the double sends a chunk per token
        assert summary["stream_tps_p50"] > 0, label


def test_ws_benchmark_runs_at_tiny_settings(tmp_path, capsys):
    out = tmp_path / "ws.json"
    code = ws_stream.main(
        [
            "--concurrency",
            ",".join(map(str, LEVELS)),
            "--tokens",
            str(TOKENS),
            "--token-delay",
            "0.02",  # the reply spans a few coalescing windows: usually several frames
            "--idle",
            str(IDLE),
            "--samples",
            str(SAMPLES),
            "--warmup",
            "1",
            "--settle",
            "0.2",
            "--json",
            str(out),
        ]
    )
    assert code == 0

    result = json.loads(out.read_text())
    assert result["config"]["double"] == "process"
    assert [level["concurrency"] for level in result["levels"]] == LEVELS
    for level in result["levels"]:
        sockets = level["concurrency"] * level["rounds"]
        assert sockets >= SAMPLES
        check_summary(level["direct"], sockets, gateway=False)
        check_summary(level["gateway"], sockets, gateway=True)
        ratios = level["ratios"]
        for name in ("ttft_p50_ms", "ttft_p95_ms", "aggregate_tps", "total_p50_ms"):
            assert ratios[name] is not None and ratios[name] > 0, name
        assert (ratios["stream_tps_p50"] is None) == (level["gateway"]["stream_tps_p50"] is None)

    idle = result["idle"]
    assert idle["sockets"] == idle["opened"] == IDLE
    assert idle["errors"] == []
    assert idle["fds_open"] >= idle["fds_before"] + IDLE  # they were all open at once
    for name in ("rss_before_mb", "rss_open_mb", "rss_closed_mb", "rss_reopen_mb"):
        assert idle[name] > 0, name
    assert idle["kb_per_socket"] is not None

    printed = capsys.readouterr().out
    for level in LEVELS:
        assert f"== concurrency {level}:" in printed
    assert "gw/direct" in printed
    assert f"== {IDLE} idle sockets" in printed
    assert "== ratios gateway/direct" in printed
    assert result["report"] in printed


# --------------------------------------------------------------------------- the checks


REPLY = ws_stream.Reply(ws_stream.reply_tokens(4))  # " w0 w1 w2 w3"
CONVERSATION = "c0ffee00-0000-4000-8000-000000000000"


def frames(*tokens: tuple[int, str], eval_count: int = 4) -> list[dict]:
    out = [
        {"type": "chat.accepted", "conversation": CONVERSATION, "user_message": 1},
        {"type": "chat.started", "conversation": CONVERSATION, "message": 2},
    ]
    out += [
        {
            "type": "chat.token",
            "conversation": CONVERSATION,
            "message": 2,
            "offset": offset,
            "content": text,
        }
        for offset, text in tokens
    ]
    out.append(
        {
            "type": "chat.done",
            "conversation": CONVERSATION,
            "message": 2,
            "metrics": {"eval_count": eval_count, "time_to_first_token_seconds": 0.01},
        }
    )
    return out


def run_check(all_frames: list[dict]) -> ws_stream.Sample:
    check = ws_stream.SocketCheck(REPLY)
    for frame in all_frames:
        check.frame(frame)
    return check.result(connect_seconds=0.001)


def failure(all_frames: list[dict]) -> str:
    """The check's error for frames that must fail it."""
    sample = run_check(all_frames)
    assert not sample.ok and sample.error is not None, sample
    return sample.error


def test_reply_tokens_round_trip_through_the_doubles_tokenizer():
    from tests.ollama_double import tokenize

    tokens = ws_stream.reply_tokens(100)
    assert tokenize("".join(tokens)) == tokens
    assert REPLY.text == " w0 w1 w2 w3"
    assert [REPLY.tokens_within(n) for n in (0, 2, 3, 5, 6, 12)] == [0, 0, 1, 1, 2, 4]


def test_a_complete_reply_in_several_frames():
    sample = run_check(frames((0, " w0"), (3, " w1 w2"), (9, " w3")))
    assert sample.ok, sample.error
    assert (sample.tokens, sample.chars, sample.frames) == (4, 12, 3)
    assert sample.tokens_per_second is not None and sample.tokens_per_second > 0
    assert sample.ttft is not None and sample.accepted is not None and sample.started is not None
    assert sample.server_ttft == 0.01


def test_a_reply_in_one_frame_has_no_rate():
    sample = run_check(frames((0, " w0 w1 w2 w3")))
    assert sample.ok, sample.error
    assert sample.tokens_per_second is None


@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        (((0, " w0"), (6, " w2 w3")), "a gap"),  # " w1" lost
        (((0, " w0 w1"), (3, " w1 w2 w3")), "an overlap"),  # " w1" twice
        (((0, " w0"), (0, " w0"), (3, " w1 w2 w3")), "an overlap"),  # a frame repeated
        (((0, " w0 w1"),), "wrong text"),  # ends early
    ],
)
def test_loss_and_duplication_are_caught(tokens, error):
    found = failure(frames(*tokens))
    assert found.startswith(error), found


def test_other_failures_are_caught():
    assert "eval_count" in failure(frames((0, " w0 w1 w2 w3"), eval_count=3))
    no_done = frames((0, " w0 w1 w2 w3"))[:-1]
    assert "without chat.done" in failure(no_done)
    foreign = frames((0, " w0 w1 w2 w3"))
    foreign.insert(3, {**foreign[2], "conversation": "another"})
    assert "another conversation" in failure(foreign)
    failed = [*frames((0, " w0"))[:-1], {"type": "chat.error", "code": "queue_full"}]
    assert "queue_full" in failure(failed)


def test_open_files_limit_is_raised_up_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        now_soft, now_hard = ws_stream.raise_open_files_limit(soft + 1)
        assert now_hard == hard
        assert now_soft == soft + 1 or (now_soft == soft == hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_rounds_per_level():
    config = ws_stream.WsBenchConfig()
    assert [config.rounds_at(c) for c in (1, 3, 100, 500)] == [20, 7, 1, 1]
