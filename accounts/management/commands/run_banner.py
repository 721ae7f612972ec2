"""`make run`'s last word: once the web process answers, where the app is and how to sign in,
and, in one line, whether Ollama answers. Run beside Daphne by the Procfile's web entry: the
lines of three starting processes have pushed `bootstrap_admin`'s output out of sight by then.

The Ollama probe is made here, once at start-up, with a short timeout; requests never wait on
it (the `/ready` check and the chat's own errors say the same later)."""

from __future__ import annotations

import time

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import admin_password
from config.env import Env

#: The probe's timeout: Ollama on the same machine answers /api/version in milliseconds.
PROBE_TIMEOUT = 2.0


def ollama_problem(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why Ollama at `url` does not answer /api/version, or None when it does."""
    try:
        response = httpx.get(f"{url}/api/version", timeout=timeout)
    except httpx.TimeoutException:
        return f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return type(exc).__name__ if not str(exc) else str(exc)
    if response.status_code != 200:
        return f"HTTP {response.status_code} from /api/version"
    return None


class Command(BaseCommand):
    help = (
        "Wait until the web process answers /health, then print its URL, how to sign in as the "
        "first admin, and a warning when Ollama does not answer at OLLAMA_URL."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait",
            type=float,
            default=120.0,
            help="seconds to wait for the web process (0: do not wait)",
        )

    def handle(self, *args, **options):
        env = Env()
        host = env.str("WEB_HOST", "127.0.0.1")
        port = env.int("WEB_PORT", 8000, minimum=1, maximum=65535)
        # Bound to every interface: this machine is reached at the loopback address.
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        base = f"http://{shown_host}:{port}/"
        if options["wait"] > 0 and not self._wait_for(base, options["wait"]):
            raise CommandError(
                f"The web process did not answer at {base} within {options['wait']:g} s"
            )

        lines = [self.style.SUCCESS(f"Ollama Gateway is up at {base}") + f"  (admin: {base}admin/)"]
        lines.append(self._admin_line())
        for url in settings.OLLAMA_URLS:
            problem = ollama_problem(url)
            if problem:
                lines.append(
                    self.style.WARNING(f"Warning: Ollama does not answer at {url} ({problem})")
                    + ": chats fail until it does (start it with `ollama serve`, or set OLLAMA_URL)"
                )
        self.stdout.write("\n".join(lines))

    def _wait_for(self, base: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"{base}health", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def _admin_line(self) -> str:
        email = admin_password.admin_email()
        user = get_user_model().objects.filter(email__iexact=email, is_staff=True).first()
        if user is None:
            return f"No admin {email} yet: `make run` creates it (`manage.py bootstrap_admin`)."
        if Env().raw("ADMIN_PASSWORD"):
            return f"Sign in as {user.email} with ADMIN_PASSWORD."
        password = admin_password.recall(user)
        if password:
            return (
                f"Sign in as {user.email}, password {password} "
                f"(kept in {admin_password.password_file()})."
            )
        return (
            f"Sign in as {user.email} with the password you set "
            "(forgot it? `make reset-admin-password`)."
        )
