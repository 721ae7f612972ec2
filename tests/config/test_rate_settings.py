"""Throttle rates are checked at start-up, in a fresh process (settings load once): a rate DRF
cannot parse would otherwise answer every throttled request with a 500."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.settings_process import django_shell

RATES = ("LOGIN_RATE_PER_IP", "LOGIN_RATE_PER_ACCOUNT", "UPLOAD_RATE")
PRINT = "from django.conf import settings as s; print(" + ", ".join(f"s.{n}" for n in RATES) + ")"


def shell(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return django_shell(PRINT, tmp_path, unset=RATES, **env)


def test_defaults_and_values_from_the_environment(tmp_path):
    result = shell(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30/min", "10/min", "30/min"]
    result = shell(
        tmp_path, LOGIN_RATE_PER_IP="100/hour", LOGIN_RATE_PER_ACCOUNT="5/m", UPLOAD_RATE="9/day"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["100/hour", "5/m", "9/day"]


@pytest.mark.parametrize("name", RATES)
@pytest.mark.parametrize("value", ["30/fortnight", "0/min", "thirty/min"])
def test_a_bad_rate_stops_the_process_naming_the_variable(tmp_path, name, value):
    result = shell(tmp_path, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{name}={value!r} must look like 30/min" in result.stderr
