"""The uploads settings are parsed strictly, in a fresh process (settings load once)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.settings_process import django_shell

PRINT = (
    "from django.conf import settings as s; "
    "print(s.UPLOAD_MAX_BYTES, s.UPLOAD_QUOTA_BYTES, s.UPLOAD_RATE, s.ATTACHMENT_MAX_CHARS)"
)


def shell(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return django_shell(PRINT, tmp_path, unset=("UPLOAD_", "ATTACHMENT_"), **env)


def test_defaults(tmp_path):
    result = shell(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(20 * 1024 * 1024),
        str(500 * 1024 * 1024),
        "30/min",
        "20000",
    ]


def test_values_from_the_environment(tmp_path):
    result = shell(
        tmp_path,
        UPLOAD_MAX_BYTES="1000",
        UPLOAD_QUOTA_BYTES="5000",
        UPLOAD_RATE="100/hour",
        ATTACHMENT_MAX_CHARS="50",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "5000", "100/hour", "50"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPLOAD_MAX_BYTES": "20MB"}, "UPLOAD_MAX_BYTES='20MB' is not an integer"),
        ({"UPLOAD_MAX_BYTES": "0"}, "UPLOAD_MAX_BYTES=0 is below the minimum 1"),
        ({"UPLOAD_QUOTA_BYTES": "-1"}, "UPLOAD_QUOTA_BYTES=-1 is below the minimum 1"),
        ({"UPLOAD_RATE": "30 per minute"}, "UPLOAD_RATE='30 per minute' must look like 30/min"),
        ({"UPLOAD_RATE": "0/min"}, "UPLOAD_RATE='0/min' must look like 30/min"),
        ({"UPLOAD_RATE": "30/fortnight"}, "UPLOAD_RATE='30/fortnight' must look like 30/min"),
        ({"ATTACHMENT_MAX_CHARS": "0"}, "ATTACHMENT_MAX_CHARS=0 is below the minimum 1"),
    ],
)
def test_malformed_values_stop_the_process(tmp_path, env, message):
    result = shell(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_media_root_inside_the_static_root_is_refused(tmp_path):
    result = shell(
        tmp_path,
        STATIC_ROOT=str(tmp_path / "static"),
        MEDIA_ROOT=str(tmp_path / "static" / "media"),
    )
    assert result.returncode != 0
    assert "must not be inside the static folder" in result.stderr


EXTRACT = (
    "from django.conf import settings as s; "
    "print(s.UPLOAD_EXTRACT_CPU_SECONDS, s.UPLOAD_EXTRACT_WALL_SECONDS, "
    "s.UPLOAD_EXTRACT_MEMORY_MB, s.UPLOAD_EXTRACT_MAX_PAGES, s.UPLOAD_EXTRACT_CONCURRENCY)"
)


def extract_shell(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return django_shell(EXTRACT, tmp_path, unset=("UPLOAD_", "ATTACHMENT_"), **env)


def test_extraction_limits_defaults_and_values(tmp_path):
    result = extract_shell(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10", "30.0", "512", "200", "2"]
    result = extract_shell(
        tmp_path,
        UPLOAD_EXTRACT_CPU_SECONDS="3",
        UPLOAD_EXTRACT_WALL_SECONDS="7.5",
        UPLOAD_EXTRACT_MEMORY_MB="256",
        UPLOAD_EXTRACT_MAX_PAGES="50",
        UPLOAD_EXTRACT_CONCURRENCY="4",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "7.5", "256", "50", "4"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"UPLOAD_EXTRACT_CPU_SECONDS": "0.5"},
            "UPLOAD_EXTRACT_CPU_SECONDS='0.5' is not an integer",
        ),
        (
            {"UPLOAD_EXTRACT_CPU_SECONDS": "0"},
            "UPLOAD_EXTRACT_CPU_SECONDS=0 is below the minimum 1",
        ),
        (
            {"UPLOAD_EXTRACT_WALL_SECONDS": "soon"},
            "UPLOAD_EXTRACT_WALL_SECONDS='soon' is not a number",
        ),
        (
            {"UPLOAD_EXTRACT_WALL_SECONDS": "0"},
            "UPLOAD_EXTRACT_WALL_SECONDS=0.0 is below the minimum",
        ),
        (
            {"UPLOAD_EXTRACT_MEMORY_MB": "64"},
            "UPLOAD_EXTRACT_MEMORY_MB=64 is below the minimum 128",
        ),
        ({"UPLOAD_EXTRACT_MAX_PAGES": "0"}, "UPLOAD_EXTRACT_MAX_PAGES=0 is below the minimum 1"),
        (
            {"UPLOAD_EXTRACT_CONCURRENCY": "0"},
            "UPLOAD_EXTRACT_CONCURRENCY=0 is below the minimum 1",
        ),
    ],
)
def test_malformed_extraction_limits_stop_the_process(tmp_path, env, message):
    result = extract_shell(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
