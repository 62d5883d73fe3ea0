"""A Core SELECT compiled once and run as the driver's own SQL.

``session.execute(select(...))`` spends 200–500 µs of CPU in SQLAlchemy on a short
SQLite query: the ORM's execution layers, the compiled-cache lookup, expanding an
``IN`` list, type processing and a ``Row`` per result. The feed runs three such
statements on every request (token, viewer's graph, page hydration): a sixth of the
API's CPU under load, by a GIL profile. :class:`DriverQuery` compiles its statement once per dialect
(and per length of its one list parameter), keeps the bind and result processors of
its types, and runs the SQL with ``Connection.exec_driver_sql`` on the session's own
connection and transaction — the same SQL SQLAlchemy would send, on SQLite and
PostgreSQL alike (tests check both against ``session.execute``), and a driver error is
still SQLAlchemy's (a dropped connection is invalidated and the API answers 503).

Rows come back as plain tuples. A column listed in ``raw`` keeps the driver's own
value (a hex string for a UUID on SQLite, a ``uuid.UUID`` on PostgreSQL); compare it
with :meth:`DriverQuery.driver_values` of the values you have, which skips converting
every row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameters in the order a positional driver takes them
    positional: bool
    binds: dict[str, Processor]
    defaults: dict[str, Any]  # literals the statement binds itself
    results: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column, processor) where there is one


def list_params(name: str, n: int, type_: TypeEngine[Any] | type[TypeEngine[Any]]) -> list[Any]:
    """``n`` bound parameters ``name_0 … name_{n-1}``, for an ``IN`` list of a given length."""
    return [bindparam(f"{name}_{i}", type_=type_) for i in range(n)]


class DriverQuery:
    """``build(n)`` returns the statement for a list of ``n`` values (ignore ``n`` when
    the statement has no list); ``listed`` names the parameter that carries the list,
    whose items ``build`` binds as ``list_params(listed, n, type)`` in an ``IN``
    condition the rows must meet (so an empty list returns no rows, unasked)."""

    def __init__(
        self,
        build: Callable[[int], Any],  # n → a Select
        *,
        listed: str | None = None,
        raw: Collection[int] = (),
    ) -> None:
        self._build = build
        self._listed = listed
        self._raw = frozenset(raw)
        self._compiled: dict[tuple[str, int], _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, dialect: Dialect, n: int) -> _Compiled:
        key = (dialect.name, n)
        found = self._compiled.get(key)
        if found is not None:
            return found
        stmt = self._build(n)
        compiled = stmt.compile(dialect=dialect)
        binds: dict[str, Processor] = {}
        defaults: dict[str, Any] = {}
        for name, param in compiled.binds.items():
            binds[name] = param.type.dialect_impl(dialect).bind_processor(dialect)
            if not param.required:
                defaults[name] = param.effective_value
        results = tuple(
            (i, process)
            for i, col in enumerate(stmt.selected_columns)
            if i not in self._raw and (process := col.type.dialect_impl(dialect).result_processor(dialect, None))
        )
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(binds)
        made = _Compiled(compiled.string, names, bool(compiled.positional), binds, defaults, results)
        with self._lock:
            self._compiled[key] = made
        return made

    def driver_values(self, connection: Connection, name: str, values: Iterable[Any]) -> list[Any]:
        """``values`` as the driver sends them for the parameter ``name`` (for a listed
        parameter, as it sends each item): compare ``raw`` columns with these."""
        compiled = self._compile(connection.dialect, 1 if self._listed else 0)
        process = compiled.binds[f"{name}_0" if name == self._listed else name]
        return list(values) if process is None else [process(v) for v in values]

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        flat = dict(params)
        n = 0
        if self._listed is not None:
            items: Sequence[Any] = flat.pop(self._listed)
            n = len(items)
            if n == 0:
                return []  # the list feeds an IN: over nothing, it matches nothing
            flat.update({f"{self._listed}_{i}": v for i, v in enumerate(items)})
        compiled = self._compile(connection.dialect, n)
        values = {}
        for name, process in compiled.binds.items():
            v = flat[name] if name in flat else compiled.defaults[name]
            values[name] = v if process is None or v is None else process(v)
        args: Any = tuple(values[name] for name in compiled.names) if compiled.positional else values
        result = connection.exec_driver_sql(compiled.sql, args)
        fetched: list[tuple[Any, ...]] = list(result.cursor.fetchall()) if result.cursor is not None else []
        result.close()
        if not compiled.results:
            return fetched
        out = []
        for row in fetched:
            cells = list(row)
            for i, process in compiled.results:
                if cells[i] is not None:
                    cells[i] = process(cells[i])
            out.append(tuple(cells))
        return out
