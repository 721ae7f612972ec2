"""Database expressions for bucketing time series in SQL, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import NotSupportedError
from django.db.models import BigIntegerField, ExpressionWrapper, Func, Value

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

#: What an expression compiles to: the SQL and its parameters.
Sql = tuple[str, tuple[Any, ...]]


class EpochSeconds(Func):
    """Whole seconds since 1970-01-01 UTC of a datetime column, as a BIGINT.

    Django has no portable epoch extraction (``Extract(..., "epoch")`` is PostgreSQL-only in
    spirit and missing on SQLite), so each backend spells it out.
    """

    arity = 1
    output_field = BigIntegerField()

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> Sql:
        # Django stores aware datetimes on SQLite as UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
        # The fraction is cut off first: SQLite rounds it to milliseconds, which would move
        # 12:00:59.9999 into the next second, and so into the next bucket.
        # '%%%%s' survives two rounds of %-formatting (Func's template, then the backend's
        # %s -> ? conversion) as the literal '%s'.
        return self.as_sql(
            compiler,
            connection,
            template="CAST(strftime('%%%%s', substr(%(expressions)s, 1, 19)) AS INTEGER)",
            **extra_context,
        )

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> Sql:
        return self.as_sql(
            compiler,
            connection,
            template="CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)",
            **extra_context,
        )

    def as_mysql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> Sql:
        return self.as_sql(
            compiler,
            connection,
            template="CAST(FLOOR(UNIX_TIMESTAMP(%(expressions)s)) AS SIGNED)",
            **extra_context,
        )

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> Sql:
        if template is None:
            raise NotSupportedError(f"EpochSeconds is not implemented for {connection.vendor}")
        return super().as_sql(compiler, connection, function, template, arg_joiner, **extra_context)


def epoch_bucket(field: str, resolution: int) -> ExpressionWrapper:
    """The start (epoch seconds) of the ``resolution``-second bucket holding ``field``.

    Integer division on both backends (INTEGER / INTEGER on SQLite, BIGINT / INTEGER on
    PostgreSQL), so buckets line up on multiples of the resolution whatever the window.
    """
    if resolution < 1:
        raise ValueError("resolution must be at least 1 second")
    return ExpressionWrapper(
        EpochSeconds(field) / Value(int(resolution)) * Value(int(resolution)),
        output_field=BigIntegerField(),
    )


def bucket_time(bucket: int) -> datetime:
    """The start of an :func:`epoch_bucket` bucket as an aware UTC datetime."""
    return datetime.fromtimestamp(int(bucket), UTC)
