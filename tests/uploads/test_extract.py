"""uploads.extract: text from text files and PDFs, refusals for images and bad PDFs."""

from __future__ import annotations

import codecs
import io
import struct
import zlib
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from uploads.extract import ExtractedText, ExtractionError, extract_pdf, extract_text
from uploads.filetypes import HEAD_SIZE, FileType, detect


def make_pdf(
    pages: list[str], *, user_password: str | None = None, owner_password: str | None = None
) -> bytes:
    """A real PDF written by pypdf: one Helvetica text line per page ("" = a blank page)."""
    writer = PdfWriter()
    helvetica = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for text in pages:
        page = writer.add_blank_page(width=595, height=842)
        if not text:
            continue
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        content = DecodedStreamObject()
        content.set_data(f"BT /F1 12 Tf 40 800 Td ({escaped}) Tj ET".encode("latin-1"))
        # pypdf takes any stream object here; its annotation names only two of them.
        page.replace_contents(content)  # type: ignore[arg-type]
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): helvetica})}
        )
    if user_password is not None:
        writer.encrypt(user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(tmp_path: Path, name: str, content: bytes) -> tuple[Path, FileType]:
    path = tmp_path / name
    path.write_bytes(content)
    return path, detect(content[:HEAD_SIZE], name)


# -- text files ----------------------------------------------------------------------------


def test_text_file_whole(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.md", "# Caf\u00e9\n\n\u4e2d\u6587 \U0001f600\n".encode())
    result = extract_text(path, file_type, max_chars=1000)
    assert result == ExtractedText(
        text="# Caf\u00e9\n\n\u4e2d\u6587 \U0001f600\n", truncated=False, chars_total=13
    )


def test_text_file_truncated_counts_characters_not_bytes(tmp_path: Path) -> None:
    content = "\u00e9" * 100_000 + "END"
    path, file_type = write(tmp_path, "a.txt", content.encode())
    result = extract_text(path, file_type, max_chars=10)
    assert result.text == "\u00e9" * 10
    assert result.truncated is True
    assert result.chars_total == 100_003


def test_text_file_exactly_max_chars_is_not_truncated(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.txt", b"abcde")
    assert extract_text(path, file_type, max_chars=5) == ExtractedText("abcde", False, 5)
    assert extract_text(path, file_type, max_chars=4) == ExtractedText("abcd", True, 5)


def test_text_file_newlines_are_normalised(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.csv", b"a,b\r\n1,2\r3,4\n")
    assert extract_text(path, file_type, max_chars=100).text == "a,b\n1,2\n3,4\n"


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.json", codecs.BOM_UTF8 + b'{"a": 1}')
    assert extract_text(path, file_type, max_chars=100) == ExtractedText('{"a": 1}', False, 8)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_decoded(tmp_path: Path, codec: str) -> None:
    bom = codecs.BOM_UTF16_LE if codec == "utf-16-le" else codecs.BOM_UTF16_BE
    path, file_type = write(tmp_path, "ps.log", bom + "Caf\u00e9\r\nOK\r\n".encode(codec))
    assert extract_text(path, file_type, max_chars=100) == ExtractedText(
        "Caf\u00e9\nOK\n", False, 8
    )


def test_a_text_file_changed_after_validation_is_an_error(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.txt", b"fine")
    path.write_bytes(b"fine \xff")
    with pytest.raises(ExtractionError) as info:
        extract_text(path, file_type, max_chars=100)
    assert info.value.code == "invalid_encoding"


# -- PDF -----------------------------------------------------------------------------------


def test_pdf_text_page_by_page(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.pdf", make_pdf(["Hello page one", "", "Page (three)"]))
    assert file_type.kind == "pdf"
    result = extract_text(path, file_type, max_chars=10_000)
    assert result.text == "Hello page one\n\nPage (three)"
    assert result.truncated is False
    assert result.chars_total == len(result.text)
    assert (result.pages_read, result.pages_total) == (3, 3)


def test_pdf_stops_once_max_chars_is_reached(tmp_path: Path) -> None:
    pages = [f"Page number {i} " + "x" * 40 for i in range(1, 51)]
    path, file_type = write(tmp_path, "long.pdf", make_pdf(pages))
    result = extract_text(path, file_type, max_chars=100)
    assert len(result.text) == 100
    assert result.text.startswith("Page number 1 xxx")
    assert result.truncated is True
    assert result.chars_total is None  # not read to the end, so unknown
    assert result.pages_total == 50
    assert result.pages_read is not None and result.pages_read <= 3


def test_pdf_truncated_on_its_last_page_knows_its_total(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.pdf", make_pdf(["abcdefghij"]))
    result = extract_text(path, file_type, max_chars=4)
    assert result == ExtractedText("abcd", True, 10, pages_read=1, pages_total=1)


def test_pdf_without_a_text_layer_gives_empty_text(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "scan.pdf", make_pdf(["", ""]))
    assert extract_text(path, file_type, max_chars=100) == ExtractedText(
        "", False, 0, pages_read=2, pages_total=2
    )


def test_pdf_stops_at_max_pages_even_without_text(tmp_path: Path) -> None:
    # Pages that give no text never reach max_chars: only the page cap stops them.
    path, file_type = write(tmp_path, "blank.pdf", make_pdf([""] * 12))
    result = extract_text(path, file_type, max_chars=100, max_pages=5)
    assert result == ExtractedText("", True, None, pages_read=5, pages_total=12)


def test_pdf_stopped_at_max_pages_is_truncated(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.pdf", make_pdf(["one", "two", "three", "four"]))
    result = extract_text(path, file_type, max_chars=100, max_pages=2)
    assert result == ExtractedText("one\n\ntwo", True, None, pages_read=2, pages_total=4)
    whole = extract_text(path, file_type, max_chars=100, max_pages=4)
    assert whole == ExtractedText(
        "one\n\ntwo\n\nthree\n\nfour", False, 21, pages_read=4, pages_total=4
    )


def test_pdf_from_an_open_file(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "a.pdf", make_pdf(["from a file object"]))
    with path.open("rb") as fh:
        assert extract_pdf(fh, max_chars=100, max_pages=1).text == "from a file object"


def test_memory_errors_are_not_turned_into_pdf_errors(tmp_path: Path, monkeypatch) -> None:
    # The sandbox reports a MemoryError as the memory limit, not as a broken PDF.
    path, file_type = write(tmp_path, "a.pdf", make_pdf(["text"]))

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("pypdf._page.PageObject.extract_text", out_of_memory)
    with pytest.raises(MemoryError):
        extract_text(path, file_type, max_chars=100)


def test_pdf_with_a_user_password_is_refused(tmp_path: Path) -> None:
    path, file_type = write(
        tmp_path, "locked.pdf", make_pdf(["top secret"], user_password="s3cret")
    )
    assert file_type.kind == "pdf"
    with pytest.raises(ExtractionError) as info:
        extract_text(path, file_type, max_chars=100)
    assert info.value.code == "pdf_encrypted"
    assert "password" in info.value.message


def test_pdf_with_only_an_owner_password_is_read(tmp_path: Path) -> None:
    content = make_pdf(["readable"], user_password="", owner_password="owner")
    path, file_type = write(tmp_path, "restricted.pdf", content)
    assert extract_text(path, file_type, max_chars=100).text == "readable"


@pytest.mark.parametrize(
    "content",
    [
        b"%PDF-1.4\nthis is not a PDF at all\n",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n",
        b"%PDF-",
        make_pdf(["Hello page one", "two"])[:-300],  # a real PDF, cut short
    ],
)
def test_broken_pdf_is_an_error(tmp_path: Path, content: bytes) -> None:
    path, file_type = write(tmp_path, "broken.pdf", content)
    assert file_type.kind == "pdf"  # the signature is right; the structure is not
    with pytest.raises(ExtractionError) as info:
        extract_text(path, file_type, max_chars=100)
    assert info.value.code == "pdf_invalid"
    assert info.value.message


# -- images and arguments ------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0"))


def test_images_are_not_text(tmp_path: Path) -> None:
    path, file_type = write(tmp_path, "a.png", _png())
    assert file_type.kind == "image"
    with pytest.raises(ExtractionError) as info:
        extract_text(path, file_type, max_chars=100)
    assert info.value.code == "not_text"


@pytest.mark.parametrize("max_chars", [0, -1])
def test_max_chars_must_be_positive(tmp_path: Path, max_chars: int) -> None:
    path, file_type = write(tmp_path, "a.txt", b"abc")
    with pytest.raises(ValueError):
        extract_text(path, file_type, max_chars=max_chars)


@pytest.mark.parametrize("max_pages", [0, -1])
def test_max_pages_must_be_positive(tmp_path: Path, max_pages: int) -> None:
    path, file_type = write(tmp_path, "a.pdf", make_pdf(["x"]))
    with pytest.raises(ValueError):
        extract_text(path, file_type, max_chars=10, max_pages=max_pages)
