"""Write complete request-log rows and their rollup in the caller's transaction.

The one insert path: the recorder's writer, the ingest API (which must be durable before it
answers), the demo's history loader and the benchmarks all call ``insert_rows``. SQLite gets
one executemany; PostgreSQL one ``COPY … FROM STDIN`` (psycopg 3), in the same transaction,
so the exactly-once replay and the rollup beside the rows hold alike on both.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, NamedTuple

from django.db import InterfaceError, OperationalError, connection, transaction

from monitoring import attempts
from monitoring.attempts import COLUMNS, INTEGRATION_KEY
from monitoring.models import Integration, RequestLog

logger = logging.getLogger(__name__)

try:
    from monitoring import rollup as _rollup

    # Takes the row dicts themselves (tests and the benchmark swap it out or set it to None).
    _apply_rows = _rollup.apply_dicts
except ImportError:  # pragma: no cover - the rollup module ships with the app
    _rollup = None
    _apply_rows = None

# A database error that may pass: SQLite locked, PostgreSQL gone.
TRANSIENT = (OperationalError, InterfaceError)
DATETIME_FIELDS = ("created", "ratelimit_reset", "token_reset", "deprecation_at", "sunset_at")

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
    """Write complete row dicts (``COLUMNS``) in one statement, then roll them up.

    Must run inside a transaction. Rows must have ``integration_id`` set. Used by the writer
    and by bulk loaders (the demo's history); ``bulk_create`` would be ~6× slower here. On
    PostgreSQL the rows go through COPY (``copy_rows``), elsewhere one executemany.
    """
    if not rows:
        return
    apply = _apply_rows if rollup else None
    if connection.vendor == "postgresql":
        # The rollup's counting needs no database, so it runs while PostgreSQL is still
        # busy with the COPY (checks, indexes), on the other core; only its bucket write
        # waits for the COPY to end. Not when the hook is swapped out (tests, benchmarks).
        precount = apply is not None and apply is _rollup.apply_dicts
        counted = copy_rows(rows, then=_count if precount else None)
        if precount:
            apply = functools.partial(_write_counted, counted)
    else:
        _executemany_rows(rows)
    if apply is not None:
        try:
            with transaction.atomic():  # savepoint: a rollup bug must not lose the raw rows
                apply(rows)
        except TRANSIENT:
            raise
        except Exception:
            logger.exception("rollup failed; raw rows kept (run rollup.rebuild)")
            if counters is not None:
                counters["rollup_errors"] += 1


def _executemany_rows(rows: Sequence[dict]) -> None:
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


def copy_rows(rows: Sequence[dict], *, then: Callable[[Sequence[dict]], Any] | None = None) -> Any:
    """``COPY`` complete row dicts into RequestLog through psycopg 3 (PostgreSQL only).

    Runs on the caller's connection and transaction, like the executemany it replaces:
    a rolled-back batch leaves no row, and a lock held elsewhere fails after the session's
    ``lock_timeout`` as a Django ``OperationalError`` (psycopg's errors are translated), so
    the recorder spills exactly as before. Text format, not binary: PostgreSQL then parses
    and range-checks every value as it does an INSERT's, where psycopg's binary dumpers
    silently wrap an integer too large for its column (70000 in a smallint lands as 4464).

    ``then(rows)``, if given, runs after the last row is sent and before the COPY is
    finished (it must not touch the database); its result is returned.
    """
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    result = None
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        cursor.copy(_copy_sql()) as copy,
    ):
        write_row = copy.write_row
        for values in map(_row_values, rows):
            write_row(values)
        if then is not None:
            result = then(rows)
    return result


class _CountFailed(NamedTuple):
    error: Exception


def _count(rows: Sequence[dict]) -> Any:
    # An error here (a NaN latency) must surface in the rollup's savepoint like any other
    # rollup failure, not abort the COPY: it is kept and raised there.
    try:
        return _rollup.count_dicts(rows)
    except Exception as exc:
        return _CountFailed(exc)


def _write_counted(counted: Any, rows: Sequence[dict]) -> None:
    if isinstance(counted, _CountFailed):
        raise counted.error
    _rollup.write(counted)


_copy_sql_cache: dict[str, str] = {}


def _copy_sql() -> str:
    sql = _copy_sql_cache.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(column) for column in _DB_COLUMNS)
        sql = f"COPY {quote(RequestLog._meta.db_table)} ({columns}) FROM STDIN"
        _copy_sql_cache[connection.vendor] = sql
    return sql


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
