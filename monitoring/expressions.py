"""Database expressions for bucketing time series in SQL, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from django.db import NotSupportedError
from django.db.models import BigIntegerField, ExpressionWrapper, Func, Value


class EpochSeconds(Func):
    """Whole seconds since 1970-01-01 UTC of a datetime column, as a BIGINT.

    Django has no portable epoch extraction (``Extract(..., "epoch")`` is PostgreSQL-only in
    spirit and missing on SQLite), so each backend spells it out.
    """

    arity = 1
    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
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

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template="CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)",
            **extra_context,
        )

    def as_mysql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template="CAST(FLOOR(UNIX_TIMESTAMP(%(expressions)s)) AS SIGNED)",
            **extra_context,
        )

    def as_sql(self, compiler, connection, function=None, template=None, **extra_context):
        if template is None:
            raise NotSupportedError(f"EpochSeconds is not implemented for {connection.vendor}")
        return super().as_sql(compiler, connection, function, template, **extra_context)


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
