"""GET /api/monitoring/throughput/: tokens/s, time to first token and queue wait aggregated by
model and by concurrency level, and per model over time. The arithmetic is checked against the
rows the test stores, recomputed here in plain Python."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from monitoring.selectors import requests as request_selectors
from tests.support.errors import assert_field_error

from .conftest import make_reply

pytestmark = pytest.mark.django_db

URL = "/api/monitoring/throughput/"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)  # a multiple of 60 s since the epoch
A, B = "llama3.2:3b", "qwen2.5:0.5b"

# (seconds after T0, model, tokens/s, TTFT s, queue wait s, in flight at start, eval_count)
ALICE_ROWS = [
    (10, A, 40.0, 0.2, 0.0, 1, 100),
    (70, A, 30.0, 0.5, 1.0, 2, 200),
    (80, A, 20.0, 0.9, 2.0, 2, 150),
    (20, B, 90.0, 0.1, 0.0, 1, 50),
    (130, B, 70.0, None, 0.5, 3, 60),
    (140, B, 55.0, 0.3, None, None, 40),
]
BOB_ROWS = [(30, A, 10.0, 2.0, 4.0, 2, 500)]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def window(**extra) -> dict:
    return {"since": at(0).isoformat(), "until": at(300).isoformat(), **extra}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def store(owner, rows):
    for t, model, tps, ttft, wait, level, tokens in rows:
        make_reply(
            owner,
            at(t),
            model=model,
            tokens_per_second=tps,
            time_to_first_token=ttft,
            queue_wait=wait,
            in_flight_at_start=level,
            eval_count=tokens,
        )


@pytest.fixture
def alice(make_user):
    return make_user("alice@example.com")


@pytest.fixture
def bob(make_user):
    return make_user("bob@example.com")


@pytest.fixture
def staff(make_user):
    return make_user("ops@example.com", is_staff=True)


@pytest.fixture
def history(alice, bob):
    store(alice, ALICE_ROWS)
    store(bob, BOB_ROWS)
    # Not measured: a failure and a cancelled reply (no timings), and one outside the window.
    make_reply(alice, at(100), model=A, status="failed")
    make_reply(alice, at(110), model=B, status="cancelled")
    make_reply(alice, at(400), model=A, tokens_per_second=999.0)


def stats(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"count": 0, "avg": None, "min": None, "max": None, "p50": None}
    return {
        "count": len(values),
        "avg": pytest.approx(statistics.fmean(values), abs=1e-4),
        "min": pytest.approx(min(values)),
        "max": pytest.approx(max(values)),
        "p50": pytest.approx(statistics.median(values), abs=1e-4),
    }


def group(rows) -> dict:
    return {
        "requests": len(rows),
        "eval_tokens": sum(r[6] for r in rows),
        "tokens_per_second": stats(r[2] for r in rows),
        "time_to_first_token_seconds": stats(r[3] for r in rows),
        "queue_wait_seconds": stats(r[4] for r in rows),
    }


def test_aggregates_match_the_rows(alice, history):
    response = client_for(alice).get(URL, window(resolution=60))
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["user"] == alice.pk  # a user's own requests only: Bob's are not in it
    assert data["resolution"] == 60
    assert data["notes"] == []

    assert data["overall"] == group(ALICE_ROWS)
    by_model = {entry["model"]: entry for entry in data["by_model"]}
    assert list(by_model) == [A, B]
    for model in (A, B):
        rows = [r for r in ALICE_ROWS if r[1] == model]
        entry = dict(by_model[model])
        statuses = entry.pop("statuses")
        entry.pop("model")
        assert entry == group(rows), model
        assert statuses["complete"] == len(rows)
    assert by_model[A]["statuses"] == {"complete": 3, "failed": 1}
    assert by_model[B]["statuses"] == {"complete": 3, "cancelled": 1}

    levels = [entry["in_flight_at_start"] for entry in data["by_concurrency"]]
    assert levels == [1, 2, 3, None]  # unknown level last
    for entry in data["by_concurrency"]:
        entry = dict(entry)
        level = entry.pop("in_flight_at_start")
        assert entry == group([r for r in ALICE_ROWS if r[5] == level]), level

    # Spot checks by hand, so a shared mistake in the helpers above cannot hide.
    level_two = data["by_concurrency"][1]
    assert level_two["tokens_per_second"]["avg"] == 25.0
    assert level_two["tokens_per_second"]["p50"] == 25.0
    assert level_two["queue_wait_seconds"]["max"] == 2.0
    assert data["overall"]["tokens_per_second"]["p50"] == 47.5
    assert data["overall"]["time_to_first_token_seconds"]["count"] == 5


def test_series_per_model_in_epoch_buckets(alice, history):
    data = client_for(alice).get(URL, window(resolution=60)).json()
    series = {entry["model"]: entry["points"] for entry in data["series"]}
    assert series[A] == [
        {
            "t": "2025-03-01T12:00:00Z",
            "requests": 1,
            "eval_tokens": 100,
            "tokens_per_second": 40.0,
            "time_to_first_token_seconds": 0.2,
            "queue_wait_seconds": 0.0,
        },
        {
            "t": "2025-03-01T12:01:00Z",
            "requests": 2,
            "eval_tokens": 350,
            "tokens_per_second": 25.0,
            "time_to_first_token_seconds": 0.7,
            "queue_wait_seconds": 1.5,
        },
    ]
    assert [(p["t"], p["requests"], p["tokens_per_second"]) for p in series[B]] == [
        ("2025-03-01T12:00:00Z", 1, 90.0),
        ("2025-03-01T12:02:00Z", 2, 62.5),
    ]
    # A bucket whose replies all lack a figure has a null average, not 0.
    wider = client_for(alice).get(URL, window(resolution=60, model=B)).json()
    assert [p["time_to_first_token_seconds"] for p in wider["series"][0]["points"]] == [0.1, 0.3]


def test_staff_see_everyone_and_can_narrow(staff, alice, bob, history):
    everyone = client_for(staff).get(URL, window()).json()
    assert everyone["user"] is None
    assert everyone["overall"] == group(ALICE_ROWS + BOB_ROWS)
    only_bob = client_for(staff).get(URL, window(user=bob.email)).json()
    assert only_bob["user"] == bob.pk
    assert only_bob["overall"] == group(BOB_ROWS)
    assert client_for(bob).get(URL, window(user=alice.pk)).status_code == 403


def test_model_and_host_filters(alice, history):
    data = client_for(alice).get(URL, window(model=B)).json()
    assert data["overall"] == group([r for r in ALICE_ROWS if r[1] == B])
    assert [e["model"] for e in data["by_model"]] == [B]
    data = client_for(alice).get(URL, window(host="http://elsewhere:11434")).json()
    assert data["overall"]["requests"] == 0
    assert data["overall"]["tokens_per_second"] == stats([])
    assert data["by_model"] == [] and data["by_concurrency"] == [] and data["series"] == []


def test_a_model_with_only_failures_is_listed(alice):
    make_reply(alice, at(5), model="broken:1b", status="failed")
    data = client_for(alice).get(URL, window()).json()
    assert data["by_model"] == [
        {
            "model": "broken:1b",
            "requests": 0,
            "eval_tokens": 0,
            "tokens_per_second": stats([]),
            "time_to_first_token_seconds": stats([]),
            "queue_wait_seconds": stats([]),
            "statuses": {"failed": 1},
        }
    ]


def test_medians_are_left_out_beyond_the_bound(alice, history, monkeypatch):
    monkeypatch.setattr(request_selectors, "P50_MAX_ROWS", 5)
    data = client_for(alice).get(URL, window()).json()
    assert data["overall"]["tokens_per_second"]["p50"] is None
    assert data["overall"]["tokens_per_second"]["avg"] == pytest.approx(50.833333, abs=1e-4)
    assert data["by_model"][0]["tokens_per_second"]["p50"] is None
    assert data["notes"] == [
        "p50 omitted: 6 completed requests in the window, more than 5; narrow the window "
        "(or filter by model or user) to get medians."
    ]


def test_default_window_is_the_last_hour_and_default_resolution(alice):
    now = timezone.now()
    make_reply(alice, now - timedelta(minutes=10), tokens_per_second=10.0)
    make_reply(alice, now - timedelta(minutes=70), tokens_per_second=99.0)
    data = client_for(alice).get(URL).json()
    assert data["overall"]["requests"] == 1
    assert data["resolution"] == 60
    since = datetime.fromisoformat(data["since"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(data["until"].replace("Z", "+00:00"))
    assert until - since == timedelta(hours=1)
    week = {"since": (now - timedelta(days=7)).isoformat(), "until": now.isoformat()}
    week = client_for(alice).get(URL, week).json()
    assert week["resolution"] == 5040  # 7 days / 120 points


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"since": "2025-03-01T12:00:00Z", "until": "2025-03-01T12:00:00Z"},
            "since",
            "since must be earlier than until.",
        ),
        (
            {"since": "2025-01-01T00:00:00Z", "until": "2025-03-01T00:00:00Z"},
            "since",
            "The window from since to until is 59 days (5097600 s); the maximum is 31 days "
            "(2678400 s).",
        ),
        (
            {"since": "2025-03-01T00:00:00Z", "until": "2025-03-02T00:00:00Z", "resolution": 10},
            "resolution",
            "A 86400 s window at 10 s resolution is 8640 points; the maximum is 2000: use "
            "resolution=44 or more, or a shorter window.",
        ),
        ({"resolution": 0}, "resolution", "Ensure this value is greater than or equal to 1."),
        ({"user": "x"}, "user", "Give a user id (a positive integer) or an email address."),
    ],
)
def test_validation_messages(alice, params, field, message):
    response = client_for(alice).get(URL, params)
    assert response.status_code == 400
    assert_field_error(response, field, message)


OUT_OF_RANGE_MESSAGE = "Give a date from 1970-01-01 to 9998-12-31."


def assert_out_of_range(response, fields: list[str]) -> None:
    """A 400 whose field errors are the out-of-range message on each of `fields`."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_input"
    assert body["detail"] == f"{fields[0]}: {OUT_OF_RANGE_MESSAGE}"
    assert {key: value for key, value in body.items() if key not in ("code", "detail")} == {
        field: [OUT_OF_RANGE_MESSAGE] for field in fields
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"until": "0001-01-01T00:00:00Z"}, "until"),  # an hour before it overflowed (a 500)
        ({"since": "0001-01-01T00:00:00Z", "until": "0001-01-01T00:30:00Z"}, "since until"),
        ({"since": "9999-12-31T22:00:00Z", "until": "9999-12-31T23:59:59Z"}, "since until"),
    ],
)
def test_dates_out_of_range_are_a_400(alice, params, field):
    response = client_for(alice).get(URL, params)
    assert_out_of_range(response, field.split())
