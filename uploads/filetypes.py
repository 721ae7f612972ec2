"""Which uploads are accepted: an allowlist checked by extension *and* content together.

Plain Python (no Django). ``detect(head, filename)`` looks at the first bytes of a file
(callers pass the first ``HEAD_SIZE`` bytes, or the whole file when smaller) and the
extension of the *sanitised* name (the one the stored file will carry), and returns a
``FileType`` or raises ``RejectedFile(code, message)``. For text, ``detect`` only sees the
head: run ``validate_text_stream`` over the whole content too (``validate_file`` does both
for a file on disk).

Allowed
-------
* text: ``.txt .log`` (text/plain), ``.md .markdown`` (text/markdown), ``.rst``,
  ``.csv .tsv``, ``.json .jsonl`` and a list of source-code/config extensions (``CODE``);
* ``.pdf`` (application/pdf);
* images: ``.png .jpg .jpeg .webp .gif``.

Not allowed, on purpose: HTML, SVG, XML, XHTML (they can carry script and would be
rendered by a browser), server-side scripts that a misconfigured web server could run
(``.php .asp .jsp .cgi .pl``), Windows scripts that run on double-click
(``.bat .cmd .ps1 .vbs``), archives, office documents, executables, and files without an
extension.

Code and other text is always *served* as ``text/plain`` (never ``text/javascript``, which
a page on our origin could load as a script). Markdown is ``text/markdown`` and CSV
``text/csv``: browsers do not render either.

Decisions
---------
* Encoding: UTF-8 (a BOM is allowed) or UTF-16 *with* a BOM (what Windows PowerShell's
  ``>`` and old Notepad write); ``FileType.encoding`` says which codec to use. UTF-32, and
  UTF-16 for JSON (RFC 8259 requires UTF-8), are refused as ``unsupported_encoding``.
  UTF-16 without a BOM shows up as NUL bytes and is refused as ``nul_bytes``.
* NUL bytes are refused in any text file (``nul_bytes``); other control characters
  (ANSI escapes in logs...) are accepted.
* Markup at the start (after a BOM and whitespace, case-insensitive):
  - every text type refuses the start of a whole markup *document*: ``<!doctype``,
    ``<html``, ``<svg``, ``<?xml``, ``<script`` (``markup_not_allowed``). Such a file is an
    HTML/SVG/XML document under another name, never a genuine README or source file;
  - plain types (``.txt .log .csv .tsv .json .jsonl``) also refuse what browsers sniff as
    HTML (the WHATWG MIME-sniffing list: ``<head``, ``<body``, ``<iframe``, ``<div``,
    ``<p``, ``<a``, ``<b``, ``<br``, ``<h1``, ``<table``, ``<font``, ``<style``,
    ``<title``, ``<!--`` followed by a space or ``>``);
  - Markdown, reST and code may start with such tags (READMEs often open with
    ``<p align="center">`` or ``<!-- comment -->``) and may contain any markup further on.
* Images and PDF must start with their exact signature (PNG also needs its IHDR chunk,
  WebP a VP8 chunk, PDF ``%PDF-`` at byte 0, not merely in the first KiB); a valid image
  of another type under the wrong extension (a JPEG named ``.png``) is refused too, so
  the stored extension and the served content type always agree.
* Executables (ELF, PE/MZ, Mach-O, Java class, WebAssembly) are refused under any name
  as ``executable_content``.
* JSON gets a light check: the first non-space character must be ``{`` or ``[``.

Rejection codes: ``empty_file``, ``extension_not_allowed``, ``executable_content``,
``content_mismatch``, ``markup_not_allowed``, ``nul_bytes``, ``invalid_encoding``,
``unsupported_encoding``, ``invalid_json``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uploads.filenames import sanitize_filename

__all__ = [
    "ALLOWED_EXTENSIONS",
    "CODE",
    "HEAD_SIZE",
    "FileType",
    "RejectedFile",
    "detect",
    "validate_file",
    "validate_text_stream",
]

HEAD_SIZE = 8 * 1024
STREAM_CHUNK_SIZE = 64 * 1024

Kind = Literal["text", "pdf", "image"]


@dataclass(frozen=True, slots=True)
class FileType:
    kind: Kind
    #: The value for a ``Content-Type`` header, e.g. ``text/plain; charset=utf-8``.
    content_type: str
    #: The lowercase extension it was accepted under, e.g. ``.md``.
    extension: str
    #: A short format name: ``text``, ``markdown``, ``csv``, ``json``, ``pdf``, ``png``...,
    #: or for code the language (``python``, ``rust``...), handy for a code fence.
    format: str
    #: The Python codec to decode a text file with (``utf-8``, ``utf-8-sig`` for a BOM,
    #: ``utf-16`` which reads the BOM); ``None`` for PDF and images.
    encoding: str | None = None


class RejectedFile(Exception):
    """An upload that is not accepted; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: Kind
    format: str
    mime: str  # without charset
    strict_markup: bool = False  # refuse the WHATWG "looks like HTML" starts too
    json: bool = False


_PLAIN = _Spec("text", "text", "text/plain", strict_markup=True)

#: Source code and config files: extension -> language. Served as text/plain.
CODE: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "jsx",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".cc": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".cs": "csharp",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby",
    ".swift": "swift",
    ".lua": "lua",
    ".r": "r",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "zsh",
    ".sql": "sql",
    ".css": "css",
    ".scss": "scss",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".diff": "diff",
    ".patch": "diff",
}

_SPECS: dict[str, _Spec] = {
    ".txt": _PLAIN,
    ".log": _PLAIN,
    ".md": _Spec("text", "markdown", "text/markdown"),
    ".markdown": _Spec("text", "markdown", "text/markdown"),
    ".rst": _Spec("text", "rst", "text/x-rst"),
    ".csv": _Spec("text", "csv", "text/csv", strict_markup=True),
    ".tsv": _Spec("text", "tsv", "text/tab-separated-values", strict_markup=True),
    ".json": _Spec("text", "json", "application/json", strict_markup=True, json=True),
    ".jsonl": _Spec("text", "jsonl", "application/jsonl", strict_markup=True, json=True),
    ".pdf": _Spec("pdf", "pdf", "application/pdf"),
    ".png": _Spec("image", "png", "image/png"),
    ".jpg": _Spec("image", "jpeg", "image/jpeg"),
    ".jpeg": _Spec("image", "jpeg", "image/jpeg"),
    ".webp": _Spec("image", "webp", "image/webp"),
    ".gif": _Spec("image", "gif", "image/gif"),
    **{ext: _Spec("text", lang, "text/plain") for ext, lang in CODE.items()},
}

ALLOWED_EXTENSIONS: frozenset[str] = frozenset(_SPECS)

_DESCRIPTIONS = {
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "pdf": "a PDF document",
    "tiff": "a TIFF image",
    "zip": "a ZIP archive (or an office document / JAR)",
    "gzip": "a gzip archive",
    "xz": "an xz archive",
    "7z": "a 7-Zip archive",
    "rar": "a RAR archive",
    "zstd": "a Zstandard archive",
    "ole": "a legacy Microsoft Office document",
    "sqlite": "an SQLite database",
    "elf": "an ELF executable",
    "pe": "a Windows executable (MZ/PE)",
    "macho": "a Mach-O executable",
    "class": "a Java class file or Mach-O universal binary",
    "wasm": "a WebAssembly module",
}
_EXECUTABLES = frozenset({"elf", "pe", "macho", "class", "wasm"})

_SIMPLE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"%PDF-", "pdf"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xca\xfe\xba\xbe", "class"),
    (b"\x00asm", "wasm"),
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sniff_binary(head: bytes) -> str | None:
    """The binary format ``head`` starts with, or ``None``."""
    if head.startswith(_PNG_SIGNATURE):
        return "png" if head[12:16] == b"IHDR" else "png?"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp" if head[12:15] == b"VP8" else "webp?"
    # "MZ" could begin a text file; a real DOS/PE header has NUL bytes right after it.
    if head.startswith(b"MZ") and b"\x00" in head[2:64]:
        return "pe"
    for signature, fmt in _SIMPLE_SIGNATURES:
        if head.startswith(signature):
            return fmt
    return None


# Markup sniffing, on decoded text with the BOM and leading whitespace removed.
_DOCUMENT_MARKUP = re.compile(r"<(?:!doctype|html|svg|\?xml|script)", re.IGNORECASE)
# WHATWG MIME Sniffing "identify an unknown MIME type", HTML patterns: tag + space or ">".
_HTML_SNIFF = re.compile(
    r"<(?:head|body|iframe|div|p|a|b|br|h1|table|font|style|title)(?:[\s>]|$)|<!--",
    re.IGNORECASE,
)


def _sniff_markup(text: str, *, strict: bool) -> bool:
    start = text.lstrip("\ufeff \t\r\n\f\v")[:64]
    if _DOCUMENT_MARKUP.match(start):
        return True
    return strict and _HTML_SNIFF.match(start) is not None


def _extension(filename: str) -> str:
    """The lowercase extension of the name the file will be stored under ('' if none)."""
    name = sanitize_filename(filename)
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem else ""


def _text_encoding(head: bytes) -> str:
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise RejectedFile("unsupported_encoding", "UTF-32 text is not supported; use UTF-8")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    return "utf-8"


def _charset(encoding: str) -> str:
    return "utf-16" if encoding == "utf-16" else "utf-8"


def _checking_codec(encoding: str) -> str:
    # For checking, a UTF-8 BOM is just U+FEFF (plain "utf-8" decodes it), and error
    # offsets then count from byte 0 ("utf-8-sig" would count from after the BOM).
    return "utf-8" if encoding == "utf-8-sig" else encoding


def _decode_head(head: bytes, encoding: str) -> str:
    """Decode ``head``.

    A head shorter than ``HEAD_SIZE`` is the whole file, so it must end on a complete
    character; a full-size head may end in the middle of one.
    """
    decoder = codecs.getincrementaldecoder(_checking_codec(encoding))(errors="strict")
    try:
        return decoder.decode(head, final=len(head) < HEAD_SIZE)
    except UnicodeDecodeError as exc:
        raise _invalid_encoding(encoding, exc.start) from exc


def _invalid_encoding(encoding: str, offset: int) -> RejectedFile:
    label = "UTF-16" if encoding == "utf-16" else "UTF-8"
    return RejectedFile(
        "invalid_encoding",
        f"text is not valid {label} (at byte {offset}); save the file as UTF-8",
    )


def _nul_bytes(offset: int | None = None) -> RejectedFile:
    where = f" (at character {offset})" if offset is not None else ""
    return RejectedFile(
        "nul_bytes",
        f"text contains NUL bytes{where}: a binary file, or UTF-16 without a byte-order mark",
    )


def detect(head: bytes, filename: str) -> FileType:
    """Classify an upload from its first bytes and its name; raise ``RejectedFile``.

    ``head`` is the first ``HEAD_SIZE`` bytes, or the whole file when smaller (a shorter
    head is taken to be the whole file: it must not end inside a multi-byte character).
    """
    if not head:
        raise RejectedFile("empty_file", "the file is empty")
    ext = _extension(filename)
    spec = _SPECS.get(ext)
    if spec is None:
        shown = f"{ext!r} files are" if ext else "files without an extension are"
        raise RejectedFile(
            "extension_not_allowed",
            f"{shown} not accepted; allowed: {', '.join(sorted(ALLOWED_EXTENSIONS))}",
        )

    actual = _sniff_binary(head)
    if actual in _EXECUTABLES:
        raise RejectedFile(
            "executable_content", f"the file is {_DESCRIPTIONS[actual]}, which is not accepted"
        )

    if spec.kind != "text":
        if actual == spec.format:
            return FileType(spec.kind, spec.mime, ext, spec.format)
        expected = _DESCRIPTIONS[spec.format]
        if actual in _DESCRIPTIONS:
            found = f"is {_DESCRIPTIONS[actual]}"
        elif _sniff_markup(head.removeprefix(codecs.BOM_UTF8)[:256].decode("latin-1"), strict=True):
            found = "is an HTML/SVG/XML document"
        elif actual is not None:  # "png?" / "webp?": signature without the required chunk
            found = f"is a malformed {actual.rstrip('?').upper()}"
        else:
            found = "does not start with the expected signature"
        raise RejectedFile(
            "content_mismatch", f"a {ext} file must be {expected}, but this file {found}"
        )

    if actual is not None:
        found = _DESCRIPTIONS.get(actual.rstrip("?"), "a binary file")
        raise RejectedFile(
            "content_mismatch", f"a {ext} file must be text, but this file is {found}"
        )

    encoding = _text_encoding(head)
    if spec.json and encoding == "utf-16":
        raise RejectedFile("unsupported_encoding", "JSON must be encoded as UTF-8 (RFC 8259)")
    if encoding != "utf-16" and b"\x00" in head:
        raise _nul_bytes(head.index(b"\x00"))
    text = _decode_head(head, encoding)
    if "\x00" in text:
        raise _nul_bytes(text.index("\x00"))

    if _sniff_markup(text, strict=spec.strict_markup):
        raise RejectedFile(
            "markup_not_allowed",
            f"a {ext} file must not start with HTML/SVG/XML markup "
            "(markup documents are not accepted)",
        )
    if spec.json:
        first = text.lstrip("\ufeff \t\r\n")[:1]
        if first not in ("{", "["):
            raise RejectedFile(
                "invalid_json", f"a {ext} file must start with '{{' or '[' (found {first!r})"
            )

    charset = _charset(encoding)
    content_type = spec.mime if spec.json else f"{spec.mime}; charset={charset}"
    return FileType(spec.kind, content_type, ext, spec.format, encoding)


def validate_text_stream(
    chunks: Iterable[bytes | bytearray | memoryview], *, encoding: str = "utf-8"
) -> None:
    """Check a whole text stream: valid ``encoding`` across chunk boundaries, no NUL.

    Pass ``FileType.encoding`` from ``detect``. Raises ``RejectedFile`` (``invalid_encoding``
    with the byte offset, or ``nul_bytes``); an empty stream is valid text (``detect``
    is what refuses empty files).
    """
    decoder = codecs.getincrementaldecoder(_checking_codec(encoding))(errors="strict")
    consumed = 0  # bytes fed to the decoder before the current chunk
    for chunk in chunks:
        data = bytes(chunk)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise _invalid_encoding(encoding, consumed - pending + exc.start) from exc
        if "\x00" in text:
            raise _nul_bytes()
        consumed += len(data)
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _invalid_encoding(encoding, consumed - pending + exc.start) from exc


def _read_chunks(path: Path, chunk_size: int) -> Iterable[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def validate_file(path: Path, filename: str) -> FileType:
    """``detect`` on the head of the file at ``path``, then for text the whole content."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(HEAD_SIZE)
    file_type = detect(head, filename)
    if file_type.kind == "text":
        assert file_type.encoding is not None
        validate_text_stream(_read_chunks(path, STREAM_CHUNK_SIZE), encoding=file_type.encoding)
    return file_type
