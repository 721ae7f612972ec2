"""The upload handler that enforces the size limit while the request body streams in.

Installed as the *only* handler of an upload request (``uploads.api`` does it before DRF
authenticates, because the session authenticator's CSRF check reads ``request.POST`` and
so parses the body). Django's default handlers would keep small files in memory and
write big ones whole to the system temp dir before any view could look at their size.

This handler writes the single file of the field ``file`` straight to a temporary file
inside MEDIA_ROOT/uploads/ (created with O_EXCL, mode 0600), hashing as it goes, and stops
the upload (``StopUpload(connection_reset=True)``: Django reads no further) as soon as the
byte count would pass the limit; a declared ``Content-Length`` already beyond the limit is
refused before a single byte is read. Nothing above the limit is ever written to disk.

Django's parser swallows ``StopUpload``; the reason is kept in ``handler.error`` for the
view to raise. ``discard()`` (called by the view once the response is ready) deletes every
temporary file the handler made that was not moved into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

from uploads import storage
from uploads.errors import FileTooLarge, UploadError

if TYPE_CHECKING:
    from _hashlib import HASH

FIELD_NAME = "file"
#: Room for the multipart framing around the file (boundaries, part headers, a long file
#: name) when comparing the declared Content-Length with the file size limit.
MULTIPART_ALLOWANCE = 64 * 1024


class StreamedUpload(UploadedFile):
    """A file received by ``LimitedUploadHandler``: complete, fsynced, hashed, not yet stored."""

    def __init__(
        self,
        file: IO[bytes],
        *,
        name: str | None,
        content_type: str | None,
        size: int,
        charset: str | None,
        temp_path: Path,
        sha256: str,
    ) -> None:
        super().__init__(file, name, content_type, size, charset)
        self.temp_path = Path(temp_path)
        self.sha256 = sha256
        #: The byte count as an int: UploadedFile.size may be None, this one never is.
        self.received_size: int = size
        self.stored = False

    def temporary_file_path(self) -> str:
        return str(self.temp_path)

    def mark_stored(self) -> None:
        """The temp name is gone (linked into place): never unlink that name again, as a
        later upload could, however unlikely, have been given it."""
        self.stored = True

    def close(self) -> None:
        try:
            super().close()
        finally:
            if not self.stored:
                with contextlib.suppress(FileNotFoundError):
                    self.temp_path.unlink()


class LimitedUploadHandler(FileUploadHandler):
    chunk_size = 64 * 1024

    def __init__(self, request=None, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.error: UploadError | None = None
        #: Bytes of file content accepted so far (for the file being received).
        self.bytes_received = 0
        self._files_started = 0
        self._fh: IO[bytes] | None = None
        self._digest: HASH | None = None
        self._temp_path: Path | None = None  # of the file being received
        self._uploads: list[StreamedUpload] = []

    # -- Django's FileUploadHandler interface -------------------------------------------

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > self.max_bytes + MULTIPART_ALLOWANCE:
            self.error = FileTooLarge(self.max_bytes, declared=content_length)
            # Returning (POST, FILES) tells Django the body is handled: nothing is read.
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, field_name, file_name, *args, **kwargs) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        self._files_started += 1
        if self._files_started > 1:
            self.error = UploadError(
                "unexpected_file", "Send one file per request; this one has more than one."
            )
            raise StopUpload(connection_reset=True)
        if field_name != FIELD_NAME:
            self.error = UploadError(
                "unexpected_file",
                f"Send the file in the multipart field '{FIELD_NAME}', not {field_name!r}.",
            )
            raise StopUpload(connection_reset=True)
        directory = storage.upload_dir(create=True)
        fd, name = tempfile.mkstemp(prefix=storage.TEMP_PREFIX, dir=directory)
        self._temp_path = Path(name)
        self._fh = os.fdopen(fd, "w+b")
        self._digest = hashlib.sha256()
        self.bytes_received = 0

    def receive_data_chunk(self, raw_data, start):
        if self.bytes_received + len(raw_data) > self.max_bytes:
            self.error = FileTooLarge(self.max_bytes)
            self.discard()
            raise StopUpload(connection_reset=True)
        # new_file opened both before Django hands over any data of the file.
        assert self._fh is not None and self._digest is not None
        self._fh.write(raw_data)
        self._digest.update(raw_data)
        self.bytes_received += len(raw_data)
        return None  # consumed: no other handler sees the data

    def file_complete(self, file_size):
        fh, self._fh = self._fh, None
        temp_path, self._temp_path = self._temp_path, None
        assert fh is not None and temp_path is not None and self._digest is not None
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        upload = StreamedUpload(
            fh,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            temp_path=temp_path,
            sha256=self._digest.hexdigest(),
        )
        self._uploads.append(upload)
        return upload

    def upload_interrupted(self) -> None:
        self.discard()

    # -- for the view ----------------------------------------------------------------

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def discard(self) -> None:
        """Close and delete every temporary file not moved into place. Idempotent."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()
        if self._temp_path is not None:
            path, self._temp_path = self._temp_path, None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for upload in self._uploads:
            upload.close()


class LimitedUploadViewMixin:
    """For a DRF view that takes a multipart file: the size limit holds while the body streams
    in, and nothing above it is written anywhere.

    The handler is installed in `initialize_request`, before DRF authenticates, because
    SessionAuthentication's CSRF check reads request.POST, which parses the body with whatever
    handlers are installed then."""

    upload_handler: LimitedUploadHandler | None = None

    def upload_max_bytes(self) -> int:
        raise NotImplementedError

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            self.upload_handler = LimitedUploadHandler(request, max_bytes=self.upload_max_bytes())
            request.upload_handlers = [self.upload_handler]
        return super().initialize_request(request, *args, **kwargs)  # type: ignore[misc]

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        finally:
            if self.upload_handler is not None:
                self.upload_handler.discard()
