"""docker-compose.yml as Compose itself reads it, and the Procfile beside it.

`config` (Debian's ``docker-compose`` package, or the ``docker compose`` plugin where there is
one; .ci/run installs the former) validates the file, fills in the variables from an env file
like the ``.env`` the README asks for, and prints the result, which the test then reads. No
Docker engine is needed: nothing is built or started.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support.live import BASE_DIR

COMPOSE_FILE = BASE_DIR / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "beat")
SERVICES = ("postgres", "redis", "ollama", *APP_SERVICES)
DOTENV = {
    "SECRET_KEY": "compose-test-" + "k" * 50,
    "ALLOWED_HOSTS": "chat.example.com",
    "ADMIN_EMAIL": "admin@example.com",
    "ADMIN_PASSWORD": "a long admin password",
}
# The three processes, as the Procfile and the compose services start them.
PROCESSES = {
    "web": re.compile(r"\bdaphne\b.*\sconfig\.asgi:application\b"),
    "worker": re.compile(r"\bcelery -A config worker\b"),
    "beat": re.compile(r"\bcelery -A config beat\b"),
}


@cache
def compose_command() -> tuple[str, ...] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return (docker, "compose")
    legacy = shutil.which("docker-compose")
    return (legacy,) if legacy else None


def compose_config(tmp_path: Path, dotenv: dict[str, str], *args: str):
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run adds it)")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in dotenv.items()))
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        # Only the env file: the variables of the developer's shell (or of the suite's
        # PostgreSQL run, DATABASE_URL) would take precedence over it.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )


def rendered(tmp_path: Path, dotenv: dict[str, str] = DOTENV, *args: str) -> dict:
    result = compose_config(tmp_path, dotenv, *args)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def command_line(service: dict) -> str:
    command = service.get("command")
    assert command, service
    return shlex.join(command) if isinstance(command, list) else " ".join(command.split())


def test_compose_file_has_the_stack(tmp_path):
    services = rendered(tmp_path)["services"]
    assert set(SERVICES) <= set(services), sorted(services)

    for name in SERVICES:
        assert services[name].get("restart") == "unless-stopped", name
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in APP_SERVICES:
        assert PROCESSES[name].search(command_line(services[name])), command_line(services[name])
        environment = services[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0", name
        assert environment["DATABASE_URL"] == (
            "postgres://gateway:gateway@postgres:5432/gateway"
        ), name
        assert environment["SECRET_KEY"] == DOTENV["SECRET_KEY"], name
        assert environment["DJANGO_ENV"] == "production", name
        assert str(environment["DB_POOL_MAX_SIZE"]) == "8", name

    web = services["web"]
    # Daphne itself must receive SIGTERM (not a shell that ignores it), and get longer than
    # the generations' grace to drain.
    assert re.search(r"\bexec daphne\b", command_line(web)), command_line(web)
    assert str(web["environment"]["CHAT_SHUTDOWN_GRACE_SECONDS"]) == "20"
    assert web["stop_grace_period"] == "30s"
    assert "--concurrency=2" in command_line(services["worker"])
    assert "--schedule /data/celerybeat-schedule" in command_line(services["beat"])
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1

    # PgBouncer is opt-in: a profile of its own, the app on PostgreSQL unless told otherwise.
    pgbouncer = services.get("pgbouncer")  # v2 leaves an inactive profile's service out
    if pgbouncer is not None:
        assert pgbouncer["profiles"] == ["pgbouncer"]


def test_pgbouncer_profile_and_app_settings(tmp_path):
    dotenv = {
        **DOTENV,
        "DATABASE_URL": "postgres://gateway:gateway@pgbouncer:5432/gateway",
        "DB_POOL_MAX_SIZE": "0",
        "DB_DISABLE_SERVER_SIDE_CURSORS": "true",
        "WORKER_CONCURRENCY": "4",
    }
    services = rendered(tmp_path, dotenv, "--profile", "pgbouncer")["services"]
    pgbouncer = services["pgbouncer"]
    assert pgbouncer["environment"]["POOL_MODE"] == "transaction"
    assert pgbouncer["environment"]["DB_HOST"] == "postgres"
    assert pgbouncer["restart"] == "unless-stopped"
    assert pgbouncer["healthcheck"]["test"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"] == dotenv["DATABASE_URL"], name
        assert str(environment["DB_POOL_MAX_SIZE"]) == "0", name
        assert str(environment["DB_DISABLE_SERVER_SIDE_CURSORS"]) == "true", name
    assert "--concurrency=4" in command_line(services["worker"])


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ADMIN_EMAIL"])
def test_compose_refuses_without_required_settings(tmp_path, missing):
    dotenv = {key: value for key, value in DOTENV.items() if key != missing}
    result = compose_config(tmp_path, dotenv)
    assert result.returncode != 0, result.stdout
    assert missing in result.stderr, result.stderr


def test_procfile_runs_the_same_processes():
    entries = {}
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = " ".join(command.split())
    assert set(entries) == set(PROCESSES), entries
    for name, pattern in PROCESSES.items():
        assert pattern.search(entries[name]), entries[name]
