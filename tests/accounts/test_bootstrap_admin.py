import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(tmp_path, settings):
    # A generated password is kept under VAR_DIR (accounts.admin_password): not the real one.
    settings.VAR_DIR = tmp_path


def run(monkeypatch, **env) -> str:
    for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    call_command("bootstrap_admin", stdout=out)
    return out.getvalue()


def test_development_default_generates_a_password_printed_once(monkeypatch):
    output = run(monkeypatch)
    assert "admin@localhost" in output
    generated = output.split("password: ")[1].split()[0]
    assert len(generated) >= 20
    admin = User.objects.get(email="admin@localhost")
    assert admin.is_staff and admin.is_superuser
    assert admin.check_password(generated)

    second = run(monkeypatch)
    assert "password:" not in second
    admin.refresh_from_db()
    assert admin.check_password(generated)


def test_from_environment_creates_then_updates(monkeypatch):
    run(monkeypatch, ADMIN_EMAIL="Ops@Example.com", ADMIN_PASSWORD="first strong passphrase")
    admin = User.objects.get(email="ops@example.com")
    assert admin.check_password("first strong passphrase")

    output = run(monkeypatch, ADMIN_EMAIL="ops@example.com", ADMIN_PASSWORD="second passphrase!")
    assert "Updated" in output
    admin.refresh_from_db()
    assert admin.check_password("second passphrase!")
    assert User.objects.count() == 1


def test_promotes_an_existing_user(monkeypatch, make_user):
    make_user("eve@example.com")
    run(monkeypatch, ADMIN_EMAIL="eve@example.com")
    assert User.objects.get(email="eve@example.com").is_superuser


def test_weak_password_is_refused(monkeypatch):
    with pytest.raises(CommandError, match="too weak"):
        run(monkeypatch, ADMIN_EMAIL="ops@example.com", ADMIN_PASSWORD="123")
    assert not User.objects.exists()


def test_production_requires_an_email(monkeypatch, settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="ADMIN_EMAIL"):
        run(monkeypatch)
