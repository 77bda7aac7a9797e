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

from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)

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

# Binary COPY: the PostgreSQL type of each column (attempts.COLUMNS order), named as psycopg
# knows them, and the range of every integer column, checked before a row is sent.
_INT_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_NONE_OR_INT = frozenset({int, type(None)})


def _pg_types() -> tuple[list[str], tuple[tuple[str, str, int], ...]]:
    types, ints = [], []
    for name in COLUMNS:
        field = RequestLog._meta.get_field(name)
        db_type = field.db_type(connection).partition("(")[0]
        types.append(db_type)
        if db_type in _INT_RANGES:
            ints.append((name, db_type, _INT_RANGES[db_type]))
    return types, tuple(ints)


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
        _hold_integrations(rows)
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
    the recorder spills exactly as before.

    Binary format: psycopg then sends each value as PostgreSQL stores it, where the text
    format made psycopg print and the server parse every timestamp and float: measured on
    bench/ingest.py's rows, 4-5× the client's CPU per row, and on a table without indexes
    the server took ~1.7× as long. The server still
    checks NOT NULL, CHECK and varchar lengths, but psycopg's binary dumpers would silently
    wrap an integer too large for its column (70000 in a smallint lands as 4464), so every
    integer column is range-checked here first (``DataError``, as the server would raise).

    ``then(rows)``, if given, runs after the last row is sent and before the COPY is
    finished (it must not touch the database); its result is returned.
    """
    _check_integers(rows)
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    result = None
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        cursor.copy(_copy_sql()) as copy,
    ):
        copy.set_types(_copy_types())
        write_row = copy.write_row
        for values in map(_row_values, rows):
            write_row(values)
        if then is not None:
            result = then(rows)
    return result


def _check_integers(rows: Sequence[dict]) -> None:
    # Column by column over the batch (type sets and min/max run in C), not value by value.
    for name, db_type, bound in _copy_ints():
        values = [row[name] for row in rows]
        kinds = set(map(type, values))
        if not kinds <= _NONE_OR_INT:
            bad = next(v for v in values if v is not None and type(v) is not int)
            raise DataError(f"{name}: {bad!r} is not an integer ({db_type} column)")
        if type(None) in kinds:
            values = [v for v in values if v is not None]
            if not values:
                continue
        low, high = min(values), max(values)
        if low < -bound or high >= bound:
            bad = low if low < -bound else high
            raise DataError(f"{name}: {bad} is out of range for type {db_type}")


def _hold_integrations(rows: Sequence[dict]) -> None:
    """Refuse rows of an integration that does not exist, and keep it from going away.

    RequestLog.integration has no foreign-key constraint on PostgreSQL (migration 0018):
    the constraint's trigger looked every row's integration up again, a quarter to a
    third of COPY's time. This is the same check once per batch: KEY SHARE on the batch's
    integrations until the transaction ends, so a concurrent delete (which locks its
    integration first, ``models.core.lock_out_writers``) waits for the batch and then
    removes its rows too, and a batch that comes after the delete finds it gone.
    """
    ids = list({row["integration_id"] for row in rows})
    table = connection.ops.quote_name(Integration._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) FOR KEY SHARE", [ids])  # noqa: S608
        found = {pk for (pk,) in cursor.fetchall()}
    if len(found) < len(ids):
        missing = sorted(set(ids) - found)
        raise IntegrityError(f"RequestLog rows for integrations that do not exist: {missing}")


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


@functools.cache
def _copy_sql() -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in _DB_COLUMNS)
    return f"COPY {quote(RequestLog._meta.db_table)} ({columns}) FROM STDIN (FORMAT BINARY)"


@functools.cache
def _copy_types() -> list[str]:
    return _pg_types()[0]


@functools.cache
def _copy_ints() -> tuple[tuple[str, str, int], ...]:
    return _pg_types()[1]


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
    # PostgreSQL: held until the batch commits (see _hold_integrations).
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id IN ({marks}){lock}", list(ids))  # noqa: S608
        return {pk for (pk,) in cursor.fetchall()}


def resolve_keys(rows: Iterable[dict]) -> None:
    for row in rows:
        if row["integration_id"] is None:
            slug, environment, base_url = row.pop(INTEGRATION_KEY)
            row["integration_id"] = attempts.resolve_integration(slug, environment, base_url).pk
