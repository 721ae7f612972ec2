"""Production mode, checked in fresh processes: settings are read once per process."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"}
    }
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def production_env(tmp_path) -> dict:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "chat.example.com",
        "VAR_DIR": str(tmp_path),
    }


def test_check_deploy_passes_with_production_settings(production_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_passes_with_postgres_and_redis_urls(production_env):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DATABASE_URL="postgres://app@db.internal:5432/app",
        REDIS_URL="redis://redis.internal:6379/0",
        **production_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 60}, "SECRET_KEY is too weak"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must be set"),
        ({"DEBUG": "true"}, "DEBUG must not be on in production"),
        ({"DEBUG": "sometimes"}, "DEBUG='sometimes' is not a boolean"),
        ({"REDIS_URL": "http://nope"}, "REDIS_URL must start with"),
        ({"DJANGO_ENV": "prod"}, "DJANGO_ENV='prod' must be one of"),
    ],
)
def test_production_refuses_to_start_misconfigured(production_env, override, message):
    production_env.update(override)
    result = manage("check", **production_env)
    assert result.returncode != 0
    assert message in result.stderr


def test_development_needs_no_environment(tmp_path):
    result = manage("check", VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    # the development secret is generated once and kept private
    key_file = tmp_path / "dev_secret_key"
    assert key_file.exists()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "db.sqlite3").parent == tmp_path
