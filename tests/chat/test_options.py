import math

import pytest

from chat.options import (
    InvalidOptions,
    check_keep_alive,
    keep_alive_seconds,
    to_ollama,
    validate_ollama_options,
    validate_options,
)
from core.errors import AppError


def test_valid_options_map_to_ollama_names():
    options = validate_options(
        {
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "max_tokens": 256,
            "num_ctx": 4096,
            "seed": 42,
            "stop": ["\n\n", "User:"],
        }
    )
    assert to_ollama(options) == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "num_predict": 256,
        "num_ctx": 4096,
        "seed": 42,
        "stop": ["\n\n", "User:"],
    }


def test_integers_are_accepted_for_floats_and_whole_floats_for_integers():
    assert validate_options({"temperature": 1, "max_tokens": 10.0}) == {
        "temperature": 1.0,
        "max_tokens": 10,
    }


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"temperature": 2.5}, "temperature", "between 0 and 2"),
        ({"temperature": -0.1}, "temperature", "between 0 and 2"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"temperature": True}, "temperature", "must be a number"),
        ({"top_p": 1.5}, "top_p", "between 0 and 1"),
        ({"top_k": 0}, "top_k", "between 1 and 1000"),
        ({"max_tokens": 1.5}, "max_tokens", "whole number"),
        ({"max_tokens": 0}, "max_tokens", "between 1"),
        ({"num_ctx": 64}, "num_ctx", "between 128"),
        ({"stop": "END"}, "stop", "list of strings"),
        ({"stop": [""]}, "stop", "1 to 100"),
        ({"stop": ["a"] * 9}, "stop", "at most 8"),
        ({"mirostat": 1}, "mirostat", "unknown option"),
    ],
)
def test_each_bad_option_is_named(options, key, fragment):
    with pytest.raises(InvalidOptions) as caught:
        validate_options(options)
    assert fragment in caught.value.errors[key]


def test_options_must_be_an_object():
    with pytest.raises(InvalidOptions):
        validate_options(["temperature"])
    assert validate_options(None) == {}


# --------------------------------------------------------------------------- Ollama's names


def test_one_table_of_bounds_read_under_both_names():
    from chat.options import NUMERIC_OPTIONS, OLLAMA_NUMERIC_OPTIONS

    for name, spec in NUMERIC_OPTIONS.items():
        assert OLLAMA_NUMERIC_OPTIONS[spec.ollama_name] is spec, name


def test_valid_ollama_options_come_back_as_sent():
    sent = {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "num_predict": 128,
        "num_ctx": 4096,
        "seed": 7,
        "stop": ["\n\n"],
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "min_p": 0.05,
        "typical_p": 1,
        "presence_penalty": -0.5,
        "frequency_penalty": 0.5,
        "mirostat": 2,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "num_keep": 4,
    }
    checked = validate_ollama_options(sent)
    assert checked == sent
    assert type(checked["typical_p"]) is int  # not rewritten: Ollama gets what was sent
    # a null is left out, as Ollama ignores it
    assert validate_ollama_options({"temperature": None, "stop": None}) == {}


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        # the figures of the finding: Ollama would have taken them
        ({"num_ctx": 10_000_000}, "num_ctx", "between 128 and 1048576"),
        ({"temperature": 50}, "temperature", "between 0 and 2"),
        ({"num_predict": 1_000_000}, "num_predict", "between 1 and 131072"),
        ({"num_predict": 1.5}, "num_predict", "whole number"),
        ({"seed": 10**30}, "seed", "between"),
        ({"top_k": "40"}, "top_k", "must be a number"),
        ({"repeat_penalty": 9}, "repeat_penalty", "between 0 and 2"),
        ({"mirostat": 3}, "mirostat", "between 0 and 2"),
        ({"stop": ["x" * 101]}, "stop", "1 to 100"),
        # the REST name is not Ollama's
        ({"max_tokens": 10}, "max_tokens", "unknown option; allowed: temperature, top_p"),
        ({"tfs_z": 1.0}, "tfs_z", "unknown option"),
    ],
)
def test_each_bad_ollama_option_is_named(options, key, fragment):
    with pytest.raises(InvalidOptions) as caught:
        validate_ollama_options(options)
    assert fragment in caught.value.errors[key]


@pytest.mark.parametrize(
    "name",
    [
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_batch",
        "low_vram",
        "use_mmap",
        "use_mlock",
        "numa",
        "f16_kv",
        "vocab_only",
        "logits_all",
    ],
)
@pytest.mark.parametrize("validate", [validate_options, validate_ollama_options])
def test_server_resource_options_are_refused_by_name_on_every_transport(name, validate):
    with pytest.raises(InvalidOptions) as caught:
        validate({name: 1, "temperature": 0.5})
    assert list(caught.value.errors) == [name]
    assert "server resource setting" in caught.value.errors[name]
    assert "operator" in caught.value.errors[name]


def test_the_rest_names_do_not_grow_ollamas_extras():
    # repeat_penalty & co. are the proxy's (Ollama clients'); REST keeps its documented set
    with pytest.raises(InvalidOptions) as caught:
        validate_options({"repeat_penalty": 1.1})
    assert "unknown option" in caught.value.errors["repeat_penalty"]


# --------------------------------------------------------------------------- keep_alive


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("90s", 90),
        ("+2m", 120),
        (" 10m ", 600),
        ("300ms", 0.3),
        (300, 300),
        (300.9, 300),  # Ollama drops the fraction of a number
        (0, 0),
        ("0", 0),
        ("0s", 0),
        ("-0s", 0),
        (-1, math.inf),
        ("-1m", math.inf),
        ("-1h", math.inf),
        (10**20, 10**20),
    ],
)
def test_keep_alive_reads_as_ollama_reads_it(value, seconds):
    assert keep_alive_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["300", "-1", "forever", "5 m", "5min", "", "1h-5m", "m", True, None, [5], {"m": 5}, math.nan],
)
def test_a_keep_alive_ollama_would_refuse_is_invalid(value):
    with pytest.raises(AppError) as caught:
        keep_alive_seconds(value)
    assert (caught.value.code, caught.value.status) == ("invalid_keep_alive", 400)
    assert '"5m"' in caught.value.detail


@pytest.mark.parametrize("value", ["1m", "60s", 60, "30m", "1h", 3600, "59m59s"])
def test_users_may_choose_a_keep_alive_between_a_minute_and_the_maximum(value):
    check_keep_alive(value, staff=False, maximum=3600)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (0, "unload"),
        ("0", "unload"),
        ("59s", "unload"),
        (0.5, "unload"),  # Ollama reads 0
        (-1, "longer than 1h"),
        ("-5m", "longer than 1h"),
        ("999h", "longer than 1h"),
        (3601, "longer than 1h"),
    ],
)
def test_unloading_and_pinning_are_for_staff(value, what):
    with pytest.raises(AppError) as caught:
        check_keep_alive(value, staff=False, maximum=3600)
    error = caught.value
    assert (error.code, error.status) == ("keep_alive_forbidden", 403)
    assert "Only staff" in error.detail and what in error.detail
    assert "between 1m and 1h" in error.detail
    assert error.extra == {"keep_alive_min": 60, "keep_alive_max": 3600}
    check_keep_alive(value, staff=True, maximum=3600)  # staff may


def test_staff_still_get_invalid_keep_alive_for_what_ollama_refuses():
    with pytest.raises(AppError) as caught:
        check_keep_alive("forever", staff=True, maximum=3600)
    assert caught.value.code == "invalid_keep_alive"


# --------------------------------------------------------------------------- every transport


@pytest.mark.django_db
def test_rest_refuses_server_options_by_name(auth_client, ollama):
    response = auth_client.post(
        "/api/chat/", {"message": "x", "options": {"num_gpu": 999}}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_options"
    assert "server resource setting" in body["options"]["num_gpu"]
    conversation = auth_client.post(
        "/api/conversations/", {"options": {"num_thread": 512}}, format="json"
    )
    assert conversation.status_code == 400
    assert conversation.json()["code"] == "invalid_options"
    assert not ollama.requests_to("/api/chat")


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_refuses_server_options_by_name(ollama):
    from asgiref.sync import sync_to_async
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from config.asgi import application
    from tests.support.websocket import Communicator

    user = await sync_to_async(User.objects.create_user)("ws@example.com", "pw-1234567890")
    communicator = Communicator(
        application,
        "/ws/chat/",
        headers=[(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())],
    )
    assert (await communicator.connect())[0]
    await communicator.send_json_to(
        {"type": "chat.send", "message": "x", "options": {"use_mmap": False}}
    )
    error = await communicator.receive_json_from()
    assert (error["type"], error["code"]) == ("chat.error", "invalid_options")
    assert "server resource setting" in error["errors"]["options"]["use_mmap"]
    await communicator.disconnect()
    assert not ollama.requests_to("/api/chat")
