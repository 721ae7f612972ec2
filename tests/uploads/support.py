"""Helpers for the uploads API tests: sample files, multipart bodies, disk inspection."""

from __future__ import annotations

import hashlib
import io
import os
import re
import zlib
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, StreamObject

from tests.uploads.test_extract import make_pdf
from tests.uploads.test_filetypes import ELF, HTML, JPEG, SVG, png_1x1

__all__ = [
    "ELF",
    "HTML",
    "JPEG",
    "SVG",
    "URL",
    "files_in",
    "make_inflating_pdf",
    "make_pdf",
    "make_pdf_sharing_one_stream",
    "multipart",
    "png_1x1",
    "post_file",
    "post_raw",
    "sha256",
]

URL = "/api/uploads/"
STORED_NAME = re.compile(r"[0-9a-f]{32}_[A-Za-z0-9_][A-Za-z0-9._-]*")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def post_file(client, name: str, content: bytes, content_type: str = "application/octet-stream"):
    upload = SimpleUploadedFile(name, content, content_type=content_type)
    return client.post(URL, {"file": upload}, format="multipart")


def multipart(parts: list[tuple[str, bytes | str, bytes]], boundary: str = "XyZzY-boundary"):
    """A multipart body built by hand: the test client would clean up hostile file names.

    ``parts`` holds ``(field, filename, content)``; the filename goes verbatim into the
    header (``""`` for a plain form field).
    """
    out = bytearray()
    for field, filename, content in parts:
        name = filename.encode() if isinstance(filename, str) else filename
        out += f"--{boundary}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{field}"'.encode()
        if name:
            disposition += b'; filename="' + name + b'"'
        out += disposition + b"\r\n"
        if name:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post_raw(client, body: bytes, content_type: str, **extra):
    return client.generic("POST", URL, body, content_type=content_type, **extra)


def files_in(directory: Path) -> list[Path]:
    """Every regular file under ``directory`` (recursively), hidden ones included."""
    if not directory.exists():
        return []
    return sorted(Path(root) / name for root, _, names in os.walk(directory) for name in names)


# -- hostile PDFs: small files that cost pypdf a lot ----------------------------------------

#: A text operator that draws nothing: pypdf still parses and interprets every one.
EMPTY_TEXT = b"BT () Tj ET\n"


def _helvetica_resources() -> DictionaryObject:
    # Without a font pypdf skips the page (no text possible): hostile files have one.
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    return DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})


def _write(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_pdf_sharing_one_stream(pages: int, stream_bytes: int) -> bytes:
    """``pages`` pages whose content is one shared, compressed stream of ``stream_bytes``
    bytes of text operators that draw nothing: a few kilobytes on disk (7 KB for 2 MB), and
    pypdf parses the stream again for every page (about a quarter of a CPU-second per page
    for 200 KB)."""
    writer = PdfWriter()
    content = DecodedStreamObject()
    content.set_data(EMPTY_TEXT * (stream_bytes // len(EMPTY_TEXT)))
    shared = writer._add_object(content.flate_encode(level=9))
    for _ in range(pages):
        page = writer.add_blank_page(width=595, height=842)
        page[NameObject("/Contents")] = shared
        page[NameObject("/Resources")] = _helvetica_resources()
    return _write(writer)


def make_inflating_pdf(inflated_bytes: int) -> bytes:
    """One page whose compressed content inflates a thousandfold (70 MB from ~70 KB), all of
    it text operators that draw nothing."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=595, height=842)
    content = StreamObject()
    content.set_data(zlib.compress(EMPTY_TEXT * (inflated_bytes // len(EMPTY_TEXT)), 9))
    content[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = writer._add_object(content)
    page[NameObject("/Resources")] = _helvetica_resources()
    return _write(writer)
