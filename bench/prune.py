"""Prune 1 M raw rows while a writer ingests 1 000 rows/s: chunked pruning vs one DELETE.

A raw-only database (bench/_benchdb.py, 2 × --rows calls over 28 days, built once and
reused) is copied twice. On each copy a writer process records --rate rows/s the way the
recorder does (bulk insert + monitoring.rollup.apply_rows in one transaction, 20 batches a
second) and times every batch, while a second process prunes the rows older than 14 days:

  chunked   monitoring.retention.prune() (short deletes by primary key, pauses between
            them), then 20 s of the incremental vacuum that hands free pages back
  single    one `DELETE FROM monitoring_requestlog WHERE created < cutoff`

Printed: the writer's longest stall (its slowest batch while pruning ran, against its
slowest batch before) and rows pruned per second for each. Goal: the chunked stall <= 200 ms.

With --database-url postgres://… (an empty database; it is migrated) the same writer runs
against PostgreSQL, where RequestLog is partitioned by day, and --rows rows of an expired
day are removed twice: by monitoring.partitions.drop_expired (the retention path) and, as
its peer, by one DELETE of an equal day. Goal: the drop stalls the writer <= 50 ms. Also
printed: how long writers could queue behind the drop's DETACH (its statement's duration),
the bound that load on the machine does not blur.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _benchdb  # noqa: E402 - after the sys.path line above

GOAL_STALL_MS = 200
BATCHES_PER_S = 20
WARMUP_S = 3.0
VACUUM_S = 20.0


def writer(db_path: Path, rate: int, stop: Path, out: Path) -> None:
    """Record `rate` rows/s in batches until `stop` exists; write batch timings to `out`."""
    _benchdb._setup_django(db_path)
    from django.db import transaction

    from monitoring import rollup
    from monitoring.models import Integration, RequestLog

    ids = list(Integration.objects.values_list("id", flat=True)[:10])
    per_batch = max(1, rate // BATCHES_PER_S)
    timings: list[tuple[float, float]] = []
    started = time.perf_counter()
    n = 0
    (out.parent / f"{out.name}.ready").touch()
    while not stop.exists():
        due = started + n / BATCHES_PER_S
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        now = datetime.now(UTC)
        rows = [
            RequestLog(
                integration_id=ids[(n + i) % len(ids)],
                created=now,
                method="GET",
                host="api.example.com",
                path=f"/v1/things/{i % 5}",
                status=200,
                outcome="ok",
                latency_ms=40.0 + i,
            )
            for i in range(per_batch)
        ]
        begin = time.perf_counter()
        with transaction.atomic():
            RequestLog.objects.bulk_create(rows)
            rollup.apply_rows(rows)
        timings.append((time.time(), time.perf_counter() - begin))
        n += 1
    out.write_text(json.dumps({"timings": timings, "rows": n * per_batch}))


def pruner(db_path: Path, mode: str, now_iso: str, out: Path) -> None:
    """Prune rows older than RETAIN_RAW_DAYS before `now`, chunked or in one DELETE."""
    _benchdb._setup_django(db_path)
    from django.conf import settings
    from django.db import connection, transaction

    from monitoring import retention

    now = datetime.fromisoformat(now_iso)
    cutoff = now - timedelta(days=settings.UPSTREAM["RETAIN_RAW_DAYS"])
    began = time.time()
    vacuum_s, released = 0.0, 0
    if mode == "chunked":
        report = retention.prune(now=now, vacuum=False)
        deleted, delete_s = report.deleted["request_log"], report.seconds
        # What the next hourly run does with pages nobody reused: hand them back to the
        # filesystem. Timed for VACUUM_S only; the rate is what matters.
        vacuum_started = time.perf_counter()
        deadline = time.monotonic() + VACUUM_S
        released = retention.release_free_pages(lambda: time.monotonic() > deadline)
        vacuum_s = time.perf_counter() - vacuum_started
    else:
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM monitoring_requestlog WHERE created < %s",
                [connection.ops.adapt_datetimefield_value(cutoff)],
            )
            deleted = cursor.rowcount
        delete_s = time.perf_counter() - started
    out.write_text(
        json.dumps(
            {
                "began": began,
                "ended": time.time(),
                "deleted": deleted,
                "delete_s": delete_s,
                "vacuum_s": vacuum_s,
                "released_pages": released,
            }
        )
    )


def run_mode(mode: str, base: Path, now: datetime, rate: int) -> dict:
    work = base.parent / f"prune-run-{mode}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        if Path(f"{base}{suffix}").exists():
            shutil.copyfile(f"{base}{suffix}", f"{work}{suffix}")
    stop, w_out, p_out = (work.with_suffix(s) for s in (".stop", ".writer", ".pruner"))
    for f in (stop, w_out, p_out, w_out.parent / f"{w_out.name}.ready"):
        f.unlink(missing_ok=True)
    me = [sys.executable, __file__]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    write = subprocess.Popen(
        [*me, "--writer", str(work), "--rate", str(rate), "--stop", str(stop), "--out", str(w_out)],
        env=env,
    )
    try:
        while not (w_out.parent / f"{w_out.name}.ready").exists():
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        subprocess.run(
            [
                *me,
                "--pruner",
                str(work),
                "--mode",
                mode,
                "--now",
                now.isoformat(),
                "--out",
                str(p_out),
            ],
            env=env,
            check=True,
        )
        time.sleep(1.0)
    finally:
        stop.touch()
        write.wait(timeout=60)
    p = json.loads(p_out.read_text())
    timings = json.loads(w_out.read_text())["timings"]
    during = [lat for at, lat in timings if p["began"] <= at <= p["ended"] + 0.5]
    # The first second is the writer warming up (imports, first queries), not contention.
    first = timings[0][0] if timings else 0
    before = [lat for at, lat in timings if first + 1 <= at < p["began"]]
    for f in (stop, w_out, p_out, w_out.parent / f"{w_out.name}.ready"):
        f.unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    return {
        "deleted": p["deleted"],
        "delete_s": round(p["delete_s"], 2),
        "vacuum_s": round(p["vacuum_s"], 2),
        "released_pages_per_s": round(p["released_pages"] / p["vacuum_s"]) if p["vacuum_s"] else 0,
        "rows_per_s": round(p["deleted"] / p["delete_s"]) if p["delete_s"] else None,
        "stall_ms": round(max(during) * 1000, 1) if during else None,
        "p99_ms": round(statistics.quantiles(during, n=100)[98] * 1000, 1)
        if len(during) > 100
        else None,
        "baseline_max_ms": round(max(before) * 1000, 1) if before else None,
        "batches_during": len(during),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to prune (default 1 M)")
    parser.add_argument("--rate", type=int, default=1000, help="writer rows per second")
    parser.add_argument("--writer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pruner", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("chunked", "single"), help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help="run the PostgreSQL partition-drop benchmark")
    args = parser.parse_args()
    if args.database_url:
        return postgres_main(args.database_url, args.rows, args.rate)
    if args.writer:
        writer(args.writer, args.rate, args.stop, args.out)
        return 0
    if args.pruner:
        pruner(args.pruner, args.mode, args.now, args.out)
        return 0

    # 28 days of calls, half of them past the 14-day raw retention.
    total = 2 * args.rows
    base = _benchdb.BENCH_DIR / f"prune-base-{total}.sqlite3"
    db = _benchdb.open_db(rows=total, days=28, path=base, buckets=False)
    from django.db import connections

    connections.close_all()
    print(f"{total:,} raw rows over 28 days ({base.name}); writer at {args.rate} rows/s")
    results = {mode: run_mode(mode, base, db.end, args.rate) for mode in ("chunked", "single")}
    for mode, r in results.items():
        vacuum = (
            f", then released {r['released_pages_per_s']:,} free pages/s for {r['vacuum_s']:.0f} s"
            if r["vacuum_s"]
            else ""
        )
        print(
            f"{mode:>8}: pruned {r['deleted']:,} rows in {r['delete_s']:.1f} s "
            f"({r['rows_per_s']:,} rows/s{vacuum}); writer's longest stall "
            f"{r['stall_ms']} ms (p99 {r['p99_ms']} ms; {r['baseline_max_ms']} ms before pruning)"
        )
    chunked, single = results["chunked"], results["single"]
    figures = {
        "rows": args.rows,
        "rate": args.rate,
        "chunked": chunked,
        "single": single,
        "stall_ratio": round(single["stall_ms"] / chunked["stall_ms"], 1),
        "speed_ratio": round(chunked["rows_per_s"] / single["rows_per_s"], 3),
        "goal_met": chunked["stall_ms"] <= GOAL_STALL_MS,
    }
    print(
        f"chunked pruning: longest stall {figures['stall_ratio']}x shorter than one DELETE, "
        f"at {figures['speed_ratio']:.2f}x its deletion speed"
    )
    print(json.dumps(figures))
    return 0 if figures["goal_met"] else 1


GOAL_DROP_STALL_MS = 50
ROW_SQL = (
    "INSERT INTO monitoring_requestlog (created, integration_id, source, method, scheme, host, "
    "path, query, status, outcome, latency_ms, error_code, error_message, error_body, call_id, "
    "attempt, backoff_ms, deprecated, deprecation_link, api_version) "
    "SELECT {created}, %s, 'client', 'GET', 'https', 'api.example.com', '/v1/things/{{id}}', '', "
    "200, 'ok', 100 + random() * 50, '', '', '', '', 1, 0, false, '', '' "
    "FROM generate_series(1, %s) AS n"
)


def _pg_writer(url: str, integration_id: int, rate: int, stop, times: list) -> None:
    import psycopg

    per_batch = max(1, rate // BATCHES_PER_S)
    sql = ROW_SQL.format(created="now()")
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            started = time.monotonic()
            conn.execute(sql, [integration_id, per_batch])
            times.append((started, time.monotonic() - started))
            time.sleep(max(0.0, 1 / BATCHES_PER_S - (time.monotonic() - started)))


def _stall_ms(times: list, since: float, until: float) -> float:
    during = [t for s, t in times if since <= s <= until]
    return round(max(during, default=0.0) * 1000, 1)


def postgres_main(url: str, rows: int, rate: int) -> int:
    import threading

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from monitoring import partitions
    from monitoring.models import Integration

    call_command("migrate", verbosity=0, skip_checks=True)
    if not partitions.enabled():
        print("RequestLog is not partitioned here: is this PostgreSQL after migration 0008?")
        return 1
    integration, _ = Integration.objects.get_or_create(slug="bench-prune", name="Bench prune")
    today = datetime.now(UTC).date()
    dropped_day, deleted_day = today - timedelta(days=41), today - timedelta(days=40)
    for day in (dropped_day, deleted_day):
        if day not in {p.day for p in partitions.partitions()}:
            partitions.create_day(day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        created = "%s::timestamptz + (n * interval '86399 seconds') / %s"
        with connection.cursor() as cursor:
            cursor.execute(
                ROW_SQL.format(created=created),
                [start, rows, integration.pk, rows],
            )
    print(f"{rows:,} rows in each of two expired days; writer at {rate} rows/s")

    stop, times = threading.Event(), []
    thread = threading.Thread(target=_pg_writer, args=(url, integration.pk, rate, stop, times))
    thread.start()
    time.sleep(WARMUP_S)
    baseline = _stall_ms(times, 0, time.monotonic())

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {partitions.partition_name(deleted_day)}")
    delete_s = time.monotonic() - started
    time.sleep(1.0)
    delete_stall = _stall_ms(times, started - 0.05, started + delete_s)

    # Writers queue behind the DETACH from the moment it asks for RequestLog's lock until
    # it commits: that statement's duration bounds the stall the drop itself causes, apart
    # from the machine's noise in the writer's own timings.
    detach_ms: list[float] = []

    def timed(execute, sql, params, many, context):
        began = time.monotonic()
        try:
            return execute(sql, params, many, context)
        finally:
            if "DETACH PARTITION" in sql:
                detach_ms.append((time.monotonic() - began) * 1000)

    started = time.monotonic()
    cutoff = datetime(dropped_day.year, dropped_day.month, dropped_day.day, tzinfo=UTC)
    with connection.execute_wrapper(timed):
        dropped = partitions.drop_expired(cutoff + timedelta(days=1))
    drop_s = time.monotonic() - started
    time.sleep(1.0)
    drop_stall = _stall_ms(times, started - 0.05, started + drop_s)
    stop.set()
    thread.join()

    figures = {
        "rows": rows,
        "rate": rate,
        "dropped": dropped,
        "drop_s": round(drop_s, 3),
        "delete_s": round(delete_s, 3),
        "drop_stall_ms": drop_stall,
        "delete_stall_ms": delete_stall,
        "baseline_max_ms": baseline,
        "lock_queue_ms": round(sum(detach_ms), 1),
        "detach_attempts": len(detach_ms),
        "speed_ratio": round(delete_s / max(drop_s, 1e-4), 1),
        "goal_met": drop_stall <= GOAL_DROP_STALL_MS,
    }
    print(
        f"writers could queue behind the drop for {figures['lock_queue_ms']} ms in all "
        f"({len(detach_ms)} DETACH attempt(s); load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"drop: {rows:,} rows gone in {drop_s * 1000:.0f} ms, writer's longest stall "
        f"{drop_stall} ms; one DELETE: {delete_s:.2f} s, stall {delete_stall} ms "
        f"({baseline} ms before); drop {figures['speed_ratio']}x faster"
    )
    print(json.dumps(figures))
    return 0 if figures["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
