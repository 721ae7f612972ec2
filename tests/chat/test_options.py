import pytest

from chat.options import InvalidOptions, to_ollama, validate_options


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
