"""OLLAMA_KEEP_ALIVE_MAX and OLLAMA_PROXY_MAX_CHARS, read at start-up in a fresh process."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.settings_process import django_shell

NAMES = ("OLLAMA_KEEP_ALIVE_MAX", "OLLAMA_PROXY_MAX_CHARS", "CHAT_MAX_MESSAGE_CHARS")
PRINT = "from django.conf import settings as s; print(" + ", ".join(f"s.{n}" for n in NAMES) + ")"


def shell(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return django_shell(PRINT, tmp_path, unset=NAMES, **env)


def test_defaults_and_values_from_the_environment(tmp_path):
    result = shell(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3600", "256000", "32000"]
    # the proxy's whole-request bound follows the message limit unless it is set
    result = shell(tmp_path, CHAT_MAX_MESSAGE_CHARS="1000")
    assert result.stdout.split() == ["3600", "8000", "1000"]
    result = shell(tmp_path, OLLAMA_KEEP_ALIVE_MAX="86400", OLLAMA_PROXY_MAX_CHARS="500000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["86400", "500000", "32000"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OLLAMA_KEEP_ALIVE_MAX": "30"}, "OLLAMA_KEEP_ALIVE_MAX=30 is below the minimum 60"),
        ({"OLLAMA_KEEP_ALIVE_MAX": "1h"}, "OLLAMA_KEEP_ALIVE_MAX='1h' is not an integer"),
        (
            {"OLLAMA_PROXY_MAX_CHARS": "100"},
            "OLLAMA_PROXY_MAX_CHARS=100 is below the minimum 32000",
        ),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(tmp_path, env, message):
    result = shell(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
