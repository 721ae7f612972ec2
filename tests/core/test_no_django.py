"""The library package stands alone: importing all of it loads neither Django nor an app."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "core.")]
for name in names:
    importlib.import_module(name)
apps = ("django", "rest_framework", "channels")
apps += ("config", "chat", "monitoring", "uploads", "accounts")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in apps)
print(json.dumps({"modules": names, "forbidden": loaded}))
"""


def test_core_imports_no_django_and_no_app():
    # A fresh interpreter: this test process has Django loaded already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    result = json.loads(out.stdout)
    assert "core.ollama.client" in result["modules"]
    assert "core.gate.redis_gate" in result["modules"]
    assert "core.probes.gpu" in result["modules"]
    assert result["forbidden"] == []


# Which apps each may import: the graph points one way (config wires them all together).
ALLOWED = {
    "core": set(),
    "accounts": {"config", "core"},
    "uploads": {"accounts", "config", "core"},
    "chat": {"accounts", "uploads", "config", "core"},
    "monitoring": {"accounts", "chat", "uploads", "config", "core"},
}


def imported_apps(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED) | (names & {"config"})


def test_the_app_graph_points_one_way():
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_apps(path) - ALLOWED[app] - {app})
        for app in ALLOWED
        for path in (ROOT / app).rglob("*.py")
        if imported_apps(path) - ALLOWED[app] - {app}
    }
    assert wrong == {}
