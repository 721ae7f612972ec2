"""Helpers for the uploads API tests: sample files, multipart bodies, disk inspection."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from tests.uploads.test_extract import make_pdf
from tests.uploads.test_filetypes import ELF, HTML, JPEG, SVG, png_1x1

__all__ = [
    "ELF",
    "HTML",
    "JPEG",
    "SVG",
    "URL",
    "files_in",
    "make_pdf",
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
