"""Settings are read once per process: tests of their parsing run Django in a fresh one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from tests.support.live import BASE_DIR


def django_shell(
    code: str, var_dir: Path, *, unset: Iterable[str] = (), **env: str
) -> subprocess.CompletedProcess:
    """Run `code` with `manage.py shell` on the embedded defaults, without the variables named
    in `unset` (a name ending in "_" is a prefix), plus `env`."""
    names = tuple(unset)
    environ = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL"
        and key not in names
        and not key.startswith(tuple(n for n in names if n.endswith("_")))
    }
    environ.update({"VAR_DIR": str(var_dir), **env})
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
