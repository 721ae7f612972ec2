"""DRF's exception handler, extended to exceptions DRF does not know.

A database or Redis failure (or a bug) inside a view would otherwise reach Django's handler,
which answers an HTML 500: API clients get the error contract's JSON instead.
"""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    from chat.services import failure_of

    code, detail, status, retry_after = failure_of(exc)
    if code == "internal_error":
        logger.error("unhandled error in %s", context.get("view"), exc_info=exc)
        detail = "The server failed to handle the request."
    else:
        logger.warning("%s in %s: %s", code, context.get("view"), exc)
    response = Response({"detail": detail, "code": code}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response
