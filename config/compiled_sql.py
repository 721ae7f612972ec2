"""A hot query's SQL compiled once per database, run with each call's values.

The ORM compiles a queryset every time it runs it; for the statements every chat message runs
(the generations a user holds, with a subquery and time-dependent bounds), compiling costs ten
times running (~450 µs against ~30 µs on SQLite, issue 16). `CompiledQuery` compiles the
queryset once with marker values, remembers where each marker's value went among the
parameters, and runs the same SQL with the call's values in those places. If a marker cannot be
found exactly (the ORM folded or repeated it in a way the positions cannot follow), it runs the
ORM every time instead: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import Model, QuerySet

_ORM = object()  # this alias's statement cannot be reused: the ORM each time


class CompiledQuery:
    """`build(**values)` (a queryset of `model`) as SQL compiled once per alias; `wrap` (a
    format string with one `{}`) encloses it, e.g. to count its rows. Markers are the values
    compiled with: each must be unlike any constant of the query (an impossible id, a date
    before 1901)."""

    def __init__(
        self,
        model: type[Model],
        build: Callable[..., QuerySet[Any]],
        *,
        wrap: str = "{}",
        **markers: Any,
    ) -> None:
        self._model = model
        self._build = build
        self._wrap = wrap
        self._markers = markers
        self._by_alias: dict[str, Any] = {}

    def rows(self, **values: Any) -> list[tuple[Any, ...]]:
        alias = router.db_for_read(self._model)
        compiled = self._by_alias.get(alias)
        if compiled is None:
            compiled = self._by_alias[alias] = self._compile(alias)
        if compiled is _ORM:
            sql, orm_params = self._build(**values).query.sql_with_params()
            return self._run(alias, self._wrap.format(sql), list(orm_params))
        sql, slots = compiled
        ops = connections[alias].ops
        params = [_adapt(ops, values[slot]) if isinstance(slot, _Slot) else slot for slot in slots]
        return self._run(alias, sql, params)

    def _compile(self, alias: str) -> Any:
        sql, params = self._build(**self._markers).query.sql_with_params()
        ops = connections[alias].ops
        adapted = {name: _adapt(ops, value) for name, value in self._markers.items()}
        slots: list[Any] = []
        found = dict.fromkeys(adapted, 0)
        for param in params:
            names = [name for name, value in adapted.items() if value == param]
            if len(names) > 1:
                return _ORM
            if names:
                found[names[0]] += 1
                slots.append(_Slot(names[0]))
            else:
                slots.append(param)
        if any(count != 1 for count in found.values()):
            return _ORM
        return self._wrap.format(sql), slots

    @staticmethod
    def _run(alias: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


class _Slot(str):
    """A parameter's place that takes the value named so."""


def _adapt(ops: Any, value: Any) -> Any:
    # What the ORM does to a DateTimeField's value for this database (SQLite: a naive UTC
    # string), so that a marker compares equal to its compiled parameter.
    if isinstance(value, datetime):
        return ops.adapt_datetimefield_value(value)
    return value
