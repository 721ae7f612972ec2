"""``manage.py loadtest``: concurrent chats against a running gateway (see monitoring.loadtest).

Authentication, in this order (a password is never taken on the command line, where other
users of the machine could read it in the process list):

1. ``--token T`` or the environment variable ``LOADTEST_TOKEN``: a JWT access token, against
   any server (get one with ``POST /api/auth/token/``);
2. ``--email E`` with the environment variable ``LOADTEST_PASSWORD``: logs in through
   ``POST /api/auth/token/`` and refreshes the token between levels, against any server;
3. ``--email E`` alone, on the server itself: mints an access token for that existing, active
   user with this installation's signing key (``SECRET_KEY`` / ``JWT_SIGNING_KEY``), valid for
   two hours and kept in memory only. It gives nothing that running ``manage.py`` on the server
   does not already give (the database and the key), and only works against a server that
   shares them.

Each request starts a conversation owned by that user (titled ``[loadtest C.i] ...``);
``--cleanup`` deletes them afterwards, which also deletes their per-request figures.

The per-user chat limits would refuse a load test: run it as a user with the permission
"Can chat without the per-user limits" (``chat.chat_without_limits``, granted in the admin;
superusers have it), or set ``CHAT_MESSAGES_PER_MINUTE=0`` and
``CHAT_MAX_GENERATIONS_PER_USER=0`` on the server for the run. Set ``OLLAMA_MAX_CONCURRENCY``
(the gateway's gate, default 1) and Ollama's ``OLLAMA_NUM_PARALLEL`` to at least the highest
level, or the run measures the queue rather than the GPU (the verdict says so).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.limits import EXEMPT_PERMISSION
from monitoring.loadtest.driver import (
    DEFAULT_PROMPT,
    Auth,
    LoadTestConfig,
    LoadTestError,
    PasswordAuth,
    run,
)

MINTED_TOKEN_LIFETIME = timedelta(hours=2)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--concurrency: not a list of integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise CommandError("--concurrency: levels must be positive integers, e.g. 1,2,4,8")
    return sorted(set(levels))


def local_user(email: str):
    """The existing active user of this installation with that email."""
    user = get_user_model().objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise CommandError(f"No user with email {email} in this database.")
    if not user.is_active:
        raise CommandError(f"The user {email} is inactive.")
    return user


def mint_token(user) -> str:
    """An access token for the user, signed with this installation's key."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    token.set_exp(lifetime=MINTED_TOKEN_LIFETIME)
    return str(token)


class Command(BaseCommand):
    help = (
        "Fire concurrent chats through POST /api/chat/stream/ of a running gateway at several "
        "concurrency levels; print tokens/s, TTFT, queue wait and GPU figures per level with a "
        "VRAM-or-compute verdict, and write loadtest-<timestamp>.csv and .html. Authenticate "
        "with --token (or LOADTEST_TOKEN), --email with LOADTEST_PASSWORD, or --email alone on "
        "the server itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        host = os.environ.get("WEB_HOST", "127.0.0.1")
        port = os.environ.get("WEB_PORT", "8000")
        parser.add_argument("--model", required=True, help="the model to load-test")
        parser.add_argument(
            "--concurrency", default="1,2,4,8", help="comma-separated levels (default 1,2,4,8)"
        )
        parser.add_argument(
            "--requests", type=int, default=20, help="requests per level (default 20)"
        )
        parser.add_argument(
            "--url",
            default=f"http://{host}:{port}",
            help="the gateway (default http://$WEB_HOST:$WEB_PORT, i.e. http://127.0.0.1:8000)",
        )
        parser.add_argument("--token", help="a JWT access token (or set LOADTEST_TOKEN)")
        parser.add_argument(
            "--email",
            help="log in as this user with LOADTEST_PASSWORD; without it, mint a token locally",
        )
        parser.add_argument(
            "--out", default=".", help="directory for the CSV and HTML files (default .)"
        )
        parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the message sent")
        parser.add_argument(
            "--max-tokens",
            type=int,
            default=256,
            help="tokens per reply at most (Ollama's num_predict; 0: no limit; default 256)",
        )
        parser.add_argument(
            "--warmup", type=int, default=1, help="unmeasured requests first (default 1)"
        )
        parser.add_argument(
            "--timeout", type=float, default=600.0, help="seconds per request (default 600)"
        )
        parser.add_argument(
            "--cleanup",
            action="store_true",
            help="delete the conversations of the run afterwards (and so their figures)",
        )

    def handle(self, *args, **options):
        if options["requests"] < 1:
            raise CommandError("--requests must be at least 1.")
        if options["warmup"] < 0 or options["max_tokens"] < 0 or options["timeout"] <= 0:
            raise CommandError("--warmup and --max-tokens must be >= 0, --timeout > 0.")
        config = LoadTestConfig(
            url=options["url"].rstrip("/"),
            model=options["model"],
            concurrency=_levels(options["concurrency"]),
            requests=options["requests"],
            prompt=options["prompt"],
            max_tokens=options["max_tokens"] or None,
            warmup=options["warmup"],
            timeout=options["timeout"],
            out_dir=Path(options["out"]),
            cleanup=options["cleanup"],
        )
        auth = self._auth(options)
        try:
            result = run(config, auth, emit=self.stdout.write)
        except LoadTestError as exc:
            raise CommandError(str(exc)) from exc
        if result.failed:
            raise CommandError(
                f"{result.failed} of {len(result.requests)} requests failed; see {result.csv_path}."
            )

    def _auth(self, options) -> Auth:
        token = options["token"] or os.environ.get("LOADTEST_TOKEN")
        email = options["email"]
        if token and email:
            raise CommandError("Give --token (or LOADTEST_TOKEN) or --email, not both.")
        if token:
            return Auth(token)
        if not email:
            raise CommandError(
                "Authenticate with --token (or LOADTEST_TOKEN), with --email and "
                "LOADTEST_PASSWORD, or, on the server itself, with --email alone."
            )
        password = os.environ.get("LOADTEST_PASSWORD")
        if password:
            return PasswordAuth(email, password)
        user = local_user(email)
        access = mint_token(user)
        limited = settings.CHAT_MESSAGES_PER_MINUTE or settings.CHAT_MAX_GENERATIONS_PER_USER
        if limited and not user.has_perm(EXEMPT_PERMISSION):
            self.stderr.write(
                f"Warning: {email} is subject to the per-user chat limits; grant it "
                '"Can chat without the per-user limits" in the admin for the run, or turn the '
                "limits off on the server, or most requests will be refused (rate_limited)."
            )
        self.stdout.write(
            f"No LOADTEST_PASSWORD: minted a {MINTED_TOKEN_LIFETIME.seconds // 3600}-hour access "
            f"token for {email} with this installation's signing key (it only works against a "
            "server with the same SECRET_KEY/JWT_SIGNING_KEY)."
        )
        return Auth(access)
