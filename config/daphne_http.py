"""Daphne's HTTP requests, bounded before the application sees them.

What Daphne (4.2) and Twisted do with a request body
----------------------------------------------------
Daphne serves HTTP/1.1 with Twisted's ``HTTPChannel`` and its own ``WebRequest`` (a
``twisted.web.http.Request``). Twisted receives the *whole* body before anything else runs
(``Request.gotLength``/``handleContentChunk``: in memory below 100 kB, beyond that in an
unlinked temporary file), then calls ``Request.requestReceived``, which, for a POST of
``multipart/form-data`` or ``application/x-www-form-urlencoded``, reads the whole body into
memory and parses it into ``request.args``; multipart with the standard library's ``email``
parser, at about twelve times the body's size in RSS (100 MB: +1.2 GB). Only then does
Daphne's ``process()`` hand the body to the application. Daphne never reads
``request.args`` (Django parses the body itself, from the ASGI messages), and nothing in
Daphne or Twisted bounds the body's size, so all of this happened before any check of the
app: size limit, authentication, even the URL.

What ``install()`` changes
--------------------------
Daphne builds its requests from ``daphne.http_protocol.WebRequest`` (``HTTPFactory``
looks the name up on every connection); ``install()`` puts ``BoundedWebRequest`` there:

* Twisted's form parsing is off (``parsePOSTFormSubmission=False``, an argument of
  Twisted's ``Request``). The app reads the body from the ASGI messages as before.
* The body is bounded by ``body_limit()``: the largest file upload plus room for its
  multipart framing (or Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``, if that is larger). A
  declared ``Content-Length`` above it is refused with 413 before a byte of the body is read
  (and without the ``100 Continue`` a client may have asked for); a chunked body is cut off
  with 413 as soon as it passes it. The connection is closed after the 413.

Left to Daphne, and so to a reverse proxy: Daphne still buffers a body (up to the limit) and
then queues all of it at once for the application (memory of about the body's size per
request in flight); Twisted's own bounds are 16 KiB of request line + headers, 500 headers
and a 60-second *idle* timeout that every received byte resets.
"""

from __future__ import annotations

import inspect
import json
import logging
from io import BytesIO
from typing import Any

from daphne import http_protocol
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from twisted.web import http

__all__ = ["BoundedWebRequest", "body_limit", "install"]

logger = logging.getLogger(__name__)

REFUSED_STATUS = b"413 Content Too Large"


def body_limit() -> int:
    """The largest request body Daphne accepts: every request the app could accept."""
    from uploads.handlers import MULTIPART_ALLOWANCE

    largest = max(settings.UPLOAD_MAX_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
    return largest + MULTIPART_ALLOWANCE


def _refusal(limit: int) -> bytes:
    """The raw 413 response, in the app's error format (``detail``, ``code``, extras)."""
    size = filesizeformat(limit).replace("\xa0", " ")
    body = json.dumps(
        {
            "detail": f"The request body is larger than the limit of {size} ({limit} bytes).",
            "code": "request_too_large",
            "max_bytes": limit,
        }
    ).encode()
    return b"\r\n".join(
        [
            b"HTTP/1.1 " + REFUSED_STATUS,
            b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(),
            b"Cache-Control: no-store",
            b"X-Content-Type-Options: nosniff",
            b"Connection: close",
            b"",
            body,
        ]
    )


class BoundedWebRequest(http_protocol.WebRequest):
    """Daphne's request without Twisted's form parsing and with a body size limit."""

    #: Set by ``install()`` from the settings: the limit and the response that refuses more.
    max_body_bytes: int = 0
    refusal: bytes = b""
    #: Twisted's: where the body is kept while it arrives (None before ``gotLength``).
    content: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        self.body_bytes = 0
        self.refused = False
        super().__init__(*args, **kwargs)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            # Twisted sends `100 Continue` after this call if the client asked for it: the
            # client must not be invited to send what is refused.
            self.requestHeaders.removeHeader(b"Expect")
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.max_body_bytes:  # only a chunked body gets here
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:  # the rest of the body arrived with the headers: already answered
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self.refused = True
        channel = self.channel
        logger.info(
            "413: a request body over %d bytes from %s refused",
            self.max_body_bytes,
            getattr(self, "client", None),
        )
        if isinstance(channel, http.HTTPChannel) and channel.transport is not None:
            transport: Any = channel.transport  # (zope's ITransport.write confuses mypy)
            transport.write(self.refusal)
            channel.loseConnection()  # sends what was written, reads nothing more
        elif channel is not None:  # an HTTP/2 stream (Daphne with TLS and the h2 package)
            channel.abortConnection()
        if self.content is not None:
            self.content.close()  # a chunked body's temporary file
        self.content = BytesIO()  # what Twisted and Daphne may still touch: empty


def install() -> None:
    """Make Daphne build ``BoundedWebRequest``s (idempotent; called by ``config.asgi``)."""
    if "parsePOSTFormSubmission" not in inspect.signature(http.Request.__init__).parameters:
        # Refuse to serve rather than parse every form body in memory again.
        raise RuntimeError(
            "this Twisted cannot turn off its form parsing (no parsePOSTFormSubmission): "
            "install a newer Twisted"
        )
    BoundedWebRequest.max_body_bytes = limit = body_limit()
    BoundedWebRequest.refusal = _refusal(limit)
    http_protocol.WebRequest = BoundedWebRequest
