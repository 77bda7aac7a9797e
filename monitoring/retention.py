"""Delete data past its retention in short chunks, so writers never wait long; reclaim space.

What goes, from settings.UPSTREAM (days):
    RequestLog older than RETAIN_RAW_DAYS, minute buckets older than RETAIN_MINUTE_DAYS,
    quarter-hour buckets older than the longer of the two, hour buckets older than
    RETAIN_HOUR_DAYS, ProbeResult older than RETAIN_PROBE_RESULTS_DAYS. Day buckets are
    kept forever. (Bucket grains' retention is owned by monitoring.models.retain_days.)

How:
    Each chunk first reads the primary keys of the oldest expired rows through the time
    index (a plain read, which on SQLite in WAL mode blocks nobody), then deletes exactly
    those keys in its own short transaction. A list of keys rather than a key range: late
    rows (an ingest of old events, a replayed spill) pair old times with new ids, so an id
    range would either miss them or sweep over live rows, and its cost would be unbounded.
    The chunk size adapts so one delete takes about CHUNK_TARGET_S, and the pruner pauses
    between chunks: SQLite has one writer at a time, and a writer waiting in its busy
    handler re-polls every few milliseconds, so the pause is what lets it in. A single
    `DELETE … WHERE created < …` would instead hold the write lock for the whole delete
    (seconds for a million rows; bench/prune.py measures both).

Space (SQLite):
    Deleted pages go onto SQLite's free list and are reused by new rows, so the file stops
    growing but never shrinks by itself. It can hand pages back to the filesystem only when
    the database has auto_vacuum=INCREMENTAL, a mode that must be chosen before the first
    table is created (or applied by a full VACUUM). Upstream's settings set it in the SQLite
    init_command, so databases created by `migrate` have it. prune() then releases, with
    `PRAGMA incremental_vacuum(N)` in short steps, only the pages that were *already* free
    when it started: in steady state the rows written in the next hour reuse what this run
    freed, and releasing those pages would only make the file grow back. So the file
    shrinks one run after traffic or retention drops.
    A database created before that (auto_vacuum=NONE) keeps working, only without
    shrinking; `manage.py prune --enable-incremental-vacuum` converts it once with a full
    VACUUM (it rewrites the file and blocks writers meanwhile, so run it in a quiet moment).
    PostgreSQL's autovacuum handles its own space.

PostgreSQL:
    RequestLog is partitioned by day there (monitoring.partitions): prune() first drops
    the day partitions wholly past the cutoff, which frees their space at once and stalls
    writers for at most a short lock wait (bench/prune.py measures it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.utils import timezone

from monitoring import partitions
from monitoring.models import Grain, MetricBucket, ProbeResult, RequestLog, retain_days

logger = logging.getLogger(__name__)

CHUNK_TARGET_S = 0.04
"""Aim for deletes this long; a writer waits at most about this plus one pause."""
PAUSE_S = 0.03
"""Between chunks, so writers queued on SQLite's lock get their turn."""
FIRST_CHUNK = 1000
MIN_CHUNK, MAX_CHUNK = 100, 20_000
VACUUM_FIRST_PAGES = 256
"""Pages (4 KiB each by default) of the first incremental_vacuum step; later steps are sized
like delete chunks, to take about CHUNK_TARGET_S."""


@dataclass
class PruneReport:
    deleted: dict[str, int] = field(default_factory=dict)
    vacuumed_pages: int = 0
    dropped_partitions: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0
    longest_chunk_s: float = 0.0

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in self.deleted.items())
        state = "done" if self.complete else "stopped early (budget), resumes next run"
        n = len(self.dropped_partitions)
        dropped = f"; dropped {n} day partitions" if n else ""
        return (
            f"pruned {parts}{dropped}; {self.vacuumed_pages} pages released; {state} "
            f"in {self.seconds:.1f}s (longest chunk {self.longest_chunk_s * 1000:.0f} ms)"
        )


@dataclass(frozen=True)
class Target:
    """One kind of expiring row: its table, how to spot expired rows, and their time index."""

    name: str
    table: str
    where: str  # SQL condition with one %s for the cutoff, matching the time index
    order: str
    days: Callable[[], int]  # read when pruning, so settings overridden in tests apply


def _setting(name: str) -> Callable[[], int]:
    return lambda: settings.UPSTREAM[f"RETAIN_{name}_DAYS"]


def _bucket_target(name: str, grain: str) -> Target:
    return Target(
        name,
        MetricBucket._meta.db_table,
        f"grain = '{grain}' AND start < %s",
        "start",
        lambda: retain_days(grain),
    )


TARGETS = (
    Target(
        "request_log", RequestLog._meta.db_table, "created < %s", "created, id", _setting("RAW")
    ),
    _bucket_target("minute_buckets", Grain.MINUTE),
    _bucket_target("quarter_buckets", Grain.QUARTER),
    _bucket_target("hour_buckets", Grain.HOUR),
    Target(
        "probe_results",
        ProbeResult._meta.db_table,
        "created < %s",
        "created",
        _setting("PROBE_RESULTS"),
    ),
)


# Other apps' expiring rows (the api app's ingested batch ids), registered from their
# AppConfig.ready() with ``register``: pruned after the engine's own, the same way. The
# engine never imports those apps.
EXTRA_TARGETS: list[Target] = []


def register(target: Target) -> None:
    """Prune ``target``'s table too (idempotent: a target of the same name is replaced)."""
    EXTRA_TARGETS[:] = [t for t in EXTRA_TARGETS if t.name != target.name] + [target]


def _targets() -> tuple[Target, ...]:
    return (*TARGETS, *EXTRA_TARGETS)


def cutoffs(now: datetime | None = None) -> dict[str, datetime]:
    """The time before which each target's rows expire."""
    now = now or timezone.now()
    return {t.name: now - timedelta(days=t.days()) for t in _targets()}


def prune(
    *,
    now: datetime | None = None,
    budget_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    vacuum: bool = True,
    pause_s: float = PAUSE_S,
) -> PruneReport:
    """Delete every expired row, chunk by chunk; stop early past `budget_s` or on should_stop.

    Stopping early is safe: the next run carries on where this one stopped.
    """
    started = time.monotonic()
    report = PruneReport()

    def out_of_time() -> bool:
        return should_stop() or (budget_s is not None and time.monotonic() - started > budget_s)

    limits = cutoffs(now)
    # On PostgreSQL whole expired days go first, as catalogue changes; the chunked delete
    # below then sees only the default partition and the day the cutoff falls in.
    report.dropped_partitions = partitions.drop_expired(limits["request_log"])
    # Pages already free before this run were not needed by the rows written since the
    # last one: those are the surplus to hand back (see the module notes).
    surplus = free_pages()
    for target in _targets():
        report.deleted[target.name] = 0
        cutoff = connection.ops.adapt_datetimefield_value(limits[target.name])
        chunk = FIRST_CHUNK
        while True:
            if out_of_time():
                report.complete = False
                break
            ids = _expired_ids(target, cutoff, chunk)
            if not ids:
                break
            elapsed = _delete(target.table, ids)
            report.deleted[target.name] += len(ids)
            report.longest_chunk_s = max(report.longest_chunk_s, elapsed)
            chunk = _next_size(chunk, elapsed, MIN_CHUNK, MAX_CHUNK)
            time.sleep(pause_s)
        if not report.complete:
            break
    if vacuum and report.complete and surplus:
        keep = max(0, free_pages() - surplus)
        report.vacuumed_pages = release_free_pages(out_of_time, keep=keep, pause_s=pause_s)
    report.seconds = time.monotonic() - started
    return report


def _expired_ids(target: Target, cutoff, limit: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {target.table} WHERE {target.where} "  # noqa: S608 - constants
            f"ORDER BY {target.order} LIMIT %s",
            [cutoff, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def _delete(table: str, ids: list[int]) -> float:
    """Delete the rows; return how long the write lock was held (not waited for)."""
    with transaction.atomic(), connection.cursor() as cursor:
        started = time.monotonic()  # BEGIN IMMEDIATE has the lock by now
        marks = ", ".join(["%s"] * len(ids))
        cursor.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)  # noqa: S608
    return time.monotonic() - started


def auto_vacuum_mode() -> str | None:
    """SQLite's auto_vacuum mode ("none", "full", "incremental"); None on other databases."""
    if connection.vendor != "sqlite":
        return None
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA auto_vacuum")
        return {0: "none", 1: "full", 2: "incremental"}[cursor.fetchone()[0]]


@receiver(connection_created)
def _new_sqlite_databases_vacuum_incrementally(sender, **kwargs) -> None:
    # auto_vacuum can only be chosen while a database has no tables. Setting it on every
    # connection instead would wait out the busy timeout whenever another process holds the
    # write lock; reading sqlite_master costs nothing. VACUUM of an empty file is instant and
    # makes the mode stick even though journal_mode=WAL was already set.
    if kwargs["connection"].vendor != "sqlite":
        return
    raw = kwargs["connection"].connection
    if raw.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
        raw.execute("PRAGMA auto_vacuum=INCREMENTAL")
        raw.execute("VACUUM")


def free_pages() -> int:
    if connection.vendor != "sqlite":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA freelist_count")
        return cursor.fetchone()[0]


def release_free_pages(
    out_of_time: Callable[[], bool] = lambda: False,
    *,
    keep: int = 0,
    pause_s: float = PAUSE_S,
) -> int:
    """Hand SQLite's free pages beyond `keep` back to the filesystem in short steps.

    Returns the pages released. Does nothing unless auto_vacuum is INCREMENTAL (see the
    module notes), nor inside a transaction.
    """
    if auto_vacuum_mode() != "incremental" or connection.in_atomic_block:
        return 0
    released, pages = 0, VACUUM_FIRST_PAGES
    while not out_of_time():
        before = free_pages()
        if before <= keep:
            break
        started = time.monotonic()
        # sqlite3's execute() steps this pragma once, which frees a single page; the script
        # API runs it to completion. It commits any open transaction first, hence the
        # in_atomic_block guard above: it runs in its own short write transaction.
        connection.connection.executescript(
            f"PRAGMA incremental_vacuum({min(pages, before - keep)});"
        )
        pages = _next_size(pages, time.monotonic() - started, 16, 1024)
        after = free_pages()
        released += before - after
        if after >= before:
            break
        time.sleep(pause_s)
    return released


def _next_size(size: int, elapsed: float, low: int, high: int) -> int:
    """Scale a chunk so the next one takes about CHUNK_TARGET_S (at most 2x either way)."""
    scale = min(2.0, max(0.5, CHUNK_TARGET_S / max(elapsed, 1e-4)))
    return int(min(high, max(low, size * scale)))


def enable_incremental_vacuum() -> bool:
    """Switch an existing SQLite database to auto_vacuum=INCREMENTAL; True if it changed.

    Runs a full VACUUM, which rewrites the file and holds the write lock until done.
    """
    if auto_vacuum_mode() in (None, "incremental"):
        return False
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("VACUUM")
    return auto_vacuum_mode() == "incremental"


def prune_task() -> str:
    """django-q2 entry point (schedule "upstream:prune"): prune within half the task timeout."""
    budget = settings.Q_CLUSTER.get("timeout", 120) / 2
    report = prune(budget_s=budget)
    logger.info("retention: %s", report)
    return str(report)
