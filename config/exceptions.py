"""The error contract on REST: every error body is `{"detail", "code", ...}`.

`exception_handler` (DRF's EXCEPTION_HANDLER) renders the application's own errors
(`core.errors.AppError` and its subclasses), DRF's errors with their code added (a validation
error keeps its field errors beside `detail` and `code`), and anything else as the
`AppError` that `app_error_of` makes of it: a database or Redis failure (or a bug) inside a
view never reaches Django's HTML 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from redis.exceptions import RedisError
from rest_framework.exceptions import (
    APIException,
    ErrorDetail,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from core.errors import AppError
from core.gate import GateError, GateLost

logger = logging.getLogger(__name__)

INTERNAL_DETAIL = "The server failed to handle the request."


def internal_error(detail: str = INTERNAL_DETAIL) -> AppError:
    return AppError("internal_error", detail, 500)


def database_unavailable() -> AppError:
    return AppError(
        "database_unavailable",
        "The database is unavailable; retry in a moment (what was generated is kept).",
        503,
        retry_after=5,
    )


def queue_unavailable() -> AppError:
    return AppError(
        "queue_unavailable",
        "The generation queue is unreachable; retry in a moment.",
        503,
        retry_after=5,
    )


def app_error_of(exc: BaseException, *, internal_detail: str = INTERNAL_DETAIL) -> AppError:
    """The application error a client is told about for any exception."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, GateLost):
        return AppError("gate_lost", str(exc), 503, retry_after=5)
    if isinstance(exc, GateError):
        return queue_unavailable()
    if isinstance(exc, RedisError):
        return AppError(
            "redis_unavailable", "Redis is unreachable; retry in a moment.", 503, retry_after=5
        )
    if isinstance(exc, OperationalError | InterfaceError):  # not a bad query: the database is away
        return database_unavailable()
    return internal_error(internal_detail)


def error_response(error: AppError) -> Response:
    response = Response(error.as_body(), status=error.status)
    if error.retry_after_seconds is not None:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


def _first_error(detail: Any) -> tuple[str, ErrorDetail | None]:
    """(where, first error) of a ValidationError's nested detail."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            where, error = _first_error(value)
            if error is not None:
                return (f"{field}.{where}" if where else str(field)), error
    elif isinstance(detail, list):
        for value in detail:
            where, error = _first_error(value)
            if error is not None:
                return where, error
    elif isinstance(detail, ErrorDetail):
        return "", detail
    return "", None


# DRF's own codes for a malformed field; the app's deliberate codes (`invalid_options`...)
# are kept as they are.
GENERIC_FIELD_CODES = frozenset(
    {
        "invalid",
        "required",
        "null",
        "blank",
        "max_length",
        "min_length",
        "max_value",
        "min_value",
        "max_string_length",
        "max_digits",
        "max_decimal_places",
        "max_whole_digits",
        "not_a_list",
        "not_a_dict",
        "empty",
        "invalid_choice",
        "incorrect_type",
        "does_not_exist",
        "date",
        "datetime",
        "overflow",
        "unique",
        "no_name",
    }
)


def invalid_input(
    exc: ValidationError, *, errors_key: str | None = None, generic_code: str = "invalid_input"
) -> AppError:
    """A validation error in the contract: the `code` and `detail` of its first error (DRF's
    generic field codes read `generic_code`), and every field's errors beside them (under
    `errors_key` when given, else at the top level, as DRF puts them)."""
    where, first = _first_error(exc.detail)
    code = first.code if first is not None and first.code else generic_code
    if code in GENERIC_FIELD_CODES:
        code = generic_code
    text = str(first) if first is not None else "Invalid input."
    detail = f"{where}: {text}" if where and where != "non_field_errors" else text
    errors = exc.detail if isinstance(exc.detail, dict) else {"errors": exc.detail}
    extra = {errors_key: errors} if errors_key else errors
    return AppError(code, detail, 400, extra=extra)


def _with_code(exc: APIException, data: Any) -> dict[str, Any]:
    if isinstance(exc, ValidationError):
        return invalid_input(exc).as_body()
    if isinstance(data, dict):
        detail = data.get("detail")
        code = getattr(detail, "code", None) or exc.default_code
        return {**data, "code": data.get("code") or code}
    return {"detail": str(exc.detail), "code": exc.default_code}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, AppError):
        set_rollback()
        return error_response(exc)
    # As DRF's own handler does, so that they get their code below.
    if isinstance(exc, Http404):
        exc = NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is not None:
        if isinstance(exc, APIException):
            response.data = _with_code(exc, response.data)
        return response
    error = app_error_of(exc)
    if error.code == "internal_error":
        logger.error("unhandled error in %s", context.get("view"), exc_info=exc)
    else:
        logger.warning("%s in %s: %s", error.code, context.get("view"), exc)
    return error_response(error)
