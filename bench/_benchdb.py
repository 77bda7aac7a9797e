"""Build (or reuse) the benchmark database: N raw calls over 30 days × 50 integrations + buckets.

Usage from a benchmark script (before anything else imports Django models):

    from bench import _benchdb
    db = _benchdb.open_db(rows=10_000_000)   # builds var/bench/upstream-10000000.sqlite3 once
    # Django now points at db.path; db.end is the data set's "now".

The file is a normal Upstream SQLite database (made by `migrate`), filled fast: raw sqlite3
executemany with the RequestLog indexes dropped during the load, and the metric buckets
computed directly from the generated rows with monitoring.rollup's own accumulators (minute
buckets only for the last 3 days and quarter-hours for the last 14, as retention would
leave them). A build is
reused while its parameters match; pass rebuild=True (or delete the file) to start over.

The traffic: integration volumes follow a Zipf-like curve (the busiest gets ~10× the median),
8 endpoints each, 85 % client / 10 % ingest / 5 % probe calls, lognormal latencies with a
per-endpoint median, ~5 % errors, occasional transport failures, retries, rate-limit headers,
one deprecated endpoint, and a 3-hour burst of 401s on integration #3 a day before the end.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_DIR = ROOT / "var" / "bench"
ENDPOINTS = (
    ("GET", "/v1/messages/{id}"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/messages"),
    ("GET", "/v1/users/{id}"),
    ("PATCH", "/v1/users/{id}"),
    ("DELETE", "/v1/users/{id}"),
    ("GET", "/v1/health"),
    ("POST", "/v1/batch"),
)
ENDPOINT_WEIGHTS = (30, 20, 15, 12, 8, 3, 7, 5)
SOURCES = (("client", 85), ("ingest", 10), ("probe", 5))
STATUSES = (
    (200, 800),
    (201, 60),
    (204, 20),
    (304, 10),
    (400, 20),
    (401, 15),
    (403, 5),
    (404, 20),
    (429, 10),
    (500, 15),
    (502, 5),
    (503, 5),
    (None, 15),
)
TRANSPORT = ("timeout", "connect_error", "tls_error", "read_error")
BURST_INTEGRATION = 3  # 1-based position: its 401 burst gives the alert benchmarks a spike


@dataclass(frozen=True)
class BenchDB:
    path: Path
    rows: int
    days: int
    integration_ids: list[int]
    start: datetime
    end: datetime

    @property
    def busiest(self) -> int:
        return self.integration_ids[0]


def default_path(rows: int, integrations: int = 50) -> Path:
    tail = "" if integrations == 50 else f"-{integrations}i"
    return BENCH_DIR / f"upstream-{rows}{tail}.sqlite3"


def open_db(
    rows: int = 2_000_000,
    *,
    days: int = 30,
    integrations: int = 50,
    seed: int = 7,
    path: Path | None = None,
    rebuild: bool = False,
    quiet: bool = False,
    buckets: bool = True,
) -> BenchDB:
    """Point Django at the benchmark database, building it first when needed.

    buckets=False leaves the metric buckets out (a raw-only database builds ~3x faster).
    """
    path = Path(path or default_path(rows, integrations))
    params = {"rows": rows, "days": days, "integrations": integrations, "seed": seed, "v": 2}
    if not buckets:
        params["buckets"] = 0
    wanted = {k: str(v) for k, v in params.items()} | {"complete": "1"}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several benchmarks may ask for the same database at once: the first builds it, the
    # others wait here and then reuse it.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _meta(path)
        if rebuild or any(found.get(k) != v for k, v in wanted.items()):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            _setup_django(path)
            _build(path, rows, days, integrations, seed, params, quiet)
        else:
            _setup_django(path)
            _migrate_forward(path, quiet)
    return _describe(path, rows, days)


def _migrate_forward(path: Path, quiet: bool) -> None:
    """Bring a reused database up to the code: apply newer migrations (as an upgrade would),
    and add bucket indexes the models declare that it lacks (this round's placeholder
    migrations were applied empty to databases built before they were filled), then ANALYZE.
    """
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from monitoring.models import MetricBucket

    started = time.perf_counter()
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        present = connection.introspection.get_constraints(cursor, MetricBucket._meta.db_table)
    missing = [i for i in MetricBucket._meta.indexes if i.name not in present]
    if missing:
        with connection.schema_editor() as editor:
            for index in missing:
                editor.add_index(MetricBucket, index)
    if pending or missing:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        _log(
            quiet,
            f"bench db: brought {path.name} up to date in {time.perf_counter() - started:.0f} s",
        )


def setup_scratch_django(sqlite_path: str, spool_dir: str) -> None:
    """Set Django up on a fresh, migrated SQLite file (the recorder benchmarks' own database)."""
    os.environ["SQLITE_PATH"] = sqlite_path
    os.environ["UPSTREAM_SPOOL_DIR"] = spool_dir
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _setup_django(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ["SQLITE_PATH"] = str(path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 60)
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    import django
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        django.setup()
    if settings.DATABASES["default"]["NAME"] != str(path):
        raise RuntimeError(f"Django is already set up on {settings.DATABASES['default']['NAME']}")


def _meta(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path) as conn:
            return dict(conn.execute("SELECT key, value FROM bench_meta"))
    except sqlite3.Error:
        return {}


def _describe(path: Path, rows: int, days: int) -> BenchDB:
    from monitoring.models import Integration

    meta = _meta(path)
    ids = list(
        Integration.objects.filter(slug__startswith="bench-")
        .order_by("created")
        .values_list("id", flat=True)
    )
    end = datetime.fromisoformat(meta["end"])
    return BenchDB(path, rows, days, ids, end - timedelta(days=days), end)


def _log(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _build(path, rows, days, integrations, seed, params, quiet) -> None:
    from django.core.management import call_command
    from django.db import connection

    from monitoring.models import Integration

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    # Ends on a whole hour a little in the past, so "now" sits inside the data's last hour.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(minutes=17)
    created = end - timedelta(days=days + 1)
    Integration.objects.bulk_create(
        Integration(
            name=f"Bench {i:02d}", slug=f"bench-{i:02d}", created=created + timedelta(seconds=i)
        )
        for i in range(1, integrations + 1)
    )
    ids = list(
        Integration.objects.filter(slug__startswith="bench-")
        .order_by("created")
        .values_list("id", flat=True)
    )
    connection.close()

    conn = sqlite3.connect(path, isolation_level=None)
    # A throwaway file: no journal during the load (WAL would copy every page twice).
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    conn.execute("PRAGMA temp_store=MEMORY")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
        "AND tbl_name IN ('monitoring_requestlog', 'monitoring_metricbucket')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.execute("BEGIN")
    if params.get("buckets", 1):
        loaded = _load(conn, rows, days, ids, end, seed, quiet)
    else:
        loaded = _load_raw(conn, rows, days, ids, end, seed)
    conn.execute("COMMIT")
    _log(quiet, f"bench db: {loaded:,} rows loaded, building indexes …")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE bench_meta (key TEXT PRIMARY KEY, value TEXT)")
    meta = {**{k: str(v) for k, v in params.items()}, "end": end.isoformat(), "complete": "1"}
    conn.executemany("INSERT INTO bench_meta VALUES (?, ?)", meta.items())
    conn.close()
    _log(quiet, f"bench db: built {path} in {time.perf_counter() - started:.0f} s")


def generate(
    rows: int, days: int, ids: list[int], end: datetime, seed: int
) -> Iterator[tuple[float, tuple]]:
    """Yield (epoch seconds, RequestLog column values) in time order."""
    from monitoring.parsing import classify_status  # Django-free, like this module

    rng = random.Random(seed)
    n = len(ids)
    weights = [1 / (k + 1) ** 0.8 for k in range(n)]
    medians = {
        (iid, e): math.log(rng.uniform(40, 400)) for iid in ids for e in range(len(ENDPOINTS))
    }
    deprecated = {(iid, 5) for iid in ids[::7]}
    burst_id = ids[min(BURST_INTEGRATION, n) - 1]
    burst_from = end.timestamp() - 86400 - 3 * 3600
    burst_to = burst_from + 3 * 3600
    start = end.timestamp() - days * 86400
    span = days * 86400
    statuses, status_w = zip(*STATUSES, strict=True)
    sources, source_w = zip(*SOURCES, strict=True)
    chunk = 100_000
    made = 0
    while made < rows:
        k = min(chunk, rows - made)
        who = rng.choices(ids, weights, k=k)
        what = rng.choices(range(len(ENDPOINTS)), ENDPOINT_WEIGHTS, k=k)
        status = rng.choices(statuses, status_w, k=k)
        source = rng.choices(sources, source_w, k=k)
        for j in range(k):
            ts = start + (made + j + rng.random()) * span / rows
            iid, e, st, src = who[j], what[j], status[j], source[j]
            if iid == burst_id and burst_from <= ts < burst_to and rng.random() < 0.4:
                st = 401
            method, path = ENDPOINTS[e]
            if src == "probe":
                method, path = ENDPOINTS[6]
            if st is None:
                outcome = TRANSPORT[j % len(TRANSPORT)]
                latency = 30_000.0 if outcome == "timeout" else rng.uniform(1, 3000)
            else:
                outcome = classify_status(st)
                latency = rng.lognormvariate(medians[iid, e], 0.6)
            remaining = limit = None
            if j % 3 == 0:
                limit = 1000
                remaining = 0 if st == 429 else rng.randrange(1, 1000)
            attempt = 2 if j % 37 == 0 else 1
            yield (
                ts,
                (
                    iid,
                    src,
                    method,
                    path,
                    st,
                    outcome,
                    latency,
                    attempt,
                    (iid, e) in deprecated,
                    remaining,
                    limit,
                ),
            )
        made += k


_RAW_SQL = (
    "INSERT INTO monitoring_requestlog (created, integration_id, source, method, scheme, host, "
    "path, query, status, outcome, latency_ms, error_code, error_message, error_body, call_id, "
    "attempt, backoff_ms, ratelimit_limit, ratelimit_remaining, deprecated, deprecation_link, "
    "api_version) VALUES (?, ?, ?, ?, 'https', 'api.example.com', ?, '', ?, ?, ?, '', '', '', "
    "'', ?, 0, ?, ?, ?, '', '')"
)


def _raw_row(ts: float, values: tuple) -> tuple:
    iid, src, method, path, st, outcome, latency, attempt, dep, rem, lim = values
    sec = int(ts)
    created = f"{_text(sec)}.{int((ts - sec) * 1e6):06d}"
    return (created, iid, src, method, path, st, outcome, latency, attempt, lim, rem, dep)


def _load_raw(conn, rows, days, ids, end, seed) -> int:
    pending = []
    for ts, values in generate(rows, days, ids, end, seed):
        pending.append(_raw_row(ts, values))
        if len(pending) >= 50_000:
            conn.executemany(_RAW_SQL, pending)
            pending.clear()
    conn.executemany(_RAW_SQL, pending)
    return rows


def _load(conn, rows, days, ids, end, seed, quiet) -> int:
    from monitoring import rollup
    from monitoring.models import Grain

    minute_from = end.timestamp() - 3 * 86400
    quarter_from = end.timestamp() - 14 * 86400  # retain_days(QUARTER): as long as raw rows
    bucket_sql = (
        f"INSERT INTO monitoring_metricbucket ({', '.join(rollup.KEY_COLUMNS)}, "
        f"{', '.join(rollup.VALUE_COLUMNS)}) VALUES ({', '.join(['?'] * 28)})"
    )
    pending: list[tuple] = []
    day_accs: dict = {}
    hour_batch = rollup.Batch((Grain.HOUR,))
    current_hour = current_day = None
    loaded = 0
    last_sec, prefix = -1, ""
    progress = time.perf_counter()

    def flush_hour() -> None:
        bucket_rows = []
        for key, acc in hour_batch.buckets().items():
            bucket_rows.append(_bucket_row(key, acc))
            if key[1] == Grain.HOUR:
                day_key = (key[0], Grain.DAY, key[2] // 86400 * 86400, key[3], key[4])
                target = day_accs.get(day_key)
                if target is None:
                    target = day_accs[day_key] = rollup.new_accumulator()
                rollup.merge_into(target, acc)
        conn.executemany(bucket_sql, bucket_rows)

    def flush_day() -> None:
        conn.executemany(bucket_sql, [_bucket_row(k, a) for k, a in day_accs.items()])
        day_accs.clear()

    add = None
    for ts, (iid, src, method, path, st, outcome, latency, attempt, dep, rem, lim) in generate(
        rows, days, ids, end, seed
    ):
        hour = int(ts // 3600) * 3600
        if hour != current_hour:
            if current_hour is not None:
                flush_hour()
            day = hour // 86400 * 86400
            if day != current_day and current_day is not None:
                flush_day()
            current_hour, current_day = hour, day
            if hour >= minute_from:
                grains = (Grain.MINUTE, Grain.QUARTER, Grain.HOUR)
            elif hour >= quarter_from:
                grains = (Grain.QUARTER, Grain.HOUR)
            else:
                grains = (Grain.HOUR,)
            hour_batch = rollup.Batch(grains)
            add = hour_batch.add
            # Past a grain's retention the accumulator is fed the start of the finest grain
            # still kept: its per-minute keys then collapse into one per quarter or hour.
            coarsen = 60 if hour >= minute_from else 900 if hour >= quarter_from else 3600
        sec = int(ts)
        if sec != last_sec:
            last_sec, prefix = sec, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        created = f"{prefix}.{int((ts - sec) * 1e6):06d}"
        pending.append(
            (created, iid, src, method, path, st, outcome, latency, attempt, lim, rem, dep)
        )
        add(
            iid,
            ts if coarsen == 60 else ts // coarsen * coarsen,
            src,
            f"{method} {path}",
            st,
            outcome,
            latency,
            attempt,
            dep,
            rem,
            lim,
        )
        if len(pending) >= 50_000:
            conn.executemany(_RAW_SQL, pending)
            loaded += len(pending)
            pending.clear()
            if time.perf_counter() - progress > 10:
                progress = time.perf_counter()
                _log(quiet, f"bench db: {loaded:,} / {rows:,} rows …")
    conn.executemany(_RAW_SQL, pending)
    loaded += len(pending)
    if current_hour is not None:
        flush_hour()
        flush_day()
    return loaded


@functools.lru_cache(maxsize=4096)
def _text(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def _bucket_row(key, acc) -> tuple:
    from monitoring import rollup

    integration_id, grain, start, source, endpoint = key
    when = _text(start)
    return (integration_id, grain, when, source, endpoint, *rollup.column_values(acc))


# --- PostgreSQL -------------------------------------------------------------------------------


def open_pg(url: str, rows: int = 2_000_000, *, quiet: bool = False, **kwargs) -> BenchDB:
    """Point Django at PostgreSQL (``url``, a database it may migrate and fill), holding the
    very data set of the SQLite benchmark database of the same parameters.

    The SQLite file is built first if needed (in a child process: Django is set up once per
    process); its rows, buckets and integrations are then copied over with COPY into the
    day-partitioned RequestLog, once: a copy is reused while its source matches.
    """
    import subprocess

    path = Path(kwargs.pop("path", None) or default_path(rows, kwargs.get("integrations", 50)))
    args = ", ".join(f"{k}={v!r}" for k, v in {"rows": rows, "path": str(path), **kwargs}.items())
    subprocess.run(
        [sys.executable, "-c", f"from bench import _benchdb; _benchdb.open_db({args})"],
        cwd=ROOT,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    source = _meta(path)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 60)
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, skip_checks=True)
    _migrate_forward(path, quiet)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text)")
        cursor.execute("SELECT key, value FROM bench_meta")
        copied = dict(cursor.fetchall())
    if copied != source:
        _copy_to_pg(path, source, quiet)
    end = datetime.fromisoformat(source["end"])
    from monitoring.models import Integration

    ids = list(
        Integration.objects.filter(slug__startswith="bench-")
        .order_by("created")
        .values_list("id", flat=True)
    )
    days = int(source["days"])
    return BenchDB(path, rows, days, ids, end - timedelta(days=days), end)


def _copy_to_pg(path: Path, meta: dict[str, str], quiet: bool) -> None:
    from django.db import connection, transaction

    from monitoring import partitions
    from monitoring.models import Integration, MetricBucket, RequestLog

    started = time.perf_counter()
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    end = datetime.fromisoformat(meta["end"])
    first = end - timedelta(days=int(meta["days"]) + 1)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bench_meta")
        cursor.execute(
            "TRUNCATE monitoring_requestlog, monitoring_metricbucket, monitoring_integration "
            "RESTART IDENTITY CASCADE"
        )
    day = first.date()
    while day <= end.date() + timedelta(days=1):
        partitions.create_day(day)
        day += timedelta(days=1)

    rows = src.execute("SELECT id, name, slug, created FROM monitoring_integration").fetchall()
    Integration.objects.bulk_create(
        Integration(id=pk, name=name, slug=slug, created=datetime.fromisoformat(f"{when}+00:00"))
        for pk, name, slug, when in rows
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('monitoring_integration', 'id'), "
            "(SELECT max(id) FROM monitoring_integration))"
        )
    raw_columns = [
        "created", "integration_id", "source", "method", "path", "status", "outcome",
        "latency_ms", "attempt", "ratelimit_limit", "ratelimit_remaining", "deprecated",
        "scheme", "host",
    ]  # fmt: skip
    _copy(src, "monitoring_requestlog", raw_columns, _defaults(RequestLog, raw_columns), quiet)
    bucket_columns = [f.column for f in MetricBucket._meta.concrete_fields if f.column != "id"]
    _copy(src, "monitoring_metricbucket", bucket_columns, {}, quiet)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany("INSERT INTO bench_meta VALUES (%s, %s)", list(meta.items()))
    connection.close()
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    _log(
        quiet,
        f"bench db: copied {path.name} to PostgreSQL in {time.perf_counter() - started:.0f} s",
    )


def _defaults(model, given: list[str]) -> dict[str, object]:
    """Columns the copy does not carry, with the model's defaults (NOT NULL without one
    in the database)."""
    out = {}
    for field in model._meta.concrete_fields:
        if field.column in given or field.primary_key:
            continue
        value = field.get_default()
        if field.get_internal_type() == "JSONField":
            from psycopg.types.json import Jsonb

            value = Jsonb(value)
        out[field.column] = value
    return out


def _copy(src, table: str, columns: list[str], constants: dict, quiet: bool = True) -> None:
    from django.db import connection, transaction

    extra = list(constants)
    tail = tuple(constants.values())
    names = ", ".join(columns + extra)
    cursor = src.execute(f"SELECT {', '.join(columns)} FROM {table}")
    done = 0
    with transaction.atomic(), connection.cursor() as pg:
        pg.execute("SET LOCAL TIME ZONE 'UTC'")  # the source's naive times are UTC
        with pg.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            while chunk := cursor.fetchmany(50_000):
                for row in chunk:
                    copy.write_row(row + tail)
                done += len(chunk)
                if done % 1_000_000 < 50_000:
                    _log(quiet, f"bench db: {table} {done:,} rows …")
