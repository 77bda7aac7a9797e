"""Write complete request-log rows and their rollup in the caller's transaction.

The one insert path: the recorder's writer, the ingest API (which must be durable before it
answers), the demo's history loader and the benchmarks all call ``insert_rows``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction

from monitoring import attempts
from monitoring.attempts import COLUMNS, INTEGRATION_KEY
from monitoring.models import Integration, RequestLog

logger = logging.getLogger(__name__)

try:
    # Takes the row dicts themselves (tests and the benchmark swap it out or set it to None).
    from monitoring.rollup import apply_dicts as _apply_rows
except ImportError:  # pragma: no cover - the rollup module ships with the app
    _apply_rows = None

# A database error that may pass: SQLite locked, PostgreSQL gone.
TRANSIENT = (OperationalError, InterfaceError)
DATETIME_FIELDS = ("created", "ratelimit_reset", "deprecation_at", "sunset_at")

# The database's names for the row's columns, in attempts.COLUMNS order.
_DB_COLUMNS = tuple(RequestLog._meta.get_field(name).column for name in COLUMNS)
_row_values = itemgetter(*COLUMNS)
_DT_INDEXES = tuple(COLUMNS.index(name) for name in DATETIME_FIELDS)
# insert_rows' fast path: `created` leads COLUMNS and is the one datetime nearly every row
# sets, so a row is (created as text,) + the rest unless one of the others is set.
assert COLUMNS[0] == "created"
_rest_values = itemgetter(*COLUMNS[1:])
_rare_datetimes = itemgetter(*DATETIME_FIELDS[1:])
_NO_DATETIMES = (None,) * len(DATETIME_FIELDS[1:])


def _sqlite_datetime(value: datetime) -> str:
    # The same text Django's SQLite backend writes for an aware datetime (naive UTC), i.e.
    # str() of the naive value; isoformat() and cutting "+00:00" is twice as fast.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ")[:-6]


def _adapter() -> Callable[[datetime], Any]:
    if connection.vendor == "sqlite":
        return _sqlite_datetime
    return connection.ops.adapt_datetimefield_value


def insert_rows(
    rows: Sequence[dict], *, rollup: bool = True, counters: collections.Counter | None = None
) -> None:
    """INSERT complete row dicts (``COLUMNS``) with one executemany, then roll them up.

    Must run inside a transaction. Rows must have ``integration_id`` set. Used by the writer
    and by bulk loaders (the demo's history); ``bulk_create`` would be ~6× slower here.
    """
    if not rows:
        return
    adapt = _adapter()
    params = []
    append = params.append
    for row in rows:
        if _rare_datetimes(row) == _NO_DATETIMES:
            append((adapt(row["created"]), *_rest_values(row)))
        else:
            values = list(_row_values(row))
            for i in _DT_INDEXES:
                value = values[i]
                if value is not None:
                    values[i] = adapt(value)
            append(values)
    with connection.cursor() as cursor:
        cursor.executemany(insert_sql(), params)
    if rollup and _apply_rows is not None:
        try:
            with transaction.atomic():  # savepoint: a rollup bug must not lose the raw rows
                _apply_rows(rows)
        except TRANSIENT:
            raise
        except Exception:
            logger.exception("rollup failed; raw rows kept (run rollup.rebuild)")
            if counters is not None:
                counters["rollup_errors"] += 1


_insert_sql_cache: dict[str, str] = {}


def insert_sql() -> str:
    """The INSERT for one row of ``COLUMNS`` on the current backend (``%s`` placeholders)."""
    sql = _insert_sql_cache.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(column) for column in _DB_COLUMNS)
        marks = ", ".join(["%s"] * len(_DB_COLUMNS))
        table = quote(RequestLog._meta.db_table)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - no user input
        _insert_sql_cache[connection.vendor] = sql
    return sql


def existing_integrations(ids: set[int]) -> set[int]:
    # Plain SQL: this runs once per writer batch, and the ORM's query building cost more
    # than the query itself.
    table = connection.ops.quote_name(Integration._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", list(ids))  # noqa: S608
        return {pk for (pk,) in cursor.fetchall()}


def resolve_keys(rows: Iterable[dict]) -> None:
    for row in rows:
        if row["integration_id"] is None:
            slug, environment, base_url = row.pop(INTEGRATION_KEY)
            row["integration_id"] = attempts.resolve_integration(slug, environment, base_url).pk
