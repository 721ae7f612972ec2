"""The first admin's generated password, kept for `make run` to show again (development only).

`bootstrap_admin` prints a generated password once, and the lines of three starting processes
push it out of sight at once. In development it is also written to `VAR_DIR/admin_password`
(mode 0600, like the development secret key beside it), so the start-up banner can show it
again while it is still the admin's password, and `reset_admin_password` replaces it. In
production nothing is written: there `ADMIN_PASSWORD` is required and the operator chose it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings

from config.env import Env

DEVELOPMENT_ADMIN_EMAIL = "admin@localhost"


def admin_email() -> str:
    """The first admin's address: `ADMIN_EMAIL`, or the development default."""
    return Env().str("ADMIN_EMAIL") or DEVELOPMENT_ADMIN_EMAIL


def password_file() -> Path:
    return Path(settings.VAR_DIR) / "admin_password"


def remember(password: str) -> Path | None:
    """Write the generated password for the banner (development only); where, or None."""
    if settings.PRODUCTION:
        return None
    path = password_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    os.chmod(path, 0o600)  # a file left by an older run keeps its mode through O_TRUNC
    return path


def recall(user: Any) -> str | None:
    """The remembered password if it is still the user's (not changed since), else None."""
    path = password_file()
    if settings.PRODUCTION or not path.is_file():
        return None
    password = path.read_text().strip()
    return password if password and user.check_password(password) else None
