"""Text extraction from accepted uploads, to put into a chat's context.

Plain Python (no Django). Text files are decoded with the codec ``detect`` chose (a BOM is
dropped, newlines are normalised to ``\\n``): cheap, as a file is at most
``UPLOAD_MAX_BYTES``. PDFs are read page by page with pypdf, stopping as soon as ``max_chars``
is exceeded or ``max_pages`` pages are read. Images are not text: they go to vision models
as images, so asking for their text is an error.

A PDF with no text layer (a scan) gives an empty ``text``, not an error: the caller decides
what to tell the user. pypdf can burn minutes of CPU and gigabytes on a hostile PDF of a few
kilobytes, whatever the caps: never call ``extract_pdf`` in a web process, only through
``uploads.sandbox`` (a child process with CPU, memory and wall-clock limits). ``MemoryError``
is never turned into an ``ExtractionError``: the sandbox reports it as the memory limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from uploads.filetypes import FileType

__all__ = ["ExtractedText", "ExtractionError", "extract_pdf", "extract_text"]

READ_CHUNK_CHARS = 64 * 1024
PAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class ExtractedText:
    #: At most ``max_chars`` characters.
    text: str
    #: True when the document has more text than ``text`` (a PDF stopped at ``max_pages``:
    #: may have more).
    truncated: bool
    #: Characters in the whole document (text files: always; PDFs: when read to the
    #: end). ``None`` when a PDF was not read to the end, so the total is unknown.
    chars_total: int | None
    #: For PDFs: pages read (at most ``max_pages``) and pages in the document.
    pages_read: int | None = None
    pages_total: int | None = None


class ExtractionError(Exception):
    """Text could not be extracted; ``code`` is stable, ``message`` is for people.

    Codes: ``not_text`` (an image), ``invalid_encoding``, ``pdf_encrypted``, ``pdf_invalid``;
    ``uploads.sandbox`` and ``uploads.services`` add their own (the limits, ``no_text``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def extract_text(
    path: Path, file_type: FileType, *, max_chars: int, max_pages: int | None = None
) -> ExtractedText:
    """Extract up to ``max_chars`` characters (PDF: from at most ``max_pages`` pages)."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if file_type.kind == "text":
        return _extract_plain(Path(path), file_type.encoding or "utf-8", max_chars)
    if file_type.kind == "pdf":
        return extract_pdf(Path(path), max_chars=max_chars, max_pages=max_pages)
    raise ExtractionError(
        "not_text",
        f"{file_type.content_type} files are sent to the model as images, not as text",
    )


def _extract_plain(path: Path, encoding: str, max_chars: int) -> ExtractedText:
    # "utf-8-sig" and "utf-16" drop the BOM; newline=None turns \r\n and \r into \n.
    try:
        with path.open("r", encoding=encoding, errors="strict", newline=None) as fh:
            text = fh.read(max_chars)
            total = len(text)
            while rest := fh.read(READ_CHUNK_CHARS):
                total += len(rest)
    except UnicodeDecodeError as exc:
        raise ExtractionError(
            "invalid_encoding", f"the file is not valid text ({encoding}): {exc.reason}"
        ) from exc
    return ExtractedText(text=text, truncated=total > len(text), chars_total=total)


def _open_pdf(source: Path | BinaryIO) -> PdfReader:
    try:
        reader = PdfReader(source)
        if reader.is_encrypted:
            # Many PDFs are encrypted with only an owner password ("no printing" etc.) and
            # an empty user password: any viewer opens them, so do we.
            if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise ExtractionError(
                    "pdf_encrypted",
                    "the PDF is protected by a password; upload a copy without one",
                )
    except (ExtractionError, MemoryError):
        raise
    except (FileNotDecryptedError, DependencyError) as exc:
        raise ExtractionError(
            "pdf_encrypted", f"the PDF's encryption is not supported: {exc}"
        ) from exc
    except Exception as exc:  # pypdf raises many kinds of errors on malformed input
        raise ExtractionError("pdf_invalid", f"the PDF cannot be read: {exc}") from exc
    return reader


def extract_pdf(
    source: Path | BinaryIO, *, max_chars: int, max_pages: int | None = None
) -> ExtractedText:
    """The text of a PDF (a path or a seekable binary file): at most ``max_chars`` characters
    from at most ``max_pages`` pages.

    Stopping at ``max_pages`` matters for pages that give no text (pypdf parses their
    content anyway): without it, the character cap never stops a PDF of empty pages. A PDF
    stopped by either cap is ``truncated``. Run it in ``uploads.sandbox``, never in-process.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if max_pages is not None and max_pages < 1:
        raise ValueError("max_pages must be positive")
    reader = _open_pdf(source)
    try:
        pages = reader.pages
        pages_total = len(pages)
    except MemoryError:
        raise
    except Exception as exc:
        raise ExtractionError("pdf_invalid", f"the PDF's page tree cannot be read: {exc}") from exc

    parts: list[str] = []
    length = 0
    pages_read = 0
    last = pages_total if max_pages is None else min(pages_total, max_pages)
    for index in range(last):
        if length > max_chars:
            break
        try:
            page_text = (pages[index].extract_text() or "").strip()
        except MemoryError:
            raise
        except FileNotDecryptedError as exc:
            raise ExtractionError("pdf_encrypted", f"the PDF is encrypted: {exc}") from exc
        except Exception as exc:
            raise ExtractionError(
                "pdf_invalid", f"page {index + 1} of the PDF cannot be read: {exc}"
            ) from exc
        pages_read += 1
        if page_text:
            if parts:
                parts.append(PAGE_SEPARATOR)
                length += len(PAGE_SEPARATOR)
            parts.append(page_text)
            length += len(page_text)

    text = "".join(parts)
    complete = pages_read == pages_total
    return ExtractedText(
        text=text[:max_chars],
        truncated=length > max_chars or not complete,
        chars_total=length if complete else None,
        pages_read=pages_read,
        pages_total=pages_total,
    )
