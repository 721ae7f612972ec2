"""The embedded Celery broker (kombu's filesystem transport) keeps all its files under VAR_DIR,
never in the current directory. Checked in a fresh process: settings load once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
# Publishing declares the queue and binds it to its exchange: kombu writes the exchange's
# table into the control folder then.
PUBLISH = (
    "from django.conf import settings; from config.celery import app; "
    "app.send_task('monitoring.prune_telemetry'); "
    "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('control_folder'))"
)


def test_the_filesystem_broker_keeps_its_control_folder_under_var_dir(tmp_path):
    var_dir, cwd = tmp_path / "var", tmp_path / "elsewhere"
    cwd.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ["VAR_DIR"] = str(var_dir)
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "shell", "--no-imports", "-c", PUBLISH],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    control = var_dir / "celery" / "control"
    assert list(cwd.iterdir()) == []  # no control/ (nor anything else) in the current directory
    assert (control / "celery.exchange").is_file()
    assert result.stdout.strip() == str(control)
    assert list((var_dir / "celery" / "queue").glob("*.msg"))  # the task was published
