"""uploads.filetypes: the allowlist, checked by extension and content together."""

from __future__ import annotations

import codecs
import io
import struct
import zlib
from pathlib import Path

import pytest
from pypdf import PdfWriter

from uploads.filetypes import (
    ALLOWED_EXTENSIONS,
    HEAD_SIZE,
    RejectedFile,
    detect,
    validate_file,
    validate_text_stream,
)

# -- real minimal samples ---------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_1x1() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff")  # filter 0, one red pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    b"\xff\xdb\x00\x43\x00" + bytes(64) + b"\xff\xd9"
)
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
GIF87 = b"GIF87a" + GIF[6:]
_VP8L = b"VP8L" + struct.pack("<I", 5) + b"\x2f\x00\x00\x00\x00" + b"\x00"
WEBP = b"RIFF" + struct.pack("<I", 4 + len(_VP8L)) + b"WEBP" + _VP8L
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00"
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48)
MACHO = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + bytes(24)
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(20)
HTML = b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'
XML_SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'


def pdf_bytes() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


PDF = pdf_bytes()


PLAIN = "text/plain; charset=utf-8"
MARKDOWN = "text/markdown; charset=utf-8"


@pytest.mark.parametrize(
    ("filename", "content", "kind", "content_type", "fmt"),
    [
        ("a.png", png_1x1(), "image", "image/png", "png"),
        ("PHOTO.PNG", png_1x1(), "image", "image/png", "png"),
        ("a.jpg", JPEG, "image", "image/jpeg", "jpeg"),
        ("a.jpeg", JPEG, "image", "image/jpeg", "jpeg"),
        ("a.gif", GIF, "image", "image/gif", "gif"),
        ("a.gif", GIF87, "image", "image/gif", "gif"),
        ("a.webp", WEBP, "image", "image/webp", "webp"),
        ("a.pdf", PDF, "pdf", "application/pdf", "pdf"),
        ("notes.txt", b"hello\n", "text", PLAIN, "text"),
        ("app.log", b"\x1b[31mERROR\x1b[0m boom\r\n", "text", PLAIN, "text"),
        ("README.md", b"# Title\n", "text", MARKDOWN, "markdown"),
        ("x.markdown", b"*hi*", "text", MARKDOWN, "markdown"),
        ("x.rst", b"Title\n=====\n", "text", "text/x-rst; charset=utf-8", "rst"),
        ("data.csv", b"a,b\n1,2\n", "text", "text/csv; charset=utf-8", "csv"),
        ("data.tsv", b"a\tb\n", "text", "text/tab-separated-values; charset=utf-8", "tsv"),
        ("data.json", b'  {"a": 1}', "text", "application/json", "json"),
        ("data.json", b"[1, 2]", "text", "application/json", "json"),
        ("data.jsonl", b'{"a": 1}\n{"a": 2}\n', "text", "application/jsonl", "jsonl"),
        ("main.py", b"#!/usr/bin/env python3\nprint('hi')\n", "text", PLAIN, "python"),
        ("app.js", b"console.log(1)", "text", PLAIN, "javascript"),
        ("lib.rs", b"fn main() {}", "text", PLAIN, "rust"),
        ("run.sh", b"#!/bin/sh\necho hi\n", "text", PLAIN, "bash"),
        ("q.sql", b"SELECT 1;", "text", PLAIN, "sql"),
        ("x.txt", "caf\u00e9 \u4e2d\u6587 \U0001f600".encode(), "text", PLAIN, "text"),
        # "MZ" is only an executable when a DOS header follows
        ("x.txt", b"MZ hotels, rooms and rates\n", "text", PLAIN, "text"),
        # Markdown and code may open with inline HTML that READMEs commonly use
        (
            "README.md",
            b'<p align="center"><img src="logo.png"></p>\n',
            "text",
            MARKDOWN,
            "markdown",
        ),
        ("README.md", b"<!-- badges -->\n# Project\n", "text", MARKDOWN, "markdown"),
        (
            "README.md",
            b"# Embed\n\n<html><script>x()</script></html>\n",
            "text",
            MARKDOWN,
            "markdown",
        ),
        ("notes.txt", b"Use <html> tags like this.\n", "text", PLAIN, "text"),
    ],
)
def test_accepted(filename: str, content: bytes, kind: str, content_type: str, fmt: str) -> None:
    file_type = detect(content[:HEAD_SIZE], filename)
    assert file_type.kind == kind
    assert file_type.content_type == content_type
    assert file_type.format == fmt
    assert file_type.extension == "." + filename.rsplit(".", 1)[1].lower()
    assert (file_type.encoding is None) == (kind != "text")


def test_utf8_bom_is_accepted() -> None:
    file_type = detect(codecs.BOM_UTF8 + b"hello", "a.txt")
    assert file_type.encoding == "utf-8-sig"
    assert file_type.content_type == "text/plain; charset=utf-8"
    assert detect(codecs.BOM_UTF8 + b'{"a": 1}', "a.json").content_type == "application/json"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_accepted(codec: str) -> None:
    bom = codecs.BOM_UTF16_LE if codec == "utf-16-le" else codecs.BOM_UTF16_BE
    file_type = detect(bom + "Hello, caf\u00e9\r\n".encode(codec), "powershell.log")
    assert file_type.encoding == "utf-16"
    assert file_type.content_type == "text/plain; charset=utf-16"


def test_a_multibyte_character_cut_by_the_head_is_accepted() -> None:
    content = ("a" * (HEAD_SIZE - 1) + "\u00e9").encode()  # the 2-byte char straddles 8 KiB
    assert detect(content[:HEAD_SIZE], "x.txt").kind == "text"


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        # empty
        ("a.txt", b"", "empty_file"),
        ("a.png", b"", "empty_file"),
        # extension not allowed (markup, executables, scripts, archives, no extension)
        ("page.html", b"hello", "extension_not_allowed"),
        ("page.htm", b"hello", "extension_not_allowed"),
        ("image.svg", SVG, "extension_not_allowed"),
        ("data.xml", b"<a/>", "extension_not_allowed"),
        ("page.xhtml", b"hello", "extension_not_allowed"),
        ("setup.exe", PE, "extension_not_allowed"),
        ("index.php", b"<?php echo 1;", "extension_not_allowed"),
        ("run.bat", b"echo hi", "extension_not_allowed"),
        ("a.tar.gz", b"\x1f\x8b\x08", "extension_not_allowed"),
        ("Makefile", b"all:\n", "extension_not_allowed"),
        (".bashrc", b"alias x=y", "extension_not_allowed"),  # stored as "bashrc"
        ("x.txt\u202egnp.exe", b"hello", "extension_not_allowed"),  # really .exe
        # content does not match the extension
        ("cat.png", HTML, "content_mismatch"),
        ("cat.png", SVG, "content_mismatch"),
        ("cat.png", XML_SVG, "content_mismatch"),
        ("cat.png", JPEG, "content_mismatch"),
        ("cat.jpg", png_1x1(), "content_mismatch"),
        ("cat.jpg", PDF, "content_mismatch"),
        ("cat.webp", b"RIFF\x24\x00\x00\x00WAVEfmt ", "content_mismatch"),  # a WAV
        ("cat.webp", b"RIFF\x24\x00\x00\x00WEBPXXXX", "content_mismatch"),  # no VP8 chunk
        ("cat.png", b"\x89PNG\r\n\x1a\n" + bytes(20), "content_mismatch"),  # no IHDR
        ("doc.pdf", b"<html>%PDF-1.4", "content_mismatch"),  # %PDF- must come first
        ("doc.pdf", b"\n%PDF-1.4\n", "content_mismatch"),
        ("doc.pdf", png_1x1(), "content_mismatch"),
        ("doc.pdf", ZIP, "content_mismatch"),
        ("notes.txt", png_1x1(), "content_mismatch"),
        ("notes.txt", PDF, "content_mismatch"),
        ("notes.md", GIF, "content_mismatch"),
        ("report.csv", ZIP, "content_mismatch"),  # an .xlsx renamed
        ("evil.png%00.txt", png_1x1(), "content_mismatch"),  # stored as evil.png.txt
        ("x.png.", b"hello", "content_mismatch"),  # stored as x.png
        # executables, under any name
        ("readme.txt", ELF, "executable_content"),
        ("readme.txt", PE, "executable_content"),
        ("cat.png", PE, "executable_content"),
        ("main.py", MACHO, "executable_content"),
        ("doc.pdf", ELF, "executable_content"),
        ("x.json", b"\x00asm\x01\x00\x00\x00", "executable_content"),
        # markup documents under a text name
        ("notes.txt", HTML, "markup_not_allowed"),
        ("notes.txt", b"  \r\n<HTML><body>x", "markup_not_allowed"),
        ("notes.txt", codecs.BOM_UTF8 + b"<svg onload=alert(1)>", "markup_not_allowed"),
        ("notes.log", b"<script>alert(1)</script>", "markup_not_allowed"),
        ("data.csv", XML_SVG, "markup_not_allowed"),
        ("README.md", SVG, "markup_not_allowed"),
        ("README.md", HTML, "markup_not_allowed"),
        ("README.markdown", b"<?xml version='1.0'?><x/>", "markup_not_allowed"),
        ("app.js", b"<script>alert(1)</script>", "markup_not_allowed"),
        ("main.py", b"\n\n<!doctype html>", "markup_not_allowed"),
        # ...and what browsers sniff as HTML, under a plain text name
        ("notes.txt", b"<p>hello</p>", "markup_not_allowed"),
        ("notes.txt", b"<a href='javascript:alert(1)'>x</a>", "markup_not_allowed"),
        ("notes.txt", b"<iframe src=x>", "markup_not_allowed"),
        ("notes.txt", b"<!-- comment --><b>x</b>", "markup_not_allowed"),
        ("data.tsv", b"<table>", "markup_not_allowed"),
        # NUL bytes
        ("notes.txt", b"hello\x00world", "nul_bytes"),
        ("blob.txt", b"\x00\x01\x02\xff\xfe\x80", "nul_bytes"),  # binary: NUL reported first
        ("main.py", b"print(1)\n\x00", "nul_bytes"),
        ("notes.txt", "hello".encode("utf-16-le"), "nul_bytes"),  # UTF-16 without BOM
        ("notes.txt", codecs.BOM_UTF16_LE + "a\x00b".encode("utf-16-le"), "nul_bytes"),
        # encoding
        ("notes.txt", "caf\u00e9".encode("latin-1"), "invalid_encoding"),
        ("notes.txt", b"ok \xff\xfe", "invalid_encoding"),
        ("notes.txt", b"\xc0\xaf", "invalid_encoding"),  # overlong "/"
        ("notes.txt", b"abc\xe2\x82", "invalid_encoding"),  # whole file, ends mid-character
        ("notes.txt", b"\xed\xa0\x80", "invalid_encoding"),  # UTF-16 surrogate in UTF-8
        ("notes.txt", codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", "invalid_encoding"),  # lone surrogate
        ("notes.txt", codecs.BOM_UTF32_LE + "hi".encode("utf-32-le"), "unsupported_encoding"),
        ("notes.txt", codecs.BOM_UTF32_BE + "hi".encode("utf-32-be"), "unsupported_encoding"),
        ("data.json", codecs.BOM_UTF16_LE + '{"a": 1}'.encode("utf-16-le"), "unsupported_encoding"),
        # JSON light check
        ("data.json", b"hello", "invalid_json"),
        ("data.json", b"  \n", "invalid_json"),
        ("data.json", b"'a'", "invalid_json"),
        ("data.jsonl", b"1\n2\n", "invalid_json"),
    ],
)
def test_rejected(filename: str, content: bytes, code: str) -> None:
    with pytest.raises(RejectedFile) as info:
        detect(content[:HEAD_SIZE], filename)
    assert info.value.code == code, info.value.message
    assert info.value.message
    assert str(info.value).startswith(code + ": ")


def test_rejection_messages_are_precise() -> None:
    def message(content: bytes, filename: str) -> str:
        with pytest.raises(RejectedFile) as info:
            detect(content, filename)
        return info.value.message

    assert "HTML/SVG/XML document" in message(SVG, "cat.png")
    assert "a PNG image" in message(SVG, "cat.png")
    assert "is a PDF document" in message(PDF, "cat.jpg")
    assert "is a PNG image" in message(png_1x1(), "notes.txt")
    assert "ELF executable" in message(ELF, "readme.txt")
    assert "Windows executable" in message(PE, "readme.txt")
    assert "at byte 3" in message(b"abc\xff", "notes.txt")
    assert "UTF-16 without a byte-order mark" in message("hi".encode("utf-16-le"), "a.txt")
    assert "'.svg'" in message(SVG, "a.svg")
    assert "without an extension" in message(b"x", "Makefile")


def test_allowlist_has_no_markup_or_server_side_script_types() -> None:
    forbidden = {".html", ".htm", ".xhtml", ".svg", ".svgz", ".xml", ".xsl", ".php", ".phtml"}
    forbidden |= {".asp", ".aspx", ".jsp", ".cgi", ".pl", ".bat", ".cmd", ".ps1", ".vbs", ".exe"}
    assert not forbidden & ALLOWED_EXTENSIONS
    assert {".txt", ".md", ".csv", ".json", ".pdf", ".png", ".jpg", ".webp", ".gif"} <= (
        ALLOWED_EXTENSIONS
    )


# -- validate_text_stream ---------------------------------------------------------------


def _split_everywhere(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


@pytest.mark.parametrize("chunks", _split_everywhere("a\u00e9\u4e2d\U0001f600z".encode()))
def test_stream_accepts_utf8_split_at_any_byte(chunks: list[bytes]) -> None:
    validate_text_stream(chunks)


def test_stream_accepts_one_byte_chunks_and_empty_chunks() -> None:
    data = ("\U0001f600\u4e2d\u00e9" * 100).encode()
    validate_text_stream([data[i : i + 1] for i in range(len(data))])
    validate_text_stream([b"", b"abc", b"", b"\xf0\x9f", b"", b"\x98\x80", b""])
    validate_text_stream([])
    buffers: list[bytes | bytearray | memoryview] = [bytearray(b"ab"), memoryview(b"\xc3\xa9")]
    validate_text_stream(iter(buffers))


@pytest.mark.parametrize(
    ("chunks", "offset"),
    [
        ([b"ok", b"\xff"], 2),
        ([b"abc\xff"], 3),
        ([b"ab\xe2", b"\x28\xa1"], 2),  # invalid continuation in the next chunk
        ([b"ab\xe2\x82", b"x"], 2),
        ([b"abc\xe2\x82"], 3),  # truncated at the very end
        ([b"a" * 10, b"b" * 10, b"\xf0\x9f\x98"], 20),
        ([b"\xc0\xaf"], 0),  # overlong
        ([codecs.BOM_UTF8 + b"a\xff"], 4),  # counted from byte 0, BOM included
    ],
)
def test_stream_rejects_invalid_utf8_with_its_offset(chunks: list[bytes], offset: int) -> None:
    with pytest.raises(RejectedFile) as info:
        validate_text_stream(chunks)
    assert info.value.code == "invalid_encoding"
    assert f"at byte {offset})" in info.value.message


def test_stream_offsets_with_a_bom_codec() -> None:
    with pytest.raises(RejectedFile) as info:
        validate_text_stream([codecs.BOM_UTF8, b"ab", b"\xff"], encoding="utf-8-sig")
    assert "at byte 5)" in info.value.message


def test_stream_rejects_nul_in_a_later_chunk() -> None:
    with pytest.raises(RejectedFile) as info:
        validate_text_stream([b"a" * 100, b"b\x00c"])
    assert info.value.code == "nul_bytes"


def test_stream_utf16() -> None:
    data = codecs.BOM_UTF16_LE + "h\u00e9llo \U0001f600".encode("utf-16-le")
    for chunks in _split_everywhere(data):
        validate_text_stream(chunks, encoding="utf-16")
    with pytest.raises(RejectedFile) as info:
        validate_text_stream([data + b"a"], encoding="utf-16")  # odd length
    assert info.value.code == "invalid_encoding"
    with pytest.raises(RejectedFile) as info:
        validate_text_stream([data, "\x00".encode("utf-16-le")], encoding="utf-16")
    assert info.value.code == "nul_bytes"


# -- validate_file ----------------------------------------------------------------------


def test_validate_file_checks_beyond_the_head(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"a" * (3 * HEAD_SIZE) + "\u00e9".encode())
    assert validate_file(good, "good.txt").content_type == "text/plain; charset=utf-8"

    late_invalid = tmp_path / "late.txt"
    late_invalid.write_bytes(b"a" * (3 * HEAD_SIZE) + b"\xff")
    assert detect(late_invalid.read_bytes()[:HEAD_SIZE], "late.txt").kind == "text"
    with pytest.raises(RejectedFile) as info:
        validate_file(late_invalid, "late.txt")
    assert info.value.code == "invalid_encoding"
    assert f"at byte {3 * HEAD_SIZE})" in info.value.message

    late_nul = tmp_path / "nul.txt"
    late_nul.write_bytes(b"a" * (2 * HEAD_SIZE) + b"\x00")
    with pytest.raises(RejectedFile) as info:
        validate_file(late_nul, "nul.txt")
    assert info.value.code == "nul_bytes"

    truncated = tmp_path / "truncated.txt"
    truncated.write_bytes(b"abc\xe2\x82")
    with pytest.raises(RejectedFile) as info:
        validate_file(truncated, "truncated.txt")
    assert info.value.code == "invalid_encoding"


def test_validate_file_images_and_utf16(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png_1x1() + b"\xff\x00" * HEAD_SIZE)  # binary data is fine in an image
    assert validate_file(image, "a.png").kind == "image"

    utf16 = tmp_path / "a.txt"
    utf16.write_bytes(codecs.BOM_UTF16_BE + ("\u00e9" * HEAD_SIZE).encode("utf-16-be"))
    assert validate_file(utf16, "a.txt").encoding == "utf-16"
