"""uploads.filenames: sanitising hostile names, safe joins, Content-Disposition."""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest

from uploads.filenames import (
    DEFAULT_MAX_LENGTH,
    UnsafePath,
    content_disposition,
    safe_join,
    sanitize_filename,
    stored_name,
)

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")

HOSTILE_NAMES = [
    # traversal, in every encoding
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2E%2E%5C%2E%2E%5Cboot.ini",
    "%252e%252e%252fetc%252fpasswd",
    "%25252e%25252e%25252f",
    "..%c0%af..%c0%afetc%c0%afpasswd",
    "..%c1%9c..%c1%9cboot.ini",
    "....//....//etc/passwd",
    "..././..././",
    "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",  # fullwidth ../../etc/passwd
    "\uff05\uff12\uff45\uff05\uff12\uff45\uff05\uff12\uff46",  # fullwidth %2e%2e%2f
    "..\u2215..\u2215etc\u2215passwd",  # division slash
    "..\u2044..\u2044etc\u2044passwd",  # fraction slash
    "..\ufe68..\ufe68x",  # small reverse solidus (NFKC -> backslash)
    "%2e%2e",
    # absolute paths
    "/etc/passwd",
    "C:\\Windows\\system32\\cmd.exe",
    "\\\\server\\share\\x",
    "\\\\?\\C:\\x",
    "C:evil.txt",
    "file:///etc/passwd",
    "~/.ssh/authorized_keys",
    "a/b/c/",
    # Windows reserved device names and streams
    "CON",
    "nul.txt",
    "com1.py",
    "LPT9",
    "aux.tar.gz",
    "COM\u00b9.txt",  # superscript one, NFKC -> COM1
    "name.txt::$DATA",
    # length
    "x" * 1000,
    "x" * 1000 + ".txt",
    "y" * 300 + "." + "z" * 300,
    "%41" * 1000,
    # dots
    ".",
    "..",
    "...",
    ".bashrc",
    ".htaccess",
    "..txt",
    # NUL, controls, newlines, bidi and other invisible characters
    "a\x00.txt",
    "\x00",
    "evil.php\x00.jpg",
    "a\x01\x02\x1b[31m.txt",
    "a\nb.txt",
    "report\r\nSet-Cookie: x.pdf",
    "evil\u202egnp.exe",
    "\u202e\u2066\u200b",
    "\ufeff.txt",
    "\udcff\udc80.txt",  # lone surrogates (surrogateescape'd bytes)
    # non-ASCII
    "\U0001f600\U0001f600.png",
    "\u4e2d\u6587\u6587\u4ef6\u540d.txt",
    "\u0645\u0644\u0641.pdf",
    # whitespace and empty
    "   ",
    "\t\n\u3000",
    "",
    # shell and markup
    "-rf --no-preserve-root",
    "$(rm -rf ~).txt",
    "`id`;|&.sh",
    "<script>alert(1)</script>.png",
    "\"quoted\" 'name'.txt",
]


@pytest.mark.parametrize("max_length", [DEFAULT_MAX_LENGTH, 16])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_name_is_sanitised(name: str, max_length: int) -> None:
    result = sanitize_filename(name, max_length=max_length)
    assert SAFE.match(result), result
    assert not result.startswith(".")
    assert not result.startswith("-")
    assert result not in {".", ".."}
    assert ".." not in result
    assert 1 <= len(result) <= max_length
    assert sanitize_filename(result, max_length=max_length) == result  # stable


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_name_is_stored_inside_root(name: str, tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    uid = uuid.uuid4().hex
    target = safe_join(root, stored_name(name, uid))
    assert target.parent == root.resolve()
    with open(target, "xb") as fh:
        fh.write(b"data")
    assert os.listdir(root) == [target.name]
    assert target.name.startswith(uid + "_")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("Report-2024_v2.final.PDF", "Report-2024_v2.final.PDF"),
        ("my file (1).txt", "my_file_1_.txt"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("%2e%2e%2fetc%2fpasswd", "passwd"),
        ("%252e%252e%252fetc%252fpasswd", "passwd"),
        ("\uff0e\uff0e\uff0fetc\uff0fpasswd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\Windows\\system32\\cmd.exe", "cmd.exe"),
        ("\\\\server\\share\\x", "x"),
        ("a/b/c/", "c"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1.py", "_com1.py"),
        ("aux.tar.gz", "_aux.tar.gz"),
        ("COM\u00b9.txt", "_COM1.txt"),
        ("console.txt", "console.txt"),  # only exact device names are reserved
        ("com10.txt", "com10.txt"),
        (".", "file"),
        ("..", "file"),
        ("...", "file"),
        ("", "file"),
        ("   ", "file"),
        (".bashrc", "bashrc"),
        (".htaccess", "htaccess"),
        ("a\x00.txt", "a.txt"),
        ("evil.php\x00.jpg", "evil.php.jpg"),
        ("a\nb.txt", "ab.txt"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # the real extension shows
        ("caf\u00e9 cr\u00e8me.txt", "cafe_creme.txt"),
        ("\U0001f600.png", "file.png"),
        ("\u4e2d\u6587.txt", "file.txt"),
        ("-rf.txt", "rf.txt"),
        ("a..b...txt", "a.b.txt"),
        ("__init__.py", "__init__.py"),
        ("50%off.txt", "50_off.txt"),
        ("file%20name.md", "file_name.md"),
    ],
)
def test_specific_results(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_truncation_keeps_the_extension() -> None:
    result = sanitize_filename("x" * 1000 + ".pdf")
    assert result == "x" * (DEFAULT_MAX_LENGTH - 4) + ".pdf"
    assert sanitize_filename("x" * 1000) == "x" * DEFAULT_MAX_LENGTH
    assert sanitize_filename("abcdefghijklmnop.md", max_length=12) == "abcdefghi.md"
    # An extension longer than half the limit is cut along with the rest.
    assert sanitize_filename("abcdefghijklmnop.markdown", max_length=12) == "abcdefghijkl"


def test_truncation_of_a_reserved_name_keeps_the_prefix() -> None:
    assert sanitize_filename("CON.txt", max_length=8) == "_CON.txt"
    assert sanitize_filename("nul" + "." * 20 + ".txt", max_length=8) == "_nul.txt"


def test_a_long_or_odd_extension_is_not_kept_apart() -> None:
    # 70 characters is no extension: cut as part of the name.
    long_ext = sanitize_filename("a" * 30 + "." + "b" * 70, max_length=40)
    assert long_ext == "a" * 30 + "." + "b" * 9
    assert sanitize_filename("archive.tar_gz") == "archive.tar_gz"


def test_truncated_stem_does_not_end_with_a_dot() -> None:
    # Cutting at a dot must not produce "aaaa..txt" (or a name ending in ".").
    result = sanitize_filename("a" * 115 + ".b.c.txt")
    assert ".." not in result and result.endswith(".txt") and len(result) <= 120


def test_max_length_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        sanitize_filename("x.txt", max_length=3)


def test_non_string_is_refused() -> None:
    with pytest.raises(TypeError):
        sanitize_filename(b"x.txt")  # type: ignore[arg-type]


def test_stored_name() -> None:
    uid = uuid.UUID(int=255).hex
    assert stored_name("my report.pdf", uid) == f"{uid}_my_report.pdf"
    assert stored_name("../../x", uid) == f"{uid}_x"


@pytest.mark.parametrize(
    "bad", ["", "../x", "A" * 32, "0" * 31, "0" * 33, "g" * 32, "0" * 31 + "/"]
)
def test_stored_name_refuses_a_bad_uuid(bad: str) -> None:
    with pytest.raises(ValueError):
        stored_name("x.txt", bad)


# -- safe_join -------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    return root


def test_safe_join_accepts_plain_and_nested_names(root: Path) -> None:
    assert safe_join(root, "a.txt") == root.resolve() / "a.txt"
    assert safe_join(root, "sub/a.txt") == root.resolve() / "sub" / "a.txt"


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x",
        "../root/x",  # back inside, but ".." is refused outright
        "a/../../x",
        "a/..",
        ".",
        "",
        "/etc/passwd",
        "//etc/passwd",
        "C:\\Windows\\x",
        "C:x",
        "..\\x",
        "a\x00b",
    ],
)
def test_safe_join_refuses(root: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_join(root, name)


def test_safe_join_refuses_an_absolute_path_even_inside_root(root: Path) -> None:
    with pytest.raises(UnsafePath):
        safe_join(root, str(root / "x.txt"))


def test_safe_join_refuses_a_symlinked_directory_pointing_outside(
    root: Path, tmp_path: Path
) -> None:
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(UnsafePath):
        safe_join(root, "link/secret.txt")
    with pytest.raises(UnsafePath):
        safe_join(root, "link/new.txt")


def test_safe_join_refuses_a_symlinked_file_pointing_outside(root: Path, tmp_path: Path) -> None:
    (root / "evil.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    with pytest.raises(UnsafePath):
        safe_join(root, "evil.txt")


def test_safe_join_refuses_a_dangling_symlink_pointing_outside(root: Path, tmp_path: Path) -> None:
    (root / "dangling.txt").symlink_to(tmp_path / "outside" / "not-yet.txt")
    with pytest.raises(UnsafePath):
        safe_join(root, "dangling.txt")


def test_safe_join_refuses_a_symlink_loop(root: Path) -> None:
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(UnsafePath):
        safe_join(root, "loop")


def test_safe_join_allows_a_symlink_inside_root(root: Path) -> None:
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert safe_join(root, "alias/a.txt") == root.resolve() / "real" / "a.txt"


def test_safe_join_allows_root_itself_to_be_a_symlink(root: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.symlink_to(root, target_is_directory=True)
    assert safe_join(media, "a.txt") == root.resolve() / "a.txt"


# -- content_disposition ------------------------------------------------------------------


def _extended(value: str) -> str:
    """The name a browser shows: the RFC 5987 ``filename*`` value, decoded."""
    match = re.search(r"; filename\*=UTF-8''([A-Za-z0-9%!#$&+.^_`|~-]*)$", value)
    assert match, value
    return unquote(match.group(1), encoding="utf-8", errors="strict")


def _fallback(value: str) -> str:
    match = re.search(r'filename="([^"]*)"', value)
    assert match, value
    return match.group(1)


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        'say "hi".txt',
        "back\\slash.txt",
        "r\u00e9sum\u00e9.pdf",
        "\u62a5\u544a.pdf",
        "\U0001f600 smile.png",
        "100% done; really.txt",
        "a'b.txt",
    ],
)
def test_content_disposition_round_trips_the_name(name: str) -> None:
    value = content_disposition(name)
    assert value.startswith("attachment; ")
    assert value.isascii()
    fallback = _fallback(value)
    assert '"' not in fallback and "\\" not in fallback and "%" not in fallback
    expected = name.replace("\\", "/").rsplit("/", 1)[-1]
    assert _extended(value) == expected


def test_content_disposition_fallback_values() -> None:
    assert _fallback(content_disposition('r\u00e9sum\u00e9 "v2".pdf')) == "resume _v2_.pdf"
    assert _fallback(content_disposition("\u62a5\u544a.pdf")) == "download.pdf"
    assert _fallback(content_disposition("report.pdf")) == "report.pdf"
    assert content_disposition("report.pdf") == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )


@pytest.mark.parametrize(
    "name",
    [
        "a\r\nSet-Cookie: session=evil.txt",
        "a\rb\nc.txt",
        'x.txt"; filename="evil.exe',
        "x\x00.txt",
        "evil\u202egnp.exe",
        "\u2028line\u2029sep.txt",
    ],
)
def test_content_disposition_cannot_be_broken_out_of(name: str) -> None:
    value = content_disposition(name)
    assert value.isascii()
    assert not any(ch in value for ch in "\r\n\x00")
    assert re.fullmatch(
        r"attachment; filename=\"[^\"\\]*\"; filename\*=UTF-8''[A-Za-z0-9%._~-]*", value
    )
    parsed = _extended(value)
    assert not any(ch in parsed for ch in "\r\n\x00\u202e")


def test_content_disposition_drops_directories_and_handles_empty_names() -> None:
    assert _extended(content_disposition("../../etc/passwd")) == "passwd"
    assert _extended(content_disposition("")) == "download"
    assert _extended(content_disposition("\u202e")) == "download"


def test_content_disposition_caps_the_length_keeping_the_extension() -> None:
    parsed = _extended(content_disposition("\u00e9" * 1000 + ".pdf"))
    assert len(parsed) <= 200 and parsed.endswith(".pdf")


def test_content_disposition_inline_and_invalid_disposition() -> None:
    assert content_disposition("a.png", "inline").startswith("inline; ")
    with pytest.raises(ValueError):
        content_disposition("a.png", "attachment; evil=1")


# -- compatibility forms of separators and dots (NFKC) -------------------------------------

FULLWIDTH_TRAVERSAL = "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx.txt"  # fullwidth ../../x.txt


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (FULLWIDTH_TRAVERSAL, "x.txt"),
        ("\uff0e\uff0e\uff3c\uff0e\uff0e\uff3cx.txt", "x.txt"),  # fullwidth backslash
        ("..\ufe68..\ufe68x.txt", "x.txt"),  # small reverse solidus
        ("a\u2100x.txt", "x.txt"),  # ℀ is "a/c" under NFKC
        ("dir\u2105x.txt", "x.txt"),  # ℅ is "c/o"
        ("x\uff0f\uff0e\uff0e", "x"),  # a last component of fullwidth dots is no name
        ("\uff0e\uff0e", "download"),
        ("\uff21\uff22\uff23 report.pdf", "ABC report.pdf"),  # fullwidth ABC: read as NFKC
        ("\u8cc7\u6599\uff081\uff09.pdf", "_(1).pdf"),  # fullwidth parentheses
    ],
)
def test_content_disposition_fallback_reads_names_as_nfkc(name: str, expected: str) -> None:
    fallback = _fallback(content_disposition(name))
    assert fallback == expected
    assert "/" not in fallback and "\\" not in fallback


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (FULLWIDTH_TRAVERSAL, "x.txt"),
        ("a\uff0fb\uff3cc\ufe68d.txt", "d.txt"),
        ("x\uff0f\uff0e\uff0e", "x"),
        ("\uff0e\uff0e", "download"),
        # Other compatibility forms are shown as the user wrote them.
        ("\uff21\uff22\uff23 report.pdf", "\uff21\uff22\uff23 report.pdf"),
        ("\u8cc7\u6599\uff081\uff09.pdf", "\u8cc7\u6599\uff081\uff09.pdf"),
    ],
)
def test_content_disposition_drops_fullwidth_directories(name: str, shown: str) -> None:
    assert _extended(content_disposition(name)) == shown


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_no_header_name_holds_a_directory_even_after_nfkc(name: str) -> None:
    value = content_disposition(name)
    for shown in (_fallback(value), _extended(value)):
        normalised = unicodedata.normalize("NFKC", shown)
        assert "/" not in normalised and "\\" not in normalised, (name, shown)
        assert normalised.strip(" .") and normalised not in {".", ".."}, (name, shown)


def test_the_stored_name_of_a_fullwidth_traversal() -> None:
    uid = uuid.UUID(int=1).hex
    assert sanitize_filename(FULLWIDTH_TRAVERSAL) == "x.txt"
    assert stored_name(FULLWIDTH_TRAVERSAL, uid) == f"{uid}_x.txt"
