"""`make run`'s banner (manage.py run_banner) and the first admin's password kept for it."""

from __future__ import annotations

import io
import socket
import stat

import pytest
from django.core.management import CommandError, call_command

from accounts import admin_password
from accounts.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(tmp_path, settings, monkeypatch):
    settings.VAR_DIR = tmp_path
    for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD", "WEB_HOST", "WEB_PORT"):
        monkeypatch.delenv(name, raising=False)


def run(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_generated_password_is_kept_0600_and_shown_again(ollama, tmp_path):
    created = run("bootstrap_admin")
    generated = created.split("password: ")[1].split()[0]
    kept = tmp_path / "admin_password"
    assert kept.read_text().strip() == generated
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "make reset-admin-password" in created

    banner = run("run_banner", "--wait", "0")
    assert "Ollama Gateway is up at http://127.0.0.1:8000/" in banner
    assert f"Sign in as admin@localhost, password {generated}" in banner
    assert "Warning" not in banner  # the double answers


def test_ollama_down_is_one_line(settings):
    settings.OLLAMA_URLS = [f"http://127.0.0.1:{closed_port()}"]
    run("bootstrap_admin")
    banner = run("run_banner", "--wait", "0")
    warnings = [line for line in banner.splitlines() if "Ollama does not answer" in line]
    assert len(warnings) == 1
    assert settings.OLLAMA_URLS[0] in warnings[0] and "OLLAMA_URL" in warnings[0]


def test_a_changed_password_is_not_shown_but_the_reset_command_is(ollama):
    run("bootstrap_admin")
    admin = User.objects.get(email="admin@localhost")
    admin.set_password("one I chose myself")
    admin.save()
    banner = run("run_banner", "--wait", "0")
    assert "password you set" in banner and "make reset-admin-password" in banner
    assert admin_password.password_file().read_text().strip() not in banner


def test_reset_admin_password(ollama):
    run("bootstrap_admin")
    output = run("reset_admin_password")
    new = output.split("New password for admin@localhost: ")[1].split()[0]
    admin = User.objects.get(email="admin@localhost")
    assert admin.check_password(new)
    assert f"password {new}" in run("run_banner", "--wait", "0")


def test_reset_without_an_admin_says_how_to_make_one():
    with pytest.raises(CommandError, match="bootstrap_admin"):
        run("reset_admin_password")


def test_production_writes_no_password(settings, tmp_path, monkeypatch):
    settings.PRODUCTION = True
    monkeypatch.setenv("ADMIN_EMAIL", "ops@example.com")
    monkeypatch.setenv("ADMIN_PASSWORD", "a long admin password")
    run("bootstrap_admin")
    assert not (tmp_path / "admin_password").exists()
    assert "Sign in as ops@example.com with ADMIN_PASSWORD." in run("run_banner", "--wait", "0")


@pytest.mark.django_db(transaction=True)
def test_waits_for_the_web_process(live_server, monkeypatch, ollama):
    host, port = live_server.url.removeprefix("http://").split(":")
    monkeypatch.setenv("WEB_HOST", host)
    monkeypatch.setenv("WEB_PORT", port)
    assert f"up at http://{host}:{port}/" in run("run_banner", "--wait", "30")

    monkeypatch.setenv("WEB_PORT", str(closed_port()))
    with pytest.raises(CommandError, match="did not answer"):
        run("run_banner", "--wait", "0.5")
