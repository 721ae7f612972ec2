import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env


def test_booleans_are_strict():
    env = Env({"A": "true", "B": "Off", "C": "maybe", "D": " "})
    assert env.bool("A", False) is True
    assert env.bool("B", True) is False
    assert env.bool("D", True) is True
    with pytest.raises(ImproperlyConfigured, match="C='maybe' is not a boolean"):
        env.bool("C", False)


def test_integers_are_strict_and_bounded():
    env = Env({"N": "12", "BAD": "12x", "LOW": "0"})
    assert env.int("N", 1) == 12
    assert env.int("MISSING", 7) == 7
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env.int("BAD", 1)
    with pytest.raises(ImproperlyConfigured, match="below the minimum 1"):
        env.int("LOW", 5, minimum=1)


def test_floats_refuse_nan_and_infinity():
    env = Env({"X": "nan", "Y": "inf", "Z": "0.5"})
    assert env.float("Z", 1.0) == 0.5
    for name in ("X", "Y"):
        with pytest.raises(ImproperlyConfigured, match="finite"):
            env.float(name, 1.0)


def test_lists_and_choices():
    env = Env({"HOSTS": "a.example, b.example,,", "MODE": "prod"})
    assert env.list("HOSTS") == ["a.example", "b.example"]
    assert env.list("NONE", ["x"]) == ["x"]
    with pytest.raises(ImproperlyConfigured, match="must be one of"):
        env.choice("MODE", "development", ("development", "production"))


def test_required_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY must be set"):
        Env({}).required("SECRET_KEY", "why")


@pytest.mark.parametrize(
    "value", ["30/min", "1/s", "10/sec", "5/second", "2/minutes", "100/hour", "3/hours", "1/day"]
)
def test_rates_in_drfs_syntax(value):
    assert Env({"RATE": value}).rate("RATE", "1/min") == value
    assert Env({}).rate("RATE", value) == value


@pytest.mark.parametrize(
    "value",
    ["30/fortnight", "30/week", "0/min", "-1/min", "30", "30 per minute", "30/ min", "x/min"],
)
def test_rates_drf_would_fail_on_are_refused_naming_the_variable(value):
    with pytest.raises(ImproperlyConfigured, match=r"^LOGIN_RATE_PER_IP=.* must look like 30/min"):
        Env({"LOGIN_RATE_PER_IP": value}).rate("LOGIN_RATE_PER_IP", "30/min")
