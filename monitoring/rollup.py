"""Roll raw request rows into metric buckets of every grain, in the writer's transaction."""

from __future__ import annotations

import itertools
import math
import operator
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from monitoring.histogram import bucket_index, decode_counts, encode_counts
from monitoring.models import (
    ALL_ENDPOINTS,
    COUNTERS,
    GRAIN_SECONDS,
    GRAINS,
    KEY_COLUMNS,
    VALUE_COLUMNS,
    Grain,
    MetricBucket,
    Outcome,
    RequestLog,
    endpoint_of,
    retain_days,
)
from monitoring.parsing import budget_order

# Accumulator layout: the counters (in COUNTERS' order), then these.
_N = len(COUNTERS)
_SUM, _MIN, _MAX, _RL_REM, _RL_LIM, _HIST = range(_N, _N + 6)

_OUTCOME_SLOT = {
    Outcome.OK: COUNTERS.index("ok"),
    Outcome.CLIENT_ERROR: COUNTERS.index("client_errors"),
    Outcome.SERVER_ERROR: COUNTERS.index("server_errors"),
    Outcome.TIMEOUT: COUNTERS.index("timeouts"),
    Outcome.CONNECT_ERROR: COUNTERS.index("connect_errors"),
    Outcome.TLS_ERROR: COUNTERS.index("tls_errors"),
}
_OTHER = COUNTERS.index("other_errors")
_STATUS_CLASS = {2: COUNTERS.index("s2xx"), 3: COUNTERS.index("s3xx")}
_STATUS_CLASS |= {4: COUNTERS.index("s4xx"), 5: COUNTERS.index("s5xx")}
_STATUS_EXACT = {401: COUNTERS.index("s401"), 403: COUNTERS.index("s403")}
_STATUS_EXACT[429] = COUNTERS.index("s429")
_RETRIES = COUNTERS.index("retries")
_DEPRECATED = COUNTERS.index("deprecated")

# Key of one bucket: (integration_id, grain, start as epoch seconds, source, endpoint).
Key = tuple[int, str, int, str, str]


def truncate(when: datetime, grain: str) -> datetime:
    """Return the UTC start of the grain's period holding `when` (naive counts as UTC)."""
    seconds = GRAIN_SECONDS[grain]
    return datetime.fromtimestamp(_epoch(when) // seconds * seconds, UTC)


# What the rollup reads of a raw row, in Batch.add's order after the endpoint (Batch.add_many
# takes tuples in this order).
ROW_FIELDS = (
    "integration_id",
    "created",
    "source",
    "method",
    "path",
    "status",
    "outcome",
    "latency_ms",
    "attempt",
    "deprecated",
    "ratelimit_remaining",
    "ratelimit_limit",
    "token_remaining",
    "token_limit",
)
_LOG_FIELDS = operator.attrgetter(*ROW_FIELDS)


class _Access(NamedTuple):
    """Getters for what the rollup reads of one kind of row (dict, model, tuple)."""

    created: Callable
    group: Callable  # integration_id, source, method, path
    status: Callable
    outcome: Callable
    latency: Callable
    attempt: Callable
    deprecated: Callable
    remaining: Callable
    limit: Callable
    token_remaining: Callable
    token_limit: Callable

    @classmethod
    def of(cls, make: Callable) -> _Access:
        """Getters made by ``make(field name or index, …)``, in ROW_FIELDS' terms."""
        return cls(make(1), make(0, 2, 3, 4), *(make(i) for i in range(5, 14)))


_BY_INDEX = _Access.of(operator.itemgetter)  # tuples in ROW_FIELDS order
_BY_KEY = _Access.of(lambda *i: operator.itemgetter(*(ROW_FIELDS[n] for n in i)))  # dicts
_BY_ATTR = _Access.of(lambda *i: operator.attrgetter(*(ROW_FIELDS[n] for n in i)))  # models


def _epoch(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def new_accumulator() -> list:
    """An empty bucket accumulator: counters, latency sum/min/max, rate limit, counts."""
    return [0] * _N + [0.0, None, None, None, None, {}]


def merge_into(acc: list, other: list) -> None:
    """Add accumulator `other` into `acc`: exactly what merging two buckets means."""
    acc[:_N] = map(operator.add, acc[:_N], other[:_N])
    acc[_SUM] += other[_SUM]
    if other[_MIN] is not None and (acc[_MIN] is None or other[_MIN] < acc[_MIN]):
        acc[_MIN] = other[_MIN]
    if other[_MAX] is not None and (acc[_MAX] is None or other[_MAX] > acc[_MAX]):
        acc[_MAX] = other[_MAX]
    _merge_ratelimit(acc, other[_RL_REM], other[_RL_LIM])
    _add_counts(acc[_HIST], other[_HIST])


def _add_counts(hist: dict[int, int], more: Mapping[int, int]) -> None:
    if not hist:
        hist.update(more)
        return
    get = hist.get
    for index, count in more.items():
        hist[index] = get(index, 0) + count


def _merge_group_ratelimit(acc: list, group: list, get: _Access) -> None:
    # What _merge_ratelimit row by row would leave: the tightest budget any row reported,
    # request or token budget alike. Rows without one (nearly all) are skipped in C.
    remaining = list(map(get.remaining, group))
    tokens = list(map(get.token_remaining, group))
    if remaining.count(None) == len(remaining) and tokens.count(None) == len(tokens):
        return  # no row reported a quota
    best = None
    for row, left, tokens_left in zip(group, remaining, tokens, strict=True):
        if left is not None:
            key = budget_order(left, get.limit(row))
            if best is None or key < best:
                best = key
        if tokens_left is not None:
            key = budget_order(tokens_left, get.token_limit(row))
            if best is None or key < best:
                best = key
    _merge_ratelimit(acc, best[1], None if best[2] == math.inf else best[2])


def _merge_ratelimit(acc: list, remaining: int | None, limit: int | None) -> None:
    # The tightest budget wins: the lowest share of its limit left (parsing.budget_order),
    # so a token budget at 3 % beats a request budget at 90 % whatever the raw numbers. A
    # min over one total order, so it is order-independent and merges of minutes give
    # exactly the hour.
    if remaining is None:
        return
    current = acc[_RL_REM]
    if current is None or budget_order(remaining, limit) < budget_order(current, acc[_RL_LIM]):
        acc[_RL_REM] = remaining
        acc[_RL_LIM] = limit


def _tightest(
    remaining: int | None, limit: int | None, tokens: int | None, token_limit: int | None
) -> tuple[int | None, int | None]:
    """A row's tighter budget of its request and token budgets, as (remaining, limit)."""
    if tokens is None:
        return remaining, limit
    if remaining is None or budget_order(tokens, token_limit) < budget_order(remaining, limit):
        return tokens, token_limit
    return remaining, limit


class Batch:
    """Bucket increments for a set of raw rows, aggregated in memory before one write."""

    def __init__(self, grains: Iterable[str] = GRAINS) -> None:
        self.grains = tuple(grains)
        self.rows = 0
        # Per minute first: a batch usually holds many rows per minute and endpoint, and the
        # coarser grains are then merges of these few accumulators.
        self._minutes: dict[tuple[int, int, str, str], list] = {}

    def add(
        self,
        integration_id: int,
        epoch_s: float,
        source: str,
        endpoint: str,
        status: int | None,
        outcome: str,
        latency_ms: float,
        attempt: int = 1,
        deprecated: bool = False,
        ratelimit_remaining: int | None = None,
        ratelimit_limit: int | None = None,
        token_remaining: int | None = None,
        token_limit: int | None = None,
    ) -> None:
        """Count one attempt (epoch_s: its `created` time in seconds since the epoch)."""
        if latency_ms != latency_ms:
            raise ValueError("latency_ms is NaN; the recorder must store a measured latency")
        key = (integration_id, int(epoch_s // 60) * 60, source, endpoint)
        acc = self._minutes.get(key)
        if acc is None:
            acc = self._minutes[key] = new_accumulator()
        acc[0] += 1
        acc[_OUTCOME_SLOT.get(outcome, _OTHER)] += 1
        if status is not None:
            slot = _STATUS_CLASS.get(status // 100)
            if slot is not None:
                acc[slot] += 1
            slot = _STATUS_EXACT.get(status)
            if slot is not None:
                acc[slot] += 1
        if attempt > 1:
            acc[_RETRIES] += 1
        if deprecated:
            acc[_DEPRECATED] += 1
        acc[_SUM] += latency_ms
        if acc[_MIN] is None or latency_ms < acc[_MIN]:
            acc[_MIN] = latency_ms
        if acc[_MAX] is None or latency_ms > acc[_MAX]:
            acc[_MAX] = latency_ms
        if ratelimit_remaining is not None or token_remaining is not None:
            _merge_ratelimit(
                acc, *_tightest(ratelimit_remaining, ratelimit_limit, token_remaining, token_limit)
            )
        hist = acc[_HIST]
        index = bucket_index(latency_ms)
        hist[index] = hist.get(index, 0) + 1
        self.rows += 1

    def add_log(self, row: RequestLog) -> None:
        """Count one RequestLog row (saved or not)."""
        iid, created, source, method, path, *figures = _LOG_FIELDS(row)
        self.add(iid, _epoch(created), source, endpoint_of(method, path), *figures)

    def add_many(self, rows: Iterable[Sequence]) -> None:
        """Count many rows, each a sequence of ``ROW_FIELDS`` values; the same as ``add``
        per row, several times faster."""
        self._count(rows, _BY_INDEX)

    def _count(self, rows: Iterable, get: _Access) -> None:
        # The writer's hot path (every recorded row passes here): rows are grouped by minute
        # and endpoint in one pass, then each group is counted with built-ins (sum, min,
        # max, Counter) instead of Python steps per row and counter. A NaN latency raises
        # ValueError before anything is counted.
        groups: dict[tuple, list] = {}
        created_of, group_of = get.created, get.group
        for row in rows:
            created = created_of(row)
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            key = (group_of(row), int(created.timestamp() // 60) * 60)
            group = groups.get(key)
            if group is None:
                groups[key] = [row]
            else:
                group.append(row)
        counted = []
        for key, group in groups.items():
            latencies = list(map(get.latency, group))
            latency_sum = sum(latencies)
            if latency_sum != latency_sum and any(ms != ms for ms in latencies):
                raise ValueError("latency_ms is NaN; the recorder must store a measured latency")
            counted.append((key, group, latencies, latency_sum))
        minutes = self._minutes
        for ((iid, source, method, path), minute), group, latencies, latency_sum in counted:
            key = (iid, minute, source, endpoint_of(method, path))
            acc = minutes.get(key)
            if acc is None:
                acc = minutes[key] = new_accumulator()
            acc[0] += len(group)
            for outcome, n in Counter(map(get.outcome, group)).items():
                acc[_OUTCOME_SLOT.get(outcome, _OTHER)] += n
            for status, n in Counter(map(get.status, group)).items():
                if status is not None:
                    slot = _STATUS_CLASS.get(status // 100)
                    if slot is not None:
                        acc[slot] += n
                    slot = _STATUS_EXACT.get(status)
                    if slot is not None:
                        acc[slot] += n
            attempts = list(map(get.attempt, group))
            if max(attempts) > 1:  # retries are rare: count them only when there are any
                acc[_RETRIES] += sum(attempt > 1 for attempt in attempts)
            acc[_DEPRECATED] += sum(map(bool, map(get.deprecated, group)))
            acc[_SUM] += latency_sum
            low, high = min(latencies), max(latencies)
            if acc[_MIN] is None or low < acc[_MIN]:
                acc[_MIN] = low
            if acc[_MAX] is None or high > acc[_MAX]:
                acc[_MAX] = high
            _merge_group_ratelimit(acc, group, get)
            _add_counts(acc[_HIST], Counter(map(bucket_index, latencies)))
            self.rows += len(group)

    def buckets(self) -> dict[Key, list]:
        """Every bucket this batch touches, at each grain, plus the all-endpoints totals."""
        out: dict[Key, list] = {}
        for (integration_id, minute, source, endpoint), acc in self._minutes.items():
            for grain in self.grains:
                seconds = GRAIN_SECONDS[grain]
                start = minute // seconds * seconds
                for ep in (endpoint, ALL_ENDPOINTS):
                    key = (integration_id, grain, start, source, ep)
                    target = out.get(key)
                    if target is None:
                        target = out[key] = new_accumulator()
                    merge_into(target, acc)
        return out


def apply_rows(rows: Sequence[RequestLog]) -> None:
    """Add these raw rows to their buckets; call it in the transaction that inserts them.

    Raw rows and their bucket increments then commit (or roll back) together, so every row
    is counted exactly once, and a late row lands in the bucket of its own `created` time.
    """
    if not rows:
        return
    batch = Batch()
    batch._count(rows, _BY_ATTR)
    write(batch)


def apply_dicts(rows: Sequence[Mapping]) -> None:
    """``apply_rows`` for row dicts holding (at least) ``ROW_FIELDS``: the recorder's rows."""
    if not rows:
        return
    write(count_dicts(rows))


def count_dicts(rows: Iterable[Mapping]) -> Batch:
    """The in-memory half of ``apply_dicts``: count the rows, touch no database (so the
    writer can do it while PostgreSQL is still busy with the rows' COPY); ``write`` it."""
    batch = Batch()
    batch._count(rows, _BY_KEY)
    return batch


# --- Writing buckets ---------------------------------------------------------------------------
# SQL here is assembled from this module's column names and placeholders; values are always
# query parameters.

_TABLE = MetricBucket._meta.db_table
# Keys per statement: 5 parameters each keeps well inside every backend's parameter limit.
_CHUNK = 500


def write(batch: Batch) -> int:
    """Merge a batch into the stored buckets (read-modify-write); return buckets touched.

    SQLite: the writer's IMMEDIATE transaction already serialises writers, so it reads the
    existing rows, updates them and inserts the rest. PostgreSQL, where several writer
    processes run at once: it first inserts the missing keys empty (ON CONFLICT DO NOTHING,
    in key order), then locks every key with SELECT … FOR UPDATE in key order, so two writers
    touching the same buckets queue instead of losing an increment or deadlocking.
    """
    buckets = batch.buckets()
    if not buckets:
        return 0
    keys = sorted(buckets)
    sql = _statements()
    locking = sql.locking
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            key_params = _key_params(chunk)
            if locking:
                _insert_empty(cursor, sql, key_params)
            existing = _select(cursor, sql, key_params, for_update=locking)
            updates, inserts = [], []
            for key, params in zip(chunk, key_params, strict=True):
                acc = buckets[key]
                stored = existing.get(key)
                if stored is None:
                    inserts.append(params + column_values(acc))
                else:
                    row_id, stored_acc = stored
                    merge_into(stored_acc, acc)
                    updates.append([*column_values(stored_acc), row_id])
            if updates and sql.update_from:
                # One statement for the chunk: an UPDATE per key is parsed, planned and
                # executed on its own, which cost PostgreSQL more than the COPY of the rows.
                columns = [list(column) for column in zip(*updates, strict=True)]
                for i in sql.float_columns:
                    # An array holds one type: a latency that arrived as 120 (an int) beside
                    # 80.5 would not bind.
                    columns[i] = [None if v is None else float(v) for v in columns[i]]
                cursor.execute(sql.update_from, columns)
            elif updates:
                cursor.executemany(sql.update, updates)
            if inserts:
                cursor.executemany(sql.insert, inserts)
    return len(keys)


@dataclass(frozen=True)
class _Statements:
    locking: bool
    adapt_start: Callable[[datetime], object]
    values_row: str
    update: str
    insert: str
    insert_empty: str  # {values} is filled in per chunk
    select: str  # {values} is filled in per chunk
    select_for_update: str
    update_from: str = ""  # PostgreSQL: one UPDATE … FROM unnest(column arrays) per chunk
    float_columns: tuple[int, ...] = ()  # of update_from's arrays


_statements_cache: dict[str, _Statements] = {}


def _statements() -> _Statements:
    """The write's SQL for the current backend, built once: the connection proxy's
    attribute lookups are not free on a path that runs for every writer batch."""
    vendor = connection.vendor
    found = _statements_cache.get(vendor)
    if found is not None:
        return found
    ops = connection.ops
    quote = ops.quote_name
    if vendor == "postgresql":
        # The keys as one array per column: a short statement whatever the chunk's size,
        # which psycopg prepares once (a VALUES list of N rows is new text, split and
        # rendered again for every batch: more of the writer's time than the COPY).
        values_row = (
            "SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[], "
            "%s::varchar[], %s::varchar[])"
        )
    else:
        values_row = "VALUES (%s, %s, %s, %s, %s)"
    sets = ", ".join(f"{quote(c)} = %s" for c in VALUE_COLUMNS)
    all_columns = ", ".join(map(quote, KEY_COLUMNS + VALUE_COLUMNS))
    marks = ", ".join(["%s"] * (len(KEY_COLUMNS) + len(VALUE_COLUMNS)))
    key_columns = ", ".join(map(quote, KEY_COLUMNS))
    zeros = ", ".join(["0"] * (_N + 1))  # the counters and latency_sum
    key_cols = ", ".join(f"k.{c}" for c in KEY_COLUMNS)
    cols = ", ".join(f"b.{quote(c)}" for c in VALUE_COLUMNS)
    join = " AND ".join(f"b.{quote(c)} = k.{c}" for c in KEY_COLUMNS)
    # The CTE join (not a row-value IN) lets SQLite probe the unique key index per key.
    select = (
        f"WITH k({', '.join(KEY_COLUMNS)}) AS ({{values}}) "  # noqa: S608 - constants
        f"SELECT b.id, {key_cols}, {cols} FROM k JOIN {_TABLE} b ON {join}"
    )
    order = ", ".join(f"b.{c}" for c in KEY_COLUMNS)
    update_from = ""
    float_columns: tuple[int, ...] = ()
    if vendor == "postgresql":
        fields = [MetricBucket._meta.get_field(c) for c in VALUE_COLUMNS]
        float_columns = tuple(
            i for i, f in enumerate(fields) if f.get_internal_type() == "FloatField"
        )
        arrays = ", ".join(f"%s::{f.cast_db_type(connection)}[]" for f in fields)
        names = ", ".join(map(quote, VALUE_COLUMNS))
        update_from = (
            f"UPDATE {_TABLE} AS b SET "  # noqa: S608 - constants
            + ", ".join(f"{quote(c)} = v.{quote(c)}" for c in VALUE_COLUMNS)
            + f" FROM unnest({arrays}, %s::bigint[]) AS v({names}, id) WHERE b.id = v.id"
        )
    found = _Statements(
        locking=connection.features.has_select_for_update,
        adapt_start=ops.adapt_datetimefield_value,
        values_row=values_row,
        update=f"UPDATE {_TABLE} SET {sets} WHERE id = %s",  # noqa: S608
        insert=f"INSERT INTO {_TABLE} ({all_columns}) VALUES ({marks})",  # noqa: S608
        insert_empty=(
            f"INSERT INTO {_TABLE} ({key_columns}, {', '.join(COUNTERS)}, latency_sum, "  # noqa: S608
            f"histogram) SELECT k.*, {zeros}, %s FROM ({{values}}) AS k "
            f"ORDER BY 1, 2, 3, 4, 5 ON CONFLICT DO NOTHING"
        ),
        select=select,
        select_for_update=f"{select} ORDER BY {order} FOR UPDATE OF b",
        update_from=update_from,
        float_columns=float_columns,
    )
    _statements_cache[vendor] = found
    return found


def _key_params(keys: Sequence[Key]) -> list[list]:
    adapt = _statements().adapt_start
    starts: dict[int, object] = {}  # a batch's keys share a handful of starts
    out = []
    for integration_id, grain, start, source, endpoint in keys:
        when = starts.get(start)
        if when is None:
            when = starts[start] = adapt(datetime.fromtimestamp(start, UTC))
        out.append([integration_id, grain, when, source, endpoint])
    return out


def column_values(acc: list) -> list:
    """An accumulator as the values of VALUE_COLUMNS (counters, latency, rate limit, blob)."""
    hist = encode_counts(acc[_HIST])
    if len(hist) > _REMEMBER_OVER:
        _remember(hist, acc[_HIST])
    return [*acc[:_N], acc[_SUM], acc[_MIN], acc[_MAX], acc[_RL_REM], acc[_RL_LIM], hist]


def _values(sql: _Statements, key_params: Sequence[list]) -> tuple[str, list]:
    if sql.values_row.startswith("SELECT"):  # PostgreSQL: one array per key column
        return sql.values_row, [list(column) for column in zip(*key_params, strict=True)]
    rows = ", ".join([sql.values_row[len("VALUES ") :]] * len(key_params))
    return f"VALUES {rows}", list(itertools.chain(*key_params))


def _insert_empty(cursor, sql: _Statements, key_params: Sequence[list]) -> None:
    values, params = _values(sql, key_params)
    # The histogram's placeholder comes before the VALUES list in the statement.
    cursor.execute(sql.insert_empty.format(values=values), [b"", *params])


def _select(
    cursor, sql: _Statements, key_params: Sequence[list], *, for_update: bool
) -> dict[Key, tuple[int, list]]:
    values, params = _values(sql, key_params)
    statement = sql.select_for_update if for_update else sql.select
    cursor.execute(statement.format(values=values), params)
    found = {}
    for row in cursor.fetchall():
        row_id, integration_id, grain, start, source, endpoint = row[:6]
        acc = list(row[6 : 6 + _N + 5])
        acc.append(_recall(row[-1]))
        found[(integration_id, grain, _to_epoch(start), source, endpoint)] = (row_id, acc)
    return found


def _to_epoch(value: datetime | str) -> int:
    # SQLite hands back the parameter text we stored; PostgreSQL an aware datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return int(_epoch(value))


# --- Histogram blobs -----------------------------------------------------------------------
# Accumulators hold sparse {bucket index: count} dicts, which monitoring.histogram's
# encode_counts/decode_counts turn into blobs and back. The hour and day blobs this process
# wrote last are kept with their counts: the next batch finds the very same bytes in the
# table and skips decoding them. Keyed by the bytes themselves, so a
# blob changed by anyone else (another process, a rolled-back write, a rebuild) just misses.
_parsed: dict[bytes, dict[int, int]] = {}
_parsed_lock = threading.Lock()
_PARSED_MAX = 512
_REMEMBER_OVER = 64  # bytes; smaller blobs parse about as fast as a lookup


def _remember(blob: bytes, counts: dict[int, int]) -> None:
    with _parsed_lock:
        if len(_parsed) >= _PARSED_MAX:
            del _parsed[next(iter(_parsed))]  # oldest first
        _parsed[blob] = dict(counts)


def _recall(blob: bytes | memoryview | None) -> dict[int, int]:
    if blob and len(blob) > _REMEMBER_OVER:
        blob = bytes(blob)
        with _parsed_lock:
            counts = _parsed.get(blob)
        if counts is not None:
            return dict(counts)  # a copy: the caller adds to it
    return decode_counts(blob)


# --- Rebuilding from raw rows --------------------------------------------------------------


@dataclass(frozen=True)
class RebuildReport:
    days: int
    raw_rows: int
    buckets: int


def rebuild(
    start: datetime,
    end: datetime,
    integration_ids: Sequence[int] | None = None,
    *,
    now: datetime | None = None,
) -> RebuildReport:
    """Recompute the buckets of every UTC day touching [start, end) from the raw rows.

    Idempotent: each day's buckets are deleted and rebuilt in one transaction. Whole days,
    because an hour or day bucket is only right when all of its rows are read. Refuses days
    whose raw rows may already be pruned (older than RETAIN_RAW_DAYS): rebuilding those would
    replace complete buckets with partial ones. Minute (and quarter-hour) buckets are not
    recreated for days their retention has already dropped.
    """
    now = now or timezone.now()
    day = truncate(start, Grain.DAY)
    last = truncate(end - timedelta(microseconds=1), Grain.DAY) if end > start else day
    if end <= start:
        raise ValueError("rebuild needs start before end")
    raw_horizon = now - timedelta(days=settings.UPSTREAM["RETAIN_RAW_DAYS"])
    if day < raw_horizon:
        first_ok = truncate(raw_horizon, Grain.DAY) + timedelta(days=1)
        raise ValueError(
            f"raw rows before {raw_horizon:%Y-%m-%d %H:%M} UTC may be pruned, so days before "
            f"{first_ok:%Y-%m-%d} cannot be rebuilt exactly; start from {first_ok:%Y-%m-%d}"
        )
    horizons = {}
    for grain in GRAINS:
        keep = retain_days(grain)
        horizons[grain] = None if keep is None else now - timedelta(days=keep)
    days = raw_rows = touched = 0
    while day <= last:
        next_day = day + timedelta(days=1)
        grains = tuple(g for g in GRAINS if horizons[g] is None or next_day > horizons[g])
        rows, buckets = _rebuild_day(day, next_day, integration_ids, grains)
        days, raw_rows, touched = days + 1, raw_rows + rows, touched + buckets
        day = next_day
    return RebuildReport(days, raw_rows, touched)


def _rebuild_day(
    day: datetime, next_day: datetime, integration_ids: Sequence[int] | None, grains: tuple
) -> tuple[int, int]:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Blocks writers' bucket updates (not their raw inserts) until this day commits:
            # a writer's rows are then either seen here or added after, never both or neither.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        buckets = MetricBucket.objects.filter(grain__in=grains, start__gte=day, start__lt=next_day)
        raw = RequestLog.objects.filter(created__gte=day, created__lt=next_day)
        if integration_ids is not None:
            buckets = buckets.filter(integration_id__in=integration_ids)
            raw = raw.filter(integration_id__in=integration_ids)
        buckets.delete()  # nothing hangs off a bucket: one DELETE statement
        batch = Batch(grains)
        rows = raw.order_by().values_list(*ROW_FIELDS).iterator(chunk_size=5000)
        while chunk := list(itertools.islice(rows, 5000)):
            batch.add_many(chunk)
        return batch.rows, write(batch)
