"""Text extraction from accepted uploads, to put into a chat's context.

Plain Python (no Django). Text files are decoded with the codec ``detect`` chose (a BOM is
dropped, newlines are normalised to ``\\n``); PDFs are read page by page with pypdf,
stopping as soon as ``max_chars`` is exceeded. Images are not text: they go to vision
models as images, so asking for their text is an error.

A PDF with no text layer (a scan) gives an empty ``text``, not an error: the caller decides
what to tell the user. pypdf can be slow on hostile PDFs; call this from a worker or
thread with a time limit, not in the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from uploads.filetypes import FileType

__all__ = ["ExtractedText", "ExtractionError", "extract_text"]

READ_CHUNK_CHARS = 64 * 1024
PAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class ExtractedText:
    #: At most ``max_chars`` characters.
    text: str
    #: True when the document has more text than ``text``.
    truncated: bool
    #: Characters in the whole document (text files: always; PDFs: when read to the
    #: end). ``None`` when a PDF was not read to the end, so the total is unknown.
    chars_total: int | None
    #: For PDFs: pages read and pages in the document.
    pages_read: int | None = None
    pages_total: int | None = None


class ExtractionError(Exception):
    """Text could not be extracted; ``code`` is stable, ``message`` is for people.

    Codes: ``not_text`` (an image), ``invalid_encoding``, ``pdf_encrypted``, ``pdf_invalid``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def extract_text(path: Path, file_type: FileType, *, max_chars: int) -> ExtractedText:
    """Extract up to ``max_chars`` characters of text from the upload at ``path``."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if file_type.kind == "text":
        return _extract_plain(Path(path), file_type.encoding or "utf-8", max_chars)
    if file_type.kind == "pdf":
        return _extract_pdf(Path(path), max_chars)
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


def _open_pdf(path: Path) -> PdfReader:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many PDFs are encrypted with only an owner password ("no printing" etc.) and
            # an empty user password: any viewer opens them, so do we.
            if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise ExtractionError(
                    "pdf_encrypted",
                    "the PDF is protected by a password; upload a copy without one",
                )
    except ExtractionError:
        raise
    except (FileNotDecryptedError, DependencyError) as exc:
        raise ExtractionError(
            "pdf_encrypted", f"the PDF's encryption is not supported: {exc}"
        ) from exc
    except Exception as exc:  # pypdf raises many kinds of errors on malformed input
        raise ExtractionError("pdf_invalid", f"the PDF cannot be read: {exc}") from exc
    return reader


def _extract_pdf(path: Path, max_chars: int) -> ExtractedText:
    reader = _open_pdf(path)
    try:
        pages = reader.pages
        pages_total = len(pages)
    except Exception as exc:
        raise ExtractionError("pdf_invalid", f"the PDF's page tree cannot be read: {exc}") from exc

    parts: list[str] = []
    length = 0
    pages_read = 0
    for index in range(pages_total):
        if length > max_chars:
            break
        try:
            page_text = (pages[index].extract_text() or "").strip()
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
        truncated=length > max_chars,
        chars_total=length if complete else None,
        pages_read=pages_read,
        pages_total=pages_total,
    )
