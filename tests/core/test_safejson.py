import pytest

from core import safejson


def test_ordinary_json_is_read_as_json_reads_it():
    text = '{"a": [1, 2.5, "x]}", {"b": null}], "c": "\\"{["}'
    assert safejson.loads(text) == {"a": [1, 2.5, "x]}", {"b": None}], "c": '"{['}


def test_deep_nesting_is_refused_before_parsing():
    with pytest.raises(ValueError, match="deeper than 64"):
        safejson.loads("[" * 100_000 + "]" * 100_000)
    assert safejson.loads("[" * 64 + "]" * 64) is not None


def test_brackets_inside_strings_do_not_count():
    assert safejson.loads('["' + "[" * 1000 + '"]') == ["[" * 1000]


def test_huge_integers_are_refused():
    with pytest.raises(ValueError, match="100000 digits"):
        safejson.loads('{"seed": ' + "9" * 100_000 + "}")
    assert safejson.loads('{"seed": -' + "9" * 64 + "}")["seed"] == -int("9" * 64)
