"""RequestLog on PostgreSQL as a table partitioned by day: convert, create ahead, drop expired.

Why: retention then drops whole days (a catalogue change) instead of deleting millions of
rows, and time-range reads touch only the days they ask for. SQLite keeps one plain table;
every function here does nothing there.

Shape (PostgreSQL):
    monitoring_requestlog            PARTITION BY RANGE (created), primary key (id, created)
    monitoring_requestlog_pYYYYMMDD  one per UTC day, [day, day + 1)
    monitoring_requestlog_default    the DEFAULT partition: rows of days with no partition yet
                                     (an ingest of old events, tests with old dates, a
                                     scheduler that fell behind), so an insert never fails.

PostgreSQL wants the partition key in every unique constraint, so the primary key is
(id, created) in the database while Django keeps `id` as its primary key: the identity
sequence alone still makes ids unique, and nothing references RequestLog by foreign key
(the audit triggers of migration 0002 are on AuditLog only).

The scheduler (`monitoring.tasks.create_partitions`, hourly) keeps AHEAD_DAYS of partitions
ready. A day created after its rows landed in the default partition takes those rows over
in the same transaction (PostgreSQL refuses to attach a range the default still holds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import OperationalError, connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

TABLE = "monitoring_requestlog"
DEFAULT = f"{TABLE}_default"
AHEAD_DAYS = 3
"""Days of partitions kept ready after today, so a stalled scheduler has slack."""
BEHIND_DAYS = 1
"""Yesterday too: late rows of the previous day are common right after midnight."""
LOCK_TIMEOUT_MS = 25
"""A partition's detach waits at most this for its lock, then retries later: writers queue
behind a waiting DETACH, so this (plus the detach itself, ~10 ms) bounds their stall, and a
DETACH queued behind a long read would otherwise hold up every writer for as long."""
DROP_ATTEMPTS = 10
LOCK_NOT_AVAILABLE = "55P03"


def enabled() -> bool:
    """Whether RequestLog is a partitioned table here (PostgreSQL, after migration 0008)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE]
        )
        return cursor.fetchone() is not None


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Partition:
    name: str
    day: date | None  # None for the default partition


def partitions() -> list[Partition]:
    """The day partitions (oldest first), then the default partition if there is one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = []
    for name in names:
        suffix = name.removeprefix(f"{TABLE}_p")
        if name != DEFAULT and suffix.isdigit() and len(suffix) == 8:
            found.append(Partition(name, datetime.strptime(suffix, "%Y%m%d").date()))
    found.sort(key=lambda p: p.day)
    if DEFAULT in names:
        found.append(Partition(DEFAULT, None))
    return found


def ensure(today: date | None = None, *, ahead: int = AHEAD_DAYS) -> list[str]:
    """Create the partitions from yesterday to `ahead` days after today; return those made.

    Idempotent; a no-op unless RequestLog is partitioned.
    """
    if not enabled():
        return []
    today = today or timezone.now().astimezone(UTC).date()
    have = {p.day for p in partitions()}
    made = []
    for offset in range(-BEHIND_DAYS, ahead + 1):
        day = today + timedelta(days=offset)
        if day not in have and create_day(day):
            made.append(partition_name(day))
    return made


def create_day(day: date) -> bool:
    """Create one day's partition, moving in any rows of that day the default partition holds.

    Returns False when the partition already exists (another worker made it first).
    """
    name = partition_name(day)
    start, end = _bounds(day)
    with transaction.atomic(), connection.cursor() as cursor:
        # Two clusters may run the hourly task at once: the lock orders them, and the one
        # that comes second finds the table made.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [TABLE])
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        if cursor.fetchone()[0]:
            return False
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as in _drop
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created >= %s AND created < %s "  # noqa: S608
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            [start, end],
        )
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
            [start, end],
        )
    logger.info("partitions: created %s", name)
    return True


def drop_expired(cutoff: datetime) -> list[str]:
    """Drop every day partition that ends at or before `cutoff`; return the names dropped.

    Rows older than the cutoff in the default partition or in the day the cutoff falls in
    are left to retention's chunked delete. A partition whose lock is not granted within
    LOCK_TIMEOUT_MS is retried a few times, then left for the next run.
    """
    if not enabled():
        return []
    for name in _detached():  # left by a run that died between detaching and dropping
        day = datetime.strptime(name.removeprefix(f"{TABLE}_p"), "%Y%m%d").date()
        if _bounds(day)[1] <= cutoff:  # an expired day only: never a table kept on purpose
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {name}")
    dropped = []
    for part in partitions():
        if part.day is None or _bounds(part.day)[1] > cutoff:
            continue
        if _drop(part.name):
            dropped.append(part.name)
    return dropped


def _detached() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
            "AND relname ~ %s AND relnamespace = to_regnamespace(current_schema())",
            [f"^{TABLE}_p[0-9]{{8}}$"],
        )
        return [row[0] for row in cursor.fetchall()]


def _drop(name: str) -> bool:
    # DETACH, then DROP: writers queue behind the parent's ACCESS EXCLUSIVE lock only while
    # the catalogue changes, not while the day's files are unlinked at commit (a day of a
    # busy install is gigabytes). Not DETACH … CONCURRENTLY: PostgreSQL refuses it while
    # a default partition exists.
    for attempt in range(DROP_ATTEMPTS):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                # Deferred foreign-key checks of rows inserted earlier in the same
                # transaction (only ever in tests) would make PostgreSQL refuse the DROP.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            time.sleep(0.05 * min(attempt + 1, 4))
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {name}")  # no longer a partition: no lock on RequestLog
        logger.info("partitions: dropped %s", name)
        return True
    logger.warning("partitions: %s stayed locked; dropping it next run", name)
    return False


# -- conversion (migration 0008) ----------------------------------------------------------


def _definitions(cursor, table: str) -> tuple[list[str], list[str]]:
    """The CREATE INDEX statements and foreign-key clauses of `table`, to replay later."""
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary",
        [table],
    )
    indexes = [row[0] for row in cursor.fetchall()]
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype = 'f'",
        [table],
    )
    fks = [f'ADD CONSTRAINT "{name}" {clause}' for name, clause in cursor.fetchall()]
    return indexes, fks


def _rebuild(schema_editor, *, partitioned: bool) -> None:
    """Replace RequestLog by a partitioned (or plain) copy of itself, keeping every row.

    Runs inside the migration's transaction, so a failure leaves the old table as it was.
    Indexes and foreign keys are re-created under their old names, so later Django
    migrations that name them keep working.
    """
    old = f"{TABLE}_old"
    with schema_editor.connection.cursor() as cursor:
        indexes, fks = _definitions(cursor, TABLE)
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {old}")
        cursor.execute(f'ALTER TABLE {old} RENAME CONSTRAINT "{TABLE}_pkey" TO "{old}_pkey"')
        shape = "PARTITION BY RANGE (created)" if partitioned else ""
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {old} INCLUDING DEFAULTS INCLUDING IDENTITY "
            f"INCLUDING CONSTRAINTS) {shape}"
        )
        key = "id, created" if partitioned else "id"
        cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{TABLE}_pkey" PRIMARY KEY ({key})')
        if partitioned:
            cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT")
            today = timezone.now().astimezone(UTC).date()
            cursor.execute(f"SELECT DISTINCT (created AT TIME ZONE 'UTC')::date FROM {old}")  # noqa: S608
            days = {row[0] for row in cursor.fetchall()}
            days |= {today + timedelta(days=n) for n in range(-BEHIND_DAYS, AHEAD_DAYS + 1)}
            for day in sorted(days):
                start, end = _bounds(day)
                cursor.execute(
                    f"CREATE TABLE {partition_name(day)} PARTITION OF {TABLE} "
                    "FOR VALUES FROM (%s) TO (%s)",
                    [start, end],
                )
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {old}")  # noqa: S608
        # The new identity sequence starts at 1: carry on after the highest id copied.
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), "  # noqa: S608
            f"COALESCE((SELECT MAX(id) FROM {TABLE}), 0) + 1, false)"
        )
        cursor.execute(f"DROP TABLE {old}")
        for statement in indexes:
            # A partitioned table's index reads "ON ONLY t": replayed on a plain table (or a
            # partitioned one) it must cover the whole table.
            statement = statement.replace(" ON ONLY ", " ON ", 1)
            if " USING brin " in statement and not partitioned:
                continue  # the BRIN index belongs to the partitioned shape only
            cursor.execute(statement)
        for clause in fks:
            cursor.execute(f"ALTER TABLE {TABLE} {clause}")
        if partitioned:
            # Within a day partition rows arrive nearly in time order, so a BRIN index is a
            # few pages per day yet lets scans of a time range across every integration
            # skip most blocks; the B-tree on (created, id) stays for the explorer's ordered
            # walk.
            cursor.execute(f"CREATE INDEX reqlog_created_brin ON {TABLE} USING brin (created)")


def partition_table(apps, schema_editor) -> None:
    """Migration 0008 forwards: partition RequestLog by day on PostgreSQL."""
    if schema_editor.connection.vendor == "postgresql" and not enabled():
        _rebuild(schema_editor, partitioned=True)


def unpartition_table(apps, schema_editor) -> None:
    """Migration 0008 backwards: RequestLog back to one plain table, rows kept."""
    if schema_editor.connection.vendor == "postgresql" and enabled():
        _rebuild(schema_editor, partitioned=False)
