"""GET /api/monitoring/requests/: every assistant reply with its figures, newest first.

Who sees what: a user only their own requests (asking for someone else's is 403), staff
everyone's, and staff can narrow by user (id or email).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from tests.support.errors import assert_field_error

from .conftest import make_reply

pytestmark = pytest.mark.django_db

URL = "/api/monitoring/requests/"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

GPU_BEFORE = [
    {
        "index": 0,
        "uuid": "GPU-1",
        "name": "NVIDIA GeForce RTX 4090",
        "memory_used_mb": 5120.0,
        "memory_total_mb": 24564.0,
        "utilization_percent": 3,
    }
]
GPU_AFTER = [dict(GPU_BEFORE[0], memory_used_mb=5376.0, utilization_percent=97)]
RAM_BEFORE = {
    "used_mb": 8000.0,
    "total_mb": 32000.0,
    "available_mb": 24000.0,
    "percent": 25.0,
    "error": None,
}
RAM_AFTER = dict(RAM_BEFORE, used_mb=8012.5, percent=25.1)
DELTA = {
    "gpu": [
        {
            "index": 0,
            "uuid": "GPU-1",
            "memory_used_mb_before": 5120.0,
            "memory_used_mb_after": 5376.0,
            "memory_used_mb_delta": 256.0,
            "utilization_percent_before": 3.0,
            "utilization_percent_after": 97.0,
            "utilization_percent_delta": 94.0,
        }
    ],
    "gpu_memory_used_mb_delta": 256.0,
    "ram_used_mb_delta": 12.5,
    "ram_percent_delta": 0.1,
    "elapsed_seconds": 4.2,
}
RESOURCES = {
    "gpu_usage_before": GPU_BEFORE,
    "gpu_usage_after": GPU_AFTER,
    "ram_usage_before": RAM_BEFORE,
    "ram_usage_after": RAM_AFTER,
    "resource_delta": DELTA,
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


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
def replies(alice, bob):
    """Alice: three replies (two models, one failed); Bob: one."""
    a1 = make_reply(alice, at(10), tokens_per_second=40.0, eval_count=100, in_flight_at_start=1)
    a2 = make_reply(alice, at(20), model="qwen2.5:0.5b", tokens_per_second=90.0)
    a3 = make_reply(alice, at(30), status="failed")
    b1 = make_reply(bob, at(15), tokens_per_second=35.0)
    return {"a1": a1, "a2": a2, "a3": a3, "b1": b1}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# --------------------------------------------------------------------------- who sees what


@pytest.mark.parametrize("path", ["requests/", "throughput/"])
def test_unauthenticated_is_401(api_client, path):
    response = api_client.get(f"/api/monitoring/{path}")
    assert response.status_code == 401


def test_a_user_sees_only_their_own_replies_newest_first(alice, bob, replies):
    # A user message is not a request: only assistant replies are listed.
    conversation = replies["a1"].conversation
    Message.objects.create(conversation=conversation, role="user", content="hi")

    assert ids(client_for(alice).get(URL)) == [replies["a3"].pk, replies["a2"].pk, replies["a1"].pk]
    assert ids(client_for(bob).get(URL)) == [replies["b1"].pk]


def test_a_user_asking_for_someone_else_gets_403(alice, bob, replies):
    for ref in (bob.pk, bob.email, "BOB@example.com", 999_999):
        response = client_for(alice).get(URL, {"user": ref})
        assert response.status_code == 403, ref
        assert response.json() == {
            "detail": "Only staff can see other users' requests; leave out user to see your own.",
            "code": "permission_denied",
        }
    # The same for the throughput aggregates.
    assert client_for(alice).get("/api/monitoring/throughput/", {"user": bob.pk}).status_code == 403


def test_a_user_may_name_themselves(alice, replies):
    expected = [replies["a3"].pk, replies["a2"].pk, replies["a1"].pk]
    assert ids(client_for(alice).get(URL, {"user": alice.pk})) == expected
    assert ids(client_for(alice).get(URL, {"user": "Alice@Example.com"})) == expected


def test_staff_see_everyone_and_filter_by_user(staff, alice, bob, replies):
    everyone = ids(client_for(staff).get(URL))
    assert everyone == [r.pk for r in sorted(replies.values(), key=lambda m: m.created_at)][::-1]
    assert ids(client_for(staff).get(URL, {"user": bob.pk})) == [replies["b1"].pk]
    assert ids(client_for(staff).get(URL, {"user": "alice@example.com"})) == [
        replies["a3"].pk,
        replies["a2"].pk,
        replies["a1"].pk,
    ]
    rows = client_for(staff).get(URL, {"user": bob.pk}).json()["results"]
    assert (rows[0]["user"], rows[0]["user_email"]) == (bob.pk, "bob@example.com")


def test_staff_naming_an_unknown_user_gets_400(staff):
    response = client_for(staff).get(URL, {"user": 999_999})
    assert response.status_code == 400
    assert_field_error(response, "user", "No user with id 999999.")
    response = client_for(staff).get(URL, {"user": "nobody@example.com"})
    assert_field_error(response, "user", "No user with email nobody@example.com.")


# --------------------------------------------------------------------------- filters and pages


def test_filters(alice, replies):
    client = client_for(alice)
    assert ids(client.get(URL, {"model": "qwen2.5:0.5b"})) == [replies["a2"].pk]
    assert ids(client.get(URL, {"status": "failed"})) == [replies["a3"].pk]
    assert ids(client.get(URL, {"status": "complete"})) == [replies["a2"].pk, replies["a1"].pk]
    # since inclusive, until exclusive.
    window = {"since": at(10).isoformat(), "until": at(30).isoformat()}
    assert ids(client.get(URL, window)) == [replies["a2"].pk, replies["a1"].pk]
    assert ids(client.get(URL, {"since": at(20).isoformat()})) == [
        replies["a3"].pk,
        replies["a2"].pk,
    ]
    make_reply(alice, at(40), ollama_host="http://gpu2:11434")
    assert len(ids(client.get(URL, {"host": "http://gpu2:11434"}))) == 1


def test_pagination(alice):
    for i in range(7):
        make_reply(alice, at(i))
    data = client_for(alice).get(URL, {"page_size": 3}).json()
    assert data["count"] == 7
    assert len(data["results"]) == 3
    assert data["next"].endswith("page=2&page_size=3")
    last = client_for(alice).get(URL, {"page_size": 3, "page": 3}).json()
    assert len(last["results"]) == 1 and last["next"] is None
    assert client_for(alice).get(URL, {"page": 9}).status_code == 404


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"status": "done"},
            "status",
            '"done" is not a status; use one of streaming, complete, cancelled, failed, '
            "interrupted.",
        ),
        (
            {"since": "2025-03-01T12:00:00Z", "until": "2025-03-01T11:00:00Z"},
            "since",
            "since must be earlier than until.",
        ),
        (
            {"user": "bob"},
            "user",
            "Give a user id (a positive integer) or an email address.",
        ),
        ({"user": "0"}, "user", "Give a user id (a positive integer) or an email address."),
    ],
)
def test_validation_messages(alice, params, field, message):
    response = client_for(alice).get(URL, params)
    assert response.status_code == 400
    assert_field_error(response, field, message)


def test_bad_datetime_names_the_format(alice):
    response = client_for(alice).get(URL, {"since": "yesterday"})
    assert response.status_code == 400
    assert "Datetime has wrong format" in response.json()["since"][0]


# --------------------------------------------------------------------------- the figures


def test_a_row_carries_every_figure(alice):
    reply = make_reply(
        alice,
        at(0),
        tokens_per_second=42.5,
        prompt_tokens_per_second=800.0,
        time_to_first_token=0.25,
        queue_wait=1.5,
        eval_count=170,
        prompt_eval_count=26,
        total_duration=5_500_000_000,
        load_duration=1_250_000_000,
        eval_duration=4_000_000_000,
        in_flight_at_start=2,
        done_reason="stop",
        resources=RESOURCES,
        completed_at=at(6),
    )
    row = client_for(alice).get(URL).json()["results"][0]
    assert row == {
        "id": reply.pk,
        "conversation": str(reply.conversation_id),
        "user": alice.pk,
        "user_email": "alice@example.com",
        "model": "llama3.2:3b",
        "host": "http://ollama:11434",
        "status": "complete",
        "error_code": "",
        "done_reason": "stop",
        "created_at": "2025-03-01T12:00:00Z",
        "completed_at": "2025-03-01T12:00:06Z",
        "tokens_per_second": 42.5,
        "prompt_tokens_per_second": 800.0,
        "time_to_first_token_seconds": 0.25,
        "queue_wait_seconds": 1.5,
        "eval_count": 170,
        "prompt_eval_count": 26,
        "total_duration_seconds": 5.5,
        "load_duration_seconds": 1.25,
        "eval_duration_seconds": 4.0,
        "in_flight_at_start": 2,
        "gpu_usage_before": GPU_BEFORE,
        "gpu_usage_after": [dict(GPU_AFTER[0], utilization_percent=97.0)],
        "ram_usage_before": RAM_BEFORE,
        "ram_usage_after": RAM_AFTER,
        "resource_delta": DELTA,
        "gpu_memory_used_mb_delta": 256.0,
        "ram_used_mb_delta": 12.5,
    }
    assert "content" not in row  # the text of the reply is not a figure


def test_a_reply_without_figures_or_with_odd_resources(alice):
    make_reply(alice, at(0), status="failed")
    make_reply(
        alice,
        at(1),
        resources={"gpu_usage_before": "garbage", "ram_usage_before": [1], "resource_delta": 3},
    )
    odd, failed = client_for(alice).get(URL).json()["results"]
    assert failed["status"] == "failed" and failed["error_code"] == "ollama_error"
    for row in (odd, failed):
        assert row["tokens_per_second"] is None
        assert row["gpu_usage_before"] == [] and row["gpu_usage_after"] == []
        assert row["ram_usage_before"] is None and row["resource_delta"] is None
        assert row["gpu_memory_used_mb_delta"] is None


def test_a_real_chat_produces_a_row_with_resources(auth_client, ollama, user):
    """Through POST /api/chat/ against the Ollama double, with the real probes (psutil; no GPU
    here, so the GPU lists are empty unless this machine has an NVIDIA GPU)."""
    ollama.script(tokens=["One", " two", " three"], token_delay=0.001)
    reply = auth_client.post("/api/chat/", {"message": "Count"}, format="json")
    assert reply.status_code == 200, reply.content
    body = reply.json()

    rows = auth_client.get(URL).json()["results"]
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == body["message"]
    assert row["conversation"] == body["conversation"]
    assert row["user"] == user.pk
    assert row["status"] == "complete"
    assert row["model"] == "llama3.2:3b"
    assert row["host"] == ollama.url
    assert row["eval_count"] == 3
    assert row["tokens_per_second"] > 0
    assert row["tokens_per_second"] == pytest.approx(body["tokens_per_second"])
    assert row["time_to_first_token_seconds"] > 0
    assert row["queue_wait_seconds"] >= 0
    assert row["in_flight_at_start"] == 1
    assert row["total_duration_seconds"] > 0
    for key in ("ram_usage_before", "ram_usage_after"):
        assert row[key]["total_mb"] > 0 and row[key]["used_mb"] > 0, key
    assert row["ram_used_mb_delta"] is not None
    assert row["resource_delta"]["ram_used_mb_delta"] == row["ram_used_mb_delta"]
    for key in ("gpu_usage_before", "gpu_usage_after"):
        assert isinstance(row[key], list)
        for gpu in row[key]:
            assert gpu["memory_total_mb"] > 0
    assert row["gpu_usage_before"] == body["gpu_usage_before"]


def test_staff_do_not_see_conversations_twice(staff, alice):
    conversation = Conversation.objects.create(owner=alice)
    for i in range(3):
        make_reply(alice, at(i), conversation=conversation)
    assert len(ids(client_for(staff).get(URL))) == 3


def test_the_schema_documents_the_endpoints(auth_client):
    paths = auth_client.get("/api/schema/", {"format": "json"}).json()["paths"]
    requests = paths["/api/monitoring/requests/"]["get"]
    params = {p["name"] for p in requests["parameters"]}
    assert {"model", "since", "until", "status", "user", "host", "page", "page_size"} <= params
    throughput = paths["/api/monitoring/throughput/"]["get"]
    params = {p["name"] for p in throughput["parameters"]}
    assert {"model", "since", "until", "user", "host", "resolution"} <= params


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
        ({"until": "0001-01-01T00:00:00Z"}, "until"),
        ({"since": "0001-01-01T00:00:00Z"}, "since"),
        ({"since": "9999-12-31T23:59:59Z"}, "since"),
    ],
)
def test_dates_out_of_range_are_a_400(alice, params, field):
    response = client_for(alice).get(URL, params)
    assert_out_of_range(response, field.split())
