"""File names for uploads: sanitising, storage names, safe joins, download headers.

Plain Python (no Django), so it is tested without a database.

Safety model
------------
``sanitize_filename`` maps *any* string to a name made only of ``[A-Za-z0-9._-]``
that does not start with a dot or a dash, is never ``.``/``..``, never contains ``..``
and is at most ``max_length`` characters. Because ``/``, ``\\``, ``%``, ``:`` and every
non-ASCII character are outside that set, the result can never be a path, whatever
decoding some later layer might apply. The earlier steps (percent-decoding, NFKC,
taking the last path component) only make the result *nicer* (``..%2f..%2fetc%2fpasswd``
becomes ``passwd`` rather than ``_.._etc_passwd``); safety does not depend on them.

Stored files are named ``<uuid hex>_<sanitised name>`` (``stored_name``), so two uploads
never collide and a user-chosen name never decides where a file goes. ``safe_join`` is the
second line of defence: it resolves the path (following symlinks) and refuses anything that
is not strictly inside the root.

Django (4.2+) has ``django.utils.http.content_disposition_header``; ``content_disposition``
here is a Django-free equivalent that always sends both the ASCII ``filename=`` fallback and
the RFC 5987 / RFC 6266 ``filename*=`` form, and strips control/bidi characters first.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "FALLBACK_NAME",
    "UnsafePath",
    "content_disposition",
    "safe_join",
    "sanitize_filename",
    "stored_name",
]

DEFAULT_MAX_LENGTH = 120
MIN_MAX_LENGTH = 8
FALLBACK_NAME = "file"
#: An extension is kept apart from the stem (and survives truncation) only if it is this
#: short and purely alphanumeric; anything else is treated as part of the stem.
MAX_EXTENSION_LENGTH = 16
#: Percent-decoding + NFKC rounds; a name still encoded after that is harmless anyway
#: (``%`` is replaced by ``_``).
MAX_DECODE_ROUNDS = 8

# Windows device names: reserved with or without an extension (``nul.txt`` is ``NUL``).
# COM0/LPT0 and the superscript digits (which NFKC maps to 1-3) are covered too.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(10)} | {f"LPT{i}" for i in range(10)}
)

# Unicode categories removed outright: control (NUL, CR, LF, ESC...), format (bidi
# overrides U+202A-U+202E and isolates U+2066-U+2069, zero-width chars, BOM, soft hyphen)
# and lone surrogates (from surrogateescape'd bytes).
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

_SEPARATORS = re.compile(r"[/\\]")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_DOT_RUN = re.compile(r"\.{2,}")
_EXTENSION = re.compile(rf"\.[A-Za-z0-9]{{1,{MAX_EXTENSION_LENGTH}}}")
_ALNUM = re.compile(r"[A-Za-z0-9]")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UUID_HEX = re.compile(r"[0-9a-f]{32}")


class UnsafePath(ValueError):
    """A path would leave its root (traversal, absolute path, symlink escape...)."""


def _decode(name: str) -> str:
    """Percent-decode and NFKC-normalise until stable (``%252e`` -> ``%2e`` -> ``.``).

    NFKC folds fullwidth and other compatibility forms (U+FF0E U+FF0E U+FF0F -> ``../``),
    and it may itself reveal new escapes (fullwidth percent, digit, letter -> ``%2f``),
    hence the joint loop.
    Invalid UTF-8 after decoding (``%c0%af``, an overlong ``/``) becomes U+FFFD.
    """
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unicodedata.normalize("NFKC", unquote(name, errors="replace"))
        if decoded == name:
            break
        name = decoded
    return name


def _remove_invisible(name: str) -> str:
    return "".join(ch for ch in name if unicodedata.category(ch) not in _REMOVED_CATEGORIES)


def _is_separator(ch: str) -> bool:
    """``/``, ``\\``, or a character that NFKC turns into text holding one: the fullwidth
    solidus and reverse solidus (U+FF0F, U+FF3C), the small reverse solidus (U+FE68), the
    account-of and care-of signs (U+2100 ``a/c``, U+2105 ``c/o``)..."""
    if ch.isascii():
        return ch in "/\\"
    return bool(_SEPARATORS.search(unicodedata.normalize("NFKC", ch)))


def _last_component(name: str) -> str:
    """The last path component that is not empty, ``.``, ``..`` or only dots/spaces.

    Separators and dots are recognised as NFKC reads them (fullwidth ``../../x``, U+FF0E and
    U+FF0F, is ``x``), so a later layer that normalises the name cannot find a directory in it.
    A character never combines with its neighbours into ``/``, ``\\`` or ``.`` under NFKC
    (none of them is a composite), so looking at each character alone is enough.
    """
    unified = "".join("/" if _is_separator(ch) else ch for ch in name)
    for part in reversed(_SEPARATORS.split(unified)):
        if unicodedata.normalize("NFKC", part).strip(" ."):
            return part
    return ""


def _ascii_fold(name: str) -> str:
    """Drop accents (``é`` -> ``e``); other non-ASCII characters are replaced later."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if dot and stem and _EXTENSION.fullmatch(dot + ext):
        return stem, dot + ext
    return name, ""


def _fallback_stem(stem: str) -> str:
    return stem if _ALNUM.search(stem) else FALLBACK_NAME


def sanitize_filename(name: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """Return a safe, non-empty, ASCII-only file name derived from ``name``.

    Steps: percent-decode + NFKC until stable; remove control, format (bidi) and
    surrogate characters; keep the last path component (``/`` or ``\\``); drop accents;
    replace each run of characters outside ``[A-Za-z0-9._-]`` with ``_``; collapse runs
    of dots; strip leading dots/dashes and trailing dots; a stem without any letter or
    digit becomes ``file``; Windows device names get a ``_`` prefix (``CON`` -> ``_CON``,
    ``nul.txt`` -> ``_nul.txt``); finally cut the stem so the whole fits ``max_length``,
    keeping a short extension (``.pdf``).

    >>> sanitize_filename("my file (1).txt")
    'my_file_1_.txt'
    >>> sanitize_filename("../../etc/passwd")
    'passwd'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}")
    if max_length < MIN_MAX_LENGTH:
        raise ValueError(f"max_length must be at least {MIN_MAX_LENGTH}")

    text = _remove_invisible(_decode(name))
    text = _last_component(text).strip()
    text = _UNSAFE_RUN.sub("_", _ascii_fold(text))
    text = _DOT_RUN.sub(".", text)
    text = text.lstrip(".-").rstrip(".")

    stem, ext = _split_extension(text)
    if len(ext) > max_length // 2:
        stem, ext = text, ""
    stem = _fallback_stem(stem)

    budget = max_length - len(ext)
    stem = _fallback_stem(stem[:budget].rstrip("."))[:budget]
    if stem.split(".", 1)[0].upper() in WINDOWS_RESERVED:
        stem = ("_" + stem)[:budget].rstrip(".")

    result = stem + ext
    if not _SAFE_NAME.fullmatch(result) or len(result) > max_length:  # pragma: no cover
        return FALLBACK_NAME  # defensive: unreachable by construction
    return result


def stored_name(original: str, uuid_hex: str) -> str:
    """The on-disk name of an upload: ``<uuid hex>_<sanitised original name>``.

    ``uuid_hex`` must be ``uuid.UUID.hex`` (32 lowercase hex digits); anything else is a
    programming error and raises ``ValueError``.
    """
    if not isinstance(uuid_hex, str) or not _UUID_HEX.fullmatch(uuid_hex):
        raise ValueError("uuid_hex must be 32 lowercase hexadecimal digits (uuid.UUID.hex)")
    return f"{uuid_hex}_{sanitize_filename(original)}"


def safe_join(root: Path, name: str) -> Path:
    """Join ``name`` under ``root`` and return the resolved path, or raise ``UnsafePath``.

    Refused: empty names, NUL, backslashes, absolute or drive-qualified paths, any ``..``
    component, a name that resolves to ``root`` itself, and anything whose resolved path
    (symlinks followed, on every existing component) is not strictly inside the resolved
    root. ``root`` itself may be a symlink (e.g. ``MEDIA_ROOT`` on a mounted volume).

    This is a check at one moment: to create a file, open it with ``O_CREAT | O_EXCL``
    (``open(path, "xb")``), which also refuses to follow a symlink planted in between.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePath("empty file name")
    if "\x00" in name:
        raise UnsafePath("NUL byte in file name")
    if "\\" in name:
        raise UnsafePath("backslash in file name")
    relative = Path(name)
    if relative.is_absolute() or relative.anchor or re.match(r"[A-Za-z]:", name):
        raise UnsafePath(f"absolute path refused: {name!r}")
    if ".." in relative.parts:
        raise UnsafePath(f"parent directory reference refused: {name!r}")

    base = Path(root).resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise UnsafePath(f"cannot resolve {name!r}: {exc}") from exc
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{name!r} resolves outside {base}")
    return target


# -- Content-Disposition --------------------------------------------------------------

DISPOSITIONS = frozenset({"attachment", "inline"})
MAX_DISPLAY_NAME_LENGTH = 200
DEFAULT_DOWNLOAD_NAME = "download"
# `/` cannot come from a display name (its directories are dropped first); refused anyway.
_FALLBACK_UNSAFE_RUN = re.compile(r'[^\x20-\x7e]+|["\\%/]+')


def _display_name(original_name: str) -> str:
    """The name shown to the user: Unicode kept, invisible/control chars and dirs removed."""
    text = _remove_invisible(unicodedata.normalize("NFC", original_name))
    text = _last_component(text).strip().rstrip(".")
    if not text:
        return DEFAULT_DOWNLOAD_NAME
    if len(text) > MAX_DISPLAY_NAME_LENGTH:
        stem, ext = _split_extension(text)
        text = stem[: MAX_DISPLAY_NAME_LENGTH - len(ext)] + ext
    return text


def _ascii_fallback(display: str) -> str:
    """The quoted ``filename``: ``display`` read as NFKC (fullwidth letters are ASCII ones),
    accents dropped, everything else outside printable ASCII, ``"``, ``\\``, ``%`` and ``/``
    replaced."""
    text = _ascii_fold(unicodedata.normalize("NFKC", display))
    text = _FALLBACK_UNSAFE_RUN.sub("_", text).strip()
    stem, ext = _split_extension(text)
    return text if _ALNUM.search(stem) else DEFAULT_DOWNLOAD_NAME + ext


def content_disposition(original_name: str, disposition: str = "attachment") -> str:
    """A ``Content-Disposition`` value, e.g. for ``résumé "v2".pdf``::

        attachment; filename="resume _v2_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf

    The quoted ``filename`` holds printable ASCII only, without ``"``, ``\\`` or ``%``
    (some browsers percent-decode it); ``filename*`` (RFC 5987, preferred by browsers per
    RFC 6266) percent-encodes every byte outside the unreserved set. CR, LF, NUL, other
    controls and bidi overrides are removed, directories dropped, length capped. The value
    can therefore never break out of the header.
    """
    if disposition not in DISPOSITIONS:
        raise ValueError(f"disposition must be one of {sorted(DISPOSITIONS)}")
    display = _display_name(original_name)
    fallback = _ascii_fallback(display)
    encoded = quote(display, safe="", encoding="utf-8", errors="strict")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
