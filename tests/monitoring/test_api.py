"""REST under /api/monitoring/: latest, series (bucketed in the database), summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tests.support.errors import assert_field_error

from .conftest import make_sample

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)  # a multiple of 60 s since the epoch


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def gpu(index=0, **figures):
    base = {"index": index, "uuid": f"GPU-{index}", "name": f"Card {index}"}
    return base | figures


@pytest.fixture
def history():
    """Two hosts; box-a has four samples over three minutes with one GPU and a model."""
    make_sample(
        "box-a",
        at(5),
        ram_used_mb=1000.0,
        cpu_percent=10.0,
        gpus=[gpu(memory_used_mb=100.0, utilization_percent=20, temperature_c=50)],
        models=[{"ollama_url": "http://o", "model": "llama3.2:3b", "size": 100, "size_vram": 60}],
    )
    make_sample(
        "box-a",
        at(35),
        ram_used_mb=2000.0,
        cpu_percent=30.0,
        gpus=[gpu(memory_used_mb=300.0, utilization_percent=40, temperature_c=60)],
    )
    make_sample(
        "box-a",
        at(70),
        ram_used_mb=4000.0,
        cpu_percent=None,
        gpus=[gpu(memory_used_mb=500.0, utilization_percent=90, temperature_c=70)],
    )
    make_sample("box-a", at(180), ram_used_mb=3000.0, cpu_percent=50.0)
    make_sample("box-b", at(10), ram_used_mb=8000.0, cpu_percent=5.0)


@pytest.mark.parametrize("path", ["latest/", "series/", "summary/"])
def test_unauthenticated_is_401(api_client, path):
    response = api_client.get(f"/api/monitoring/{path}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_session_login_works_too(api_client, user):
    api_client.force_login(user)
    assert api_client.get("/api/monitoring/latest/").status_code == 200


def test_series_buckets_averages_in_the_database(auth_client, history):
    response = auth_client.get(
        "/api/monitoring/series/",
        {"since": at(0).isoformat(), "until": at(300).isoformat(), "resolution": 60},
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["resolution"] == 60
    assert [h["host"] for h in data["hosts"]] == ["box-a", "box-b"]
    box_a = data["hosts"][0]
    points = [(p["t"], p["samples"], p["ram_used_mb"], p["cpu_percent"]) for p in box_a["points"]]
    assert points == [
        ("2025-03-01T12:00:00Z", 2, 1500.0, 20.0),
        ("2025-03-01T12:01:00Z", 1, 4000.0, None),  # a missing figure is a gap, not 0
        ("2025-03-01T12:03:00Z", 1, 3000.0, 50.0),
    ]
    (card,) = box_a["gpus"]
    assert (card["index"], card["uuid"], card["name"]) == (0, "GPU-0", "Card 0")
    assert [
        (p["t"], p["memory_used_mb"], p["utilization_percent"], p["temperature_c"])
        for p in card["points"]
    ] == [
        ("2025-03-01T12:00:00Z", 200.0, 30.0, 55.0),
        ("2025-03-01T12:01:00Z", 500.0, 90.0, 70.0),
    ]
    assert data["hosts"][1]["points"][0]["ram_used_mb"] == 8000.0


def test_series_window_is_half_open_and_host_filter(auth_client, history):
    response = auth_client.get(
        "/api/monitoring/series/",
        {
            "since": at(35).isoformat(),
            "until": at(180).isoformat(),
            "resolution": 3600,
            "host": "box-a",
        },
    )
    data = response.json()
    assert [h["host"] for h in data["hosts"]] == ["box-a"]
    (point,) = data["hosts"][0]["points"]
    assert point["t"] == "2025-03-01T12:00:00Z"  # aligned on the hour, not on since
    assert point["samples"] == 2  # at(35) and at(70); at(180) is excluded
    assert point["ram_used_mb"] == 3000.0


def test_series_default_resolution_keeps_about_300_points(auth_client, settings):
    settings.TELEMETRY_INTERVAL = 5.0
    one_hour = auth_client.get(
        "/api/monitoring/series/", {"since": at(0).isoformat(), "until": at(3600).isoformat()}
    )
    assert one_hour.json()["resolution"] == 12
    five_min = auth_client.get(
        "/api/monitoring/series/", {"since": at(0).isoformat(), "until": at(300).isoformat()}
    )
    assert five_min.json()["resolution"] == 5  # never finer than the sampling interval


def test_default_window_is_the_last_hour(auth_client):
    now = timezone.now()
    make_sample("box", now - timedelta(minutes=30), ram_used_mb=1.0)
    make_sample("box", now - timedelta(minutes=90), ram_used_mb=2.0)
    data = auth_client.get("/api/monitoring/series/", {"resolution": 3600}).json()
    assert sum(p["samples"] for p in data["hosts"][0]["points"]) == 1
    since = datetime.fromisoformat(data["since"])
    until = datetime.fromisoformat(data["until"])
    assert until - since == timedelta(hours=1)


def test_unencoded_plus_in_the_offset_is_understood(auth_client, history):
    query = "since=2025-03-01T12:00:00+00:00&until=2025-03-01T13:00:00+00:00&resolution=3600"
    response = auth_client.get(f"/api/monitoring/series/?{query}")
    assert response.status_code == 200, response.content
    assert response.json()["hosts"][0]["points"][0]["samples"] == 4


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
            "The window from since to until is 59 days (5097600 s); "
            "the maximum is 31 days (2678400 s).",
        ),
        ({"resolution": "0"}, "resolution", "Ensure this value is greater than or equal to 1."),
        ({"resolution": "fast"}, "resolution", "A valid integer is required."),
        (
            {"resolution": "90000"},
            "resolution",
            "Ensure this value is less than or equal to 86400.",
        ),
        (
            {"since": "2025-03-01T00:00:00Z", "until": "2025-03-02T00:00:00Z", "resolution": "10"},
            "resolution",
            "A 86400 s window at 10 s resolution is 8640 points; the maximum is 2000: "
            "use resolution=44 or more, or a shorter window.",
        ),
    ],
)
def test_series_validation_messages(auth_client, params, field, message):
    response = auth_client.get("/api/monitoring/series/", params)
    assert response.status_code == 400
    assert_field_error(response, field, message)


def test_bad_datetime_names_the_format(auth_client):
    response = auth_client.get("/api/monitoring/summary/", {"since": "yesterday"})
    assert response.status_code == 400
    (message,) = response.json()["since"]
    assert message.startswith("Datetime has wrong format.")


def test_summary_min_avg_max(auth_client, history):
    response = auth_client.get(
        "/api/monitoring/summary/",
        {"since": at(0).isoformat(), "until": at(600).isoformat(), "host": "box-a"},
    )
    assert response.status_code == 200, response.content
    (host,) = response.json()["hosts"]
    assert host["host"] == "box-a"
    assert host["samples"] == 4
    assert host["first"] == "2025-03-01T12:00:05Z" and host["last"] == "2025-03-01T12:03:00Z"
    assert host["ram_used_mb"] == {"min": 1000.0, "avg": 2500.0, "max": 4000.0}
    assert host["cpu_percent"] == {"min": 10.0, "avg": 30.0, "max": 50.0}
    assert host["load_1"] == {"min": None, "avg": None, "max": None}
    (card,) = host["gpus"]
    assert card["samples"] == 3
    assert card["memory_used_mb"] == {"min": 100.0, "avg": 300.0, "max": 500.0}
    assert card["utilization_percent"] == {"min": 20.0, "avg": 50.0, "max": 90.0}
    assert card["temperature_c"] == {"min": 50.0, "avg": 60.0, "max": 70.0}
    (model,) = host["models"]
    assert (model["model"], model["samples"], model["max_size_vram"]) == ("llama3.2:3b", 1, 60)


def test_latest_per_host_with_gpus_and_models(auth_client, settings):
    settings.TELEMETRY_INTERVAL = 5.0
    now = timezone.now()
    make_sample("box-a", now - timedelta(seconds=60), ram_used_mb=1.0)
    newest = make_sample(
        "box-a",
        now - timedelta(seconds=2),
        ram_used_mb=2.0,
        gpu_available=True,
        gpus=[gpu(0, memory_used_mb=10.0), gpu(1, memory_used_mb=20.0)],
        models=[{"ollama_url": "http://o", "model": "qwen3:0.6b", "size": 5, "size_vram": 5}],
        ollama_status=[
            {"url": "http://o", "available": True, "reason": None, "models": 1, "elapsed_ms": 3},
            {"url": "http://down", "available": False, "reason": "cannot connect", "models": 0},
        ],
    )
    make_sample("box-b", now - timedelta(seconds=300), ram_used_mb=3.0, gpu_reason="no GPU")

    response = auth_client.get("/api/monitoring/latest/")

    assert response.status_code == 200
    data = response.json()
    assert data["interval"] == 5.0
    a, b = data["hosts"]
    assert (a["id"], a["host"], a["ram_used_mb"], a["stale"]) == (newest.pk, "box-a", 2.0, False)
    assert 1 <= a["age_seconds"] < 30
    assert [g["memory_used_mb"] for g in a["gpus"]] == [10.0, 20.0]
    assert a["ollama"] == [
        {
            "url": "http://o",
            "available": True,
            "reason": None,
            "elapsed_ms": 3.0,
            "models": [
                {
                    "name": "qwen3:0.6b",
                    "size": 5,
                    "size_vram": 5,
                    "expires_at": None,
                    "context_length": None,
                }
            ],
        },
        {
            "url": "http://down",
            "available": False,
            "reason": "cannot connect",
            "elapsed_ms": None,
            "models": [],
        },
    ]
    assert (b["host"], b["stale"], b["gpu_reason"]) == ("box-b", True, "no GPU")

    only_b = auth_client.get("/api/monitoring/latest/", {"host": "box-b"}).json()
    assert [h["host"] for h in only_b["hosts"]] == ["box-b"]


def test_latest_with_no_samples(auth_client):
    assert auth_client.get("/api/monitoring/latest/").json()["hosts"] == []


def test_the_schema_documents_the_endpoints(auth_client):
    response = auth_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("latest", "series", "summary"):
        assert f"/api/monitoring/{path}/" in paths
    params = {p["name"] for p in paths["/api/monitoring/series/"]["get"]["parameters"]}
    assert {"since", "until", "resolution", "host"} <= params


def test_bucket_edges_are_exact(auth_client):
    # SQLite rounds fractional seconds to milliseconds; 59.9999 s must stay in the first minute.
    make_sample("box", at(59.9999), ram_used_mb=1.0)
    make_sample("box", at(60), ram_used_mb=2.0)
    data = auth_client.get(
        "/api/monitoring/series/",
        {"since": at(0).isoformat(), "until": at(120).isoformat(), "resolution": 60},
    ).json()
    assert [(p["t"], p["ram_used_mb"]) for p in data["hosts"][0]["points"]] == [
        ("2025-03-01T12:00:00Z", 1.0),
        ("2025-03-01T12:01:00Z", 2.0),
    ]


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


# The dates at the ends of Python's range: "an hour before until" overflowed (a 500).
OUT_OF_RANGE = [
    ({"until": "0001-01-01T00:00:00Z"}, "until"),
    ({"until": "0001-01-01T00:59:59Z"}, "until"),
    ({"since": "0001-01-01T00:00:00Z", "until": "0001-01-01T00:30:00Z"}, "since until"),
    ({"since": "1969-12-31T23:00:00Z", "until": "1970-01-01T00:30:00Z"}, "since"),
    ({"since": "9999-12-31T22:00:00Z", "until": "9999-12-31T23:59:59Z"}, "since until"),
]


@pytest.mark.parametrize("path", ["/api/monitoring/series/", "/api/monitoring/summary/"])
@pytest.mark.parametrize(("params", "field"), OUT_OF_RANGE)
def test_dates_out_of_range_are_a_400(auth_client, path, params, field):
    response = auth_client.get(path, params)
    assert_out_of_range(response, field.split())


def test_the_range_ends_are_accepted(auth_client):
    for params in (
        {"since": "1970-01-01T00:00:00Z", "until": "1970-01-01T01:00:00Z"},
        {"until": "1970-01-01T01:00:00Z"},
        {"since": "9998-12-31T00:00:00Z", "until": "9998-12-31T23:59:59Z"},
    ):
        for path in ("/api/monitoring/series/", "/api/monitoring/summary/"):
            response = auth_client.get(path, params)
            assert response.status_code == 200, (path, params, response.content)
