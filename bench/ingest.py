"""Recorder throughput into SQLite vs raw ``sqlite3.executemany`` into the same schema.

Both peers write the same rows to the same scratch database (migrated, WAL mode) in
batches of ``--batch`` rows, one transaction per batch, while a separate reader process
runs dashboard-style queries against the file the whole time. Repetitions go in ABBA order
so drift in machine load hits both peers alike.

* raw: tuples built beforehand, ``BEGIN IMMEDIATE; executemany(INSERT …); COMMIT`` — the
  floor of what SQLite costs, no Python work per row.
* recorder: ``recorder.record(row dict)`` for every row, then ``flush()``; the writer thread
  turns dicts into parameters, inserts, and rolls the batch up into metric buckets in the
  same transaction (as deployed). Printed as well: the recorder with the rollup switched
  off, to show what the rollup costs.

Goal: recorder (as deployed) ≥ 40 % of raw and ≥ 25 000 rows/s, 0 lock errors.
The last line is JSON.

Both peers use the same batch size: by default the deployed ``RECORDER_BATCH_SIZE``.

    python bench/ingest.py [--rows 30000] [--batch N] [--reps 2]

With ``--database-url postgres://…`` (a scratch database it may migrate and truncate) it
measures the recorder on PostgreSQL instead: as deployed (rows by ``COPY … FROM STDIN``
and their rollup in the same transaction) against the same recorder with the rows sent
by executemany, plus psycopg alone for each method (the database's floor) and the table's
size per million rows. Goal: COPY ≥ 50 000 rows/s and ≥ 3× the executemany path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

READER = r"""
import json, sqlite3, sys, time
path, integration = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path, timeout=5)
queries = errors = 0
sys.stdout.write("ready\n"); sys.stdout.flush()
import select
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        db.execute(
            "SELECT count(*), avg(latency_ms), sum(status >= 500) FROM monitoring_requestlog "
            "WHERE integration_id = ? AND created >= ?", (integration, "2000-01-01")
        ).fetchone()
        db.execute(
            "SELECT endpoint, total, s4xx FROM monitoring_metricbucket WHERE integration_id = ? "
            "AND grain = 'minute' ORDER BY start DESC LIMIT 60", (integration,)
        ).fetchall()
        queries += 2
    except sqlite3.OperationalError:
        errors += 1
    time.sleep(0.005)
print(json.dumps({"queries": queries, "errors": errors}))
"""

ENDPOINTS = [
    ("GET", "/v1/customers"),
    ("GET", "/v1/customers/{token}"),
    ("POST", "/v1/charges"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/messages/{token}"),
]


def _setup_django(workdir: str) -> None:
    sys.path.insert(0, str(ROOT))
    from bench import _benchdb

    _benchdb.setup_scratch_django(
        os.path.join(workdir, "ingest.sqlite3"), os.path.join(workdir, "spool")
    )


def _rows(integration_id: int, n: int, seed: int) -> list[dict]:
    from monitoring.attempts import to_row
    from monitoring.parsing import classify_status

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(minutes=10)
    rows = []
    for i in range(n):
        method, path = rng.choice(ENDPOINTS)
        status = 200 if rng.random() > 0.03 else rng.choice((401, 404, 429, 503))
        rows.append(
            {
                "created": start + timedelta(milliseconds=i * 10),
                "integration_id": integration_id,
                "source": "client",
                "method": method,
                "scheme": "https",
                "host": "api.example.com",
                "path": path,
                "query": "",
                "status": status,
                "outcome": classify_status(status),
                "latency_ms": rng.lognormvariate(4.4, 0.6),
                "request_bytes": 0,
                "response_bytes": rng.randint(200, 5000),
                "error_code": "" if status < 400 else "some_error",
                "error_message": "" if status < 400 else "Something went wrong.",
                "error_body": "",
                "call_id": f"{rng.getrandbits(128):032x}",
                "attempt": 1,
                "backoff_ms": 0.0,
                "ratelimit_limit": 600,
                "ratelimit_remaining": rng.randint(0, 600),
                "ratelimit_reset": None,
                "retry_after_s": None,
                "deprecated": False,
                "deprecation_at": None,
                "sunset_at": None,
                "deprecation_link": "",
                "api_version": "2026-01-01",
            }
        )
    # Complete rows, as the writer makes them (columns added to the row contract after this
    # benchmark was written get their defaults).
    return [to_row(row) for row in rows]


def _raw(path: str, rows: list[dict], batch: int) -> tuple[float, int]:
    from monitoring.attempts import COLUMNS
    from monitoring.storage import insert_sql

    sql = insert_sql().replace("%s", "?")
    params = [
        tuple(
            str(v.astimezone(UTC).replace(tzinfo=None)) if isinstance(v, datetime) else v
            for v in (row[c] for c in COLUMNS)
        )
        for row in rows
    ]
    db = sqlite3.connect(path, timeout=20, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    errors = 0
    start = time.perf_counter()
    for i in range(0, len(params), batch):
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, params[i : i + batch])
                db.execute("COMMIT")
                break
            except sqlite3.OperationalError:
                errors += 1
                if db.in_transaction:
                    db.execute("ROLLBACK")
    elapsed = time.perf_counter() - start
    db.close()
    return len(rows) / elapsed, errors


def _recorder(rows: list[dict], batch: int, spool: str, rollup: bool) -> tuple[float, int]:
    from monitoring import storage
    from monitoring.recorder import Recorder, RecorderConfig

    saved = storage._apply_rows
    if not rollup:
        storage._apply_rows = None
    config = RecorderConfig.from_settings(
        batch_size=batch, queue_size=len(rows) + 1, spool_dir=Path(spool)
    )
    rec = Recorder(config)
    rec.record(dict(rows[0]))  # start the writer and open its connection outside the clock
    rec.flush()
    written_before = rec.stats()["written"]
    try:
        start = time.perf_counter()
        for row in rows[1:]:
            rec.record(dict(row))
        rec.flush(timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        storage._apply_rows = saved
    stats = rec.stats()
    rec.stop(timeout=10)
    assert stats["written"] - written_before == len(rows) - 1, stats
    return (len(rows) - 1) / elapsed, stats["db_errors"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000, help="rows per run")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="rows per transaction for both peers (default: the deployed RECORDER_BATCH_SIZE)",
    )
    parser.add_argument("--reps", type=int, default=2, help="ABBA repetitions")
    parser.add_argument("--database-url", help="measure PostgreSQL's executemany vs COPY")
    args = parser.parse_args()
    if args.database_url:
        postgres_main(args.database_url, args.rows, args.batch, args.reps)
        return

    with tempfile.TemporaryDirectory(prefix="upstream-ingest-") as workdir:
        _setup_django(workdir)
        if args.batch is None:
            from django.conf import settings

            args.batch = settings.UPSTREAM["RECORDER_BATCH_SIZE"]
        from monitoring.models import Integration, RequestLog

        integration = Integration.objects.create(name="Bench", slug="bench")
        path = os.environ["SQLITE_PATH"]
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, path, str(integration.pk)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout.readline().strip() == "ready"
        results: dict[str, list[float]] = {"raw": [], "recorder": [], "recorder_no_rollup": []}
        lock_errors = 0
        expected = 0
        try:
            for rep in range(args.reps):
                order = ["raw", "recorder", "recorder_no_rollup"]
                for peer in order if rep % 2 == 0 else order[::-1]:
                    rows = _rows(integration.pk, args.rows, seed=rep * 10 + len(peer))
                    if peer == "raw":
                        rate, errors = _raw(path, rows, args.batch)
                    else:
                        rate, errors = _recorder(
                            rows, args.batch, os.path.join(workdir, "spool"), peer == "recorder"
                        )
                    results[peer].append(rate)
                    lock_errors += errors
                    expected += len(rows)
        finally:
            reader.stdin.close()
            reader_stats = json.loads(reader.stdout.read().strip().splitlines()[-1])
            reader.wait()
        stored = RequestLog.objects.filter(integration=integration).count()

    raw = statistics.median(results["raw"])
    ours = statistics.median(results["recorder"])
    bare = statistics.median(results["recorder_no_rollup"])
    lock_errors += reader_stats["errors"]
    ratio = ours / raw
    print(f"rows per run: {args.rows}, batch {args.batch}, {args.reps} ABBA repetitions")
    print(f"  raw sqlite3 executemany        {raw:10,.0f} rows/s")
    print(f"  recorder (rows + rollup)       {ours:10,.0f} rows/s   ratio {ratio:.2f}")
    print(f"  recorder, rollup switched off  {bare:10,.0f} rows/s   ratio {bare / raw:.2f}")
    print(
        f"concurrent reader: {reader_stats['queries']} queries; lock errors (reader + writers): "
        f"{lock_errors}; rows stored {stored} of {expected}"
    )
    print("goal: recorder ≥ 40 % of raw and ≥ 25 000 rows/s, 0 lock errors")
    print(
        json.dumps(
            {
                "bench": "ingest",
                "rows_per_run": args.rows,
                "batch": args.batch,
                "raw_rows_per_s": round(raw),
                "recorder_rows_per_s": round(ours),
                "ratio": round(ratio, 3),
                "recorder_no_rollup_rows_per_s": round(bare),
                "ratio_no_rollup": round(bare / raw, 3),
                "reader_queries": reader_stats["queries"],
                "lock_errors": lock_errors,
                "rows_expected": expected,
                "rows_stored": stored,
            }
        )
    )


def _pg_floor_rows(rows: list[dict]) -> list[tuple]:
    from monitoring.attempts import COLUMNS

    return [tuple(row[c] for c in COLUMNS) for row in rows]


def _pg_floor(url: str, peer: str, rows: list[tuple], batch: int) -> float:
    """psycopg alone, no Django, no rollup: what PostgreSQL costs for each method."""
    import psycopg

    from monitoring import storage

    insert, copy, types = storage.insert_sql(), storage._copy_sql(), storage._copy_types()
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            with conn.transaction(), conn.cursor() as cur:
                if peer == "copy":
                    with cur.copy(copy) as cp:
                        cp.set_types(types)
                        for row in chunk:
                            cp.write_row(row)
                else:
                    cur.executemany(insert, chunk)
        return len(rows) / (time.perf_counter() - started)


def _executemany_instead(rows: list[dict], *, then=None):
    """The peer: storage.copy_rows' contract, by the executemany the other backends use."""
    from monitoring import storage

    storage._executemany_rows(rows)
    return None if then is None else then(rows)


def postgres_main(url: str, n: int, batch: int | None, reps: int) -> None:
    """The recorder as deployed (COPY + rollup) against the same recorder on executemany."""
    import psycopg

    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from monitoring import partitions, storage
    from monitoring.models import Integration, MetricBucket, RequestLog

    batch = batch or settings.UPSTREAM["RECORDER_BATCH_SIZE"]
    call_command("migrate", verbosity=0, skip_checks=True)
    partitions.ensure()
    integration, _ = Integration.objects.get_or_create(slug="bench-ingest", name="Bench ingest")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE monitoring_requestlog, monitoring_metricbucket")
    copy_rows = storage.copy_rows
    peers = ("copy", "executemany", "floor_copy", "floor_executemany")
    results: dict[str, list[float]] = {peer: [] for peer in peers}
    expected = 0
    with tempfile.TemporaryDirectory(prefix="upstream-ingest-pg-") as spool:
        for rep in range(reps):
            for peer in peers if rep % 2 == 0 else peers[::-1]:
                rows = _rows(integration.pk, n, seed=rep * 10 + len(peer))
                if peer.startswith("floor_"):
                    rate = _pg_floor(url, peer[6:], _pg_floor_rows(rows), batch)
                    expected += len(rows)
                else:
                    if peer == "executemany":
                        storage.copy_rows = _executemany_instead
                    try:
                        rate, errors = _recorder(rows, batch, spool, rollup=True)
                    finally:
                        storage.copy_rows = copy_rows
                    assert errors == 0, errors
                    expected += len(rows)
                results[peer].append(rate)
    stored = RequestLog.objects.count()
    bucket_total = MetricBucket.objects.filter(grain="hour", endpoint="").aggregate(
        total=django.db.models.Sum("total")
    )["total"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE monitoring_requestlog")
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'monitoring_requestlog'::regclass"
        ).fetchone()[0]
        bucket_size = conn.execute(
            "SELECT pg_total_relation_size('monitoring_metricbucket')"
        ).fetchone()[0]
    med = {peer: statistics.median(rates) for peer, rates in results.items()}
    copy, many = med["copy"], med["executemany"]
    mb_per_million = float(size) / stored * 1_000_000 / 2**20
    print(f"PostgreSQL, {n:,} rows per run, batch {batch}, {reps} ABBA repetitions")
    print(f"  recorder + rollup, COPY (deployed)  {copy:10,.0f} rows/s   ratio {copy / many:.2f}")
    print(f"  recorder + rollup, executemany      {many:10,.0f} rows/s")
    print(f"  floor: psycopg COPY, no rollup      {med['floor_copy']:10,.0f} rows/s")
    print(f"  floor: psycopg executemany          {med['floor_executemany']:10,.0f} rows/s")
    print(f"  rows stored {stored} of {expected}; hour buckets count {bucket_total} recorder rows")
    print(f"  RequestLog with its indexes: {mb_per_million:,.0f} MB per million rows")
    print("goal: recorder with COPY ≥ 50 000 rows/s and ≥ 3× the executemany path")
    print(
        json.dumps(
            {
                "bench": "ingest-postgresql",
                "rows_per_run": n,
                "batch": batch,
                "copy_rows_per_s": round(copy),
                "executemany_rows_per_s": round(many),
                "ratio": round(copy / many, 2),
                "floor_copy_rows_per_s": round(med["floor_copy"]),
                "floor_executemany_rows_per_s": round(med["floor_executemany"]),
                "rows_expected": expected,
                "rows_stored": stored,
                "mb_per_million_rows": round(mb_per_million, 1),
                "bucket_table_mb": round(bucket_size / 2**20, 1),
                "goal_met": copy >= 50_000 and copy >= 3 * many,
            }
        )
    )


if __name__ == "__main__":
    main()
