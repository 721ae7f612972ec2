"""The stylesheets keep their colours in CSS variables (static/css/app.css), so that the light
and dark palettes are the whole theme: no colour is written anywhere else, every variable used
is defined, and each colour of the palette has its light and its dark value (light-dark())."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "static"
APP_CSS = STATIC / "css" / "app.css"
COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b|\b(?:rgba?|hsla?)\(|:\s*(?:white|black)\s*[;}]")
# Values of custom properties (the palettes; a page's own variables, such as the docs bar's).
DEFINITION = re.compile(r"--[\w-]+\s*:[^;{}]*")
# A colour after a comma inside var(): the fallback for a page without the site's variables
# (now.css on the admin's pages).
FALLBACK = re.compile(r"var\(--[\w-]+\s*,[^;{}]*\)")


def stylesheets() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*.css") if "vendor" not in p.parts)


def strip_comments(css: str) -> str:
    return re.sub(r"/\*.*?\*/", "", css, flags=re.S)


def test_no_colour_outside_the_variables():
    found = []
    for path in stylesheets():
        css = FALLBACK.sub("", DEFINITION.sub("", strip_comments(path.read_text())))
        found += [f"{path.relative_to(STATIC)}: {m.group(0)}" for m in COLOUR.finditer(css)]
    assert found == [], "use (or add) a variable of static/css/app.css"


def test_every_variable_used_is_defined():
    defined: set[str] = set()
    used: dict[str, str] = {}
    for path in stylesheets():
        css = strip_comments(path.read_text())
        defined |= set(re.findall(r"(--[\w-]+)\s*:", css))
        # A var() with a fallback may name a variable of another page (Django admin's).
        for name in re.findall(r"var\((--[\w-]+)\s*\)", css):
            used.setdefault(name, str(path.relative_to(STATIC)))
    assert {name: where for name, where in used.items() if name not in defined} == {}


def test_every_colour_of_the_palette_has_a_light_and_a_dark_value():
    css = strip_comments(APP_CSS.read_text())
    root = re.search(r"^:root \{(.*?)^\}", css, flags=re.S | re.M)
    assert root
    palette = dict(re.findall(r"(--[\w-]+)\s*:\s*([^;]+);", root.group(1)))
    assert len(palette) > 40
    one_sided = {n: v for n, v in palette.items() if not re.fullmatch(r"light-dark\(.+,.+\)", v)}
    assert one_sided == {}
