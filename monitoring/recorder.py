"""Write request-log rows in the background: queue, batch writer, spill file if the DB is away.

The caller's side is one ``deque.append``. A daemon thread drains the queue in batches,
each batch one transaction: an ``executemany`` INSERT of the raw rows plus
``monitoring.rollup.apply_rows`` (metric buckets), so rows and their counts commit together.

Failure handling, in order:

* A database error that may pass (SQLite locked, PostgreSQL gone: ``OperationalError`` /
  ``InterfaceError``) → the batch is retried with exponential backoff (50 ms … 5 s).
* While the writer waits, the queue fills; when it is full, rows are appended to a spool
  file under ``settings.UPSTREAM["SPOOL_DIR"]`` (JSON lines, already redacted, fsynced) and
  replayed once the database answers. The writer spills the backlog itself before the
  queue is full, so callers rarely do file I/O.
* If even the spill fails, the number of lost rows is kept and written as a
  ``RecorderLoss`` row as soon as the database answers (the admin shows them).
* Rows the database rejects (e.g. their integration was deleted) are counted as lost with
  the reason, never retried forever.

Exactly-once replay without a unique key on the hot table: each spool segment has a
random name, and the transaction that inserts its rows also inserts a ``RollupState``
marker ``spool:<name>``. Crash after that commit but before the file is deleted → the
next replay finds the marker and only deletes the file. A row uid column would have cost
a unique index on every insert into ``RequestLog`` for a path that almost never runs.
Segments are ``flock``-ed by the process writing or replaying them, so several processes
can share one spool directory; a dead process's segments are replayed by the next writer.

Settings (``settings.UPSTREAM``): ``RECORDER_QUEUE_SIZE``, ``RECORDER_BATCH_SIZE``,
``RECORDER_FLUSH_INTERVAL_MS``, ``SPOOL_DIR``, and optionally ``RECORDER_BUSY_TIMEOUT_MS``
(how long the writer waits on a locked SQLite file before backing off, default 5000),
``RECORDER_EXIT_TIMEOUT_S`` (flush at interpreter exit, default 5) and
``RECORDER_SPOOL_SEGMENT_ROWS`` (default 10 000).

Works in any process that has configured Django (web, worker, a script); the writer
starts on the first record and restarts in a forked child (which drops the parent's
queue: the parent writes those rows). Tests that use it need
``@pytest.mark.django_db(transaction=True)``: the writer uses its own connection, which
cannot see (and would wait on) a test's open transaction.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from operator import gt, itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from monitoring import parsing
from monitoring.models import (
    Integration,
    Outcome,
    RecorderLoss,
    RequestLog,
    RollupState,
    Source,
)
from monitoring.redaction import Redactor

logger = logging.getLogger(__name__)

try:
    # Takes the row dicts themselves (tests and the benchmark swap it out or set it to None).
    from monitoring.rollup import apply_dicts as _apply_rows
except ImportError:  # pragma: no cover - the rollup module ships with the app
    _apply_rows = None

ERROR_BODY_CAP = 2048
_TRANSIENT = (OperationalError, InterfaceError)
_MARKER_PREFIX = "spool:"
_DATETIME_FIELDS = ("created", "ratelimit_reset", "deprecation_at", "sunset_at")

_FIELDS = [f for f in RequestLog._meta.concrete_fields if not f.primary_key]
COLUMNS: tuple[str, ...] = tuple(f.attname for f in _FIELDS)
_CAPS = (
    *(
        (f.attname, f.max_length)
        for f in _FIELDS
        if getattr(f, "max_length", None) and f.choices is None
    ),
    ("error_body", ERROR_BODY_CAP),
)
_DEFAULTS: dict[str, Any] = {
    "source": Source.CLIENT.value,
    "scheme": "https",
    "query": "",
    "status": None,
    "request_bytes": None,
    "response_bytes": None,
    "error_code": "",
    "error_message": "",
    "error_body": "",
    "call_id": "",
    "attempt": 1,
    "backoff_ms": 0.0,
    "ratelimit_limit": None,
    "ratelimit_remaining": None,
    "ratelimit_reset": None,
    "retry_after_s": None,
    "deprecated": False,
    "deprecation_at": None,
    "sunset_at": None,
    "deprecation_link": "",
    "api_version": "",
}
_COLUMN_SET = frozenset(COLUMNS)
_REQUIRED = _COLUMN_SET - set(_DEFAULTS)  # created, integration_id, method, host, …
_row_values = itemgetter(*COLUMNS)
_DT_INDEXES = tuple(COLUMNS.index(name) for name in _DATETIME_FIELDS)
# insert_rows' fast path: `created` leads COLUMNS and is the one datetime nearly every row
# sets, so a row is (created as text,) + the rest unless one of the others is set.
assert COLUMNS[0] == "created"
_rest_values = itemgetter(*COLUMNS[1:])
_rare_datetimes = itemgetter(*_DATETIME_FIELDS[1:])
_NO_DATETIMES = (None,) * len(_DATETIME_FIELDS[1:])
# Capped text columns, read in one call; a row whose lengths all fit passes in C.
_cap_values = itemgetter(*(name for name, _ in _CAPS))
_CAP_LIMITS = tuple(cap for _, cap in _CAPS)
# A row whose integration id was unknown when it was built (the database was away) carries
# this key instead: (slug, environment, base_url); the writer resolves it.
INTEGRATION_KEY = "integration_key"


@dataclass(frozen=True)
class RecorderConfig:
    """Limits of one recorder; ``from_settings`` reads ``settings.UPSTREAM``."""

    queue_size: int = 50_000
    # A cap, not a wait: the writer takes what is queued at each wake (every flush interval,
    # or as soon as a full batch is queued), so at ordinary rates batches stay small and
    # rows reach the database within about a flush interval. Under a burst, 2000 rows per
    # transaction (~50–80 ms of SQLite write lock) spread each batch's bucket reads and
    # rewrites over four times as many rows as 500 did.
    batch_size: int = 2000
    flush_interval_s: float = 0.2
    spool_dir: Path = Path("var/spool")
    busy_timeout_ms: int = 5000
    exit_timeout_s: float = 5.0
    segment_rows: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "spool_dir", Path(self.spool_dir))
        if self.queue_size < 1 or self.batch_size < 1:
            raise ValueError("recorder queue and batch sizes must be at least 1")

    @classmethod
    def from_settings(cls, **overrides: Any) -> RecorderConfig:
        conf = getattr(settings, "UPSTREAM", {})
        values = {
            "queue_size": conf.get("RECORDER_QUEUE_SIZE", cls.queue_size),
            "batch_size": conf.get("RECORDER_BATCH_SIZE", cls.batch_size),
            "flush_interval_s": conf.get("RECORDER_FLUSH_INTERVAL_MS", 200) / 1000,
            "spool_dir": Path(conf.get("SPOOL_DIR", cls.spool_dir)),
            "busy_timeout_ms": conf.get("RECORDER_BUSY_TIMEOUT_MS", cls.busy_timeout_ms),
            "exit_timeout_s": conf.get("RECORDER_EXIT_TIMEOUT_S", cls.exit_timeout_s),
            "segment_rows": conf.get("RECORDER_SPOOL_SEGMENT_ROWS", cls.segment_rows),
        }
        config = cls(**values)
        return replace(config, **overrides) if overrides else config


class _Flush:
    """Queue sentinel: set once everything queued before it is in the database."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Recorder:
    """One process's queue and writer thread. Use the module functions, not this class."""

    def __init__(self, config: RecorderConfig | None = None) -> None:
        self._config = config
        self._queue: collections.deque = collections.deque()
        self._init_state()
        _ALL.add(self)

    def _init_state(self) -> None:
        config = self.config
        self._max = config.queue_size
        self._batch = config.batch_size
        self._wake = threading.Event()
        self._lock = threading.Lock()  # starting the writer, counters bumped by callers
        self._spool_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self._sleeping = False  # writer is in a backoff wait, not inside a database call
        self._in_hand: list[dict] = []
        self._segment: int | None = None  # fd of the open spool segment
        self._segment_name = ""
        self._segment_rows = 0
        self._lost_pending: list[tuple[int, str]] = []
        self._spool_pending = bool(self._spool_files())
        self._next_replay = 0.0
        self._periodic_at = 0.0
        self._sqlite_conn_seen: object = None
        self.counters = collections.Counter()
        self.last_error = ""
        self._writer_cpu = 0.0

    @property
    def config(self) -> RecorderConfig:
        if self._config is None:
            self._config = RecorderConfig.from_settings()
        return self._config

    # -- the caller's side -------------------------------------------------------------------

    def record(self, item: dict | tuple) -> None:
        """Queue one row: a dict of RequestLog fields, or a tuple whose first element turns
        the tuple into such a dict on the writer thread (the client's raw facts)."""
        queue = self._queue
        if len(queue) < self._max:
            queue.append(item)
            if len(queue) >= self._batch and not self._wake.is_set():
                self._wake.set()
        else:
            self._overflow(item)
        if not self._running:
            self._start()

    def _overflow(self, item: dict | tuple) -> None:
        # Queue full: the database has been away for a while. Spill on the caller's thread.
        try:
            row = _build(item)
        except Exception as exc:
            logger.exception("recorder: could not build a row")
            self._lose(1, f"row could not be built: {exc!r}"[:500])
            return
        self._spill([row])

    def flush(self, timeout: float | None = None) -> None:
        """Block until every row queued so far (and every spilled row) is in the database.

        Raises TimeoutError if that has not happened within ``timeout`` seconds.
        """
        if not self._flush(timeout):
            raise TimeoutError(f"recorder flush did not finish within {timeout} s")

    def _flush(self, timeout: float | None) -> bool:
        if threading.current_thread() is self._thread:
            return False  # called from inside a batch (e.g. a rollup): would wait on itself
        if not self._running and not self._queue and not self._spool_pending:
            return True
        marker = _Flush()
        self._queue.append(marker)  # may pass the bound: a marker is not a row
        if not self._running:
            self._start()
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and benchmarks."""
        return {
            "queued": sum(1 for item in list(self._queue) if not isinstance(item, _Flush)),
            "written": self.counters["written"],
            "batches": self.counters["batches"],
            "spilled": self.counters["spilled"],
            "replayed": self.counters["replayed"],
            "lost": self.counters["lost"],
            "db_errors": self.counters["db_errors"],
            "rollup_errors": self.counters["rollup_errors"],
            "spool_files": len(self._spool_files()),
            "writer_alive": bool(self._thread and self._thread.is_alive()),
            "writer_cpu_s": round(self._writer_cpu, 6),
            "last_error": self.last_error,
        }

    def _start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="upstream-recorder", daemon=True)
            self._running = True
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Flush what can be flushed within ``timeout``, spill the rest, stop the writer."""
        if not self._running:
            self._spill_queue()
            self._close_segment()
            return
        flushed = self._flush(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0 if flushed else max(1.0, (timeout or 0) / 2))
            if thread.is_alive():
                # The writer is stuck in a database call; keep the queue safe on disk. The
                # batch in its hands is spilled only if it is between attempts.
                self._spill_queue()
                if self._sleeping and self._in_hand:
                    rows, self._in_hand = self._in_hand, []
                    self._spill(rows)
                elif self._in_hand:
                    logger.warning(
                        "recorder: %d rows were inside a database call at exit", len(self._in_hand)
                    )
        self._running = False
        self._thread = None
        self._close_segment()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.flush_interval_s
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                now = time.monotonic()
                if self._spool_pending and now >= self._next_replay:
                    self._replay_spool()
                if now >= self._periodic_at:
                    self._periodic_at = now + 30
                    self._run_periodic()
                if self._lost_pending and now >= self._next_replay:
                    self._write_losses()
            except Exception as exc:  # the writer must never die
                logger.exception("recorder: writer loop error")
                self.last_error = repr(exc)[:500]
                time.sleep(0.1)
            self._writer_cpu = time.thread_time()
            if stopping:
                self._spill_queue()
                return

    def _drain(self) -> None:
        """Write what was queued when the writer woke, and then only full batches.

        Rows that trickle in while a batch is being written wait for the next wake (the
        flush interval, a full batch or a flush) instead of going out as a string of tiny
        batches: each batch costs the same bucket reads and writes whatever its size.
        """
        queue, size = self._queue, self._batch
        owed = len(queue)
        while queue and (owed > 0 or len(queue) >= size or self._stopping):
            batch: list = []
            marker = None
            while queue and len(batch) < size:
                item = queue.popleft()
                owed -= 1
                if item.__class__ is _Flush:
                    marker = item
                    break
                batch.append(item)
            if batch:
                rows = self._build_all(batch)
                if rows:
                    self._write(rows)
            if marker is not None:
                marker.ok = self._replay_until_empty()
                marker.done.set()

    def _build_all(self, items: list) -> list[dict]:
        rows = []
        for item in items:
            try:
                rows.append(_build(item))
            except Exception as exc:
                logger.exception("recorder: could not build a row")
                self._lose(1, f"row could not be built: {exc!r}"[:500])
        return rows

    def _write(self, rows: list[dict]) -> None:
        """Insert one batch, retrying with backoff while the database is away."""
        delay = 0.05
        self._in_hand = rows
        try:
            while True:
                try:
                    self._insert(rows)
                    self.counters["written"] += len(rows)
                    self.counters["batches"] += 1
                    return
                except _TRANSIENT as exc:
                    self._db_error(exc)
                    if not self._stopping:
                        self._backoff(delay)
                        delay = min(delay * 2, 5.0)
                    if self._stopping:
                        self._spill(rows)
                        return
                except Exception as exc:
                    # The database answered and refused these rows (or a row is malformed):
                    # find the bad ones instead of retrying the batch forever.
                    self._insert_one_by_one(rows, exc)
                    return
        finally:
            self._in_hand = []

    def _backoff(self, delay: float) -> None:
        """Wait before the next attempt; meanwhile keep the queue from filling up."""
        self._sleeping = True
        try:
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0 and not self._stopping:
                if len(self._queue) >= self._max * 3 // 4:
                    self._spill_queue(keep_flushes=True)
                time.sleep(min(left, 0.05))
        finally:
            self._sleeping = False

    def _db_error(self, exc: Exception) -> None:
        self.counters["db_errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        logger.warning("recorder: database error, will retry: %s", self.last_error)
        # A dead PostgreSQL connection stays dead; the next attempt needs a fresh one.
        with contextlib.suppress(Exception):
            connection.close()

    def _prepare_connection(self) -> None:
        connection.ensure_connection()
        if connection.connection is not self._sqlite_conn_seen:
            # Back off and spill instead of blocking for the project-wide busy timeout (SQLite)
            # or for as long as a migration or a long transaction holds the table (PostgreSQL).
            with connection.cursor() as cursor:
                if connection.vendor == "sqlite":
                    cursor.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
                elif connection.vendor == "postgresql":
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        [f"{int(self.config.busy_timeout_ms)}ms"],
                    )
            self._sqlite_conn_seen = connection.connection

    def _insert(self, rows: list[dict], marker: str | None = None) -> None:
        """One transaction: rows, their metric buckets, pending losses, a replay marker.

        Rows whose integration no longer exists are taken out of ``rows`` (in place, so a
        retry does not count them twice) and counted as lost.
        """
        self._prepare_connection()
        # Outside the batch transaction: a rolled-back batch must not leave rows pointing
        # at an integration whose creation was rolled back with it.
        _resolve_keys(rows)
        # SQLite: the integrations are checked below inside the batch's IMMEDIATE
        # transaction, which no other writer can interleave with, so the per-row foreign
        # key lookups of the inserts (~15 % of the writer's time) prove nothing more. Off
        # for this transaction only (a no-op on PostgreSQL, which keeps its checks).
        unchecked = connection.disable_constraint_checking()
        try:
            with transaction.atomic():
                ids = {row["integration_id"] for row in rows}
                known = _existing_integrations(ids)
                if len(known) < len(ids):
                    kept = [row for row in rows if row["integration_id"] in known]
                    self._lose(len(rows) - len(kept), "integration no longer exists")
                    rows[:] = kept
                losses = list(self._lost_pending)
                if marker is not None:
                    RollupState.objects.create(name=marker, value=len(rows))
                insert_rows(rows, rollup=True, counters=self.counters)
                if losses:
                    RecorderLoss.objects.bulk_create(
                        RecorderLoss(rows=n, reason=reason[:500]) for n, reason in losses
                    )
        finally:
            if unchecked:
                # A dead connection is replaced by a new one, which checks again anyway.
                with contextlib.suppress(DatabaseError):
                    connection.enable_constraint_checking()
        if losses:
            with self._lock:
                del self._lost_pending[: len(losses)]

    def _insert_one_by_one(self, rows: Sequence[dict], first_error: Exception) -> None:
        logger.warning("recorder: batch refused (%r); retrying row by row", first_error)
        for row in rows:
            try:
                _resolve_keys([row])
                with transaction.atomic():
                    insert_rows([row], rollup=True, counters=self.counters)
                self.counters["written"] += 1
            except _TRANSIENT as exc:
                self._db_error(exc)
                self._spill([row])
            except Exception as exc:
                self._lose(1, f"row refused: {exc!r}"[:500])

    def _write_losses(self) -> None:
        with self._lock:
            pending = list(self._lost_pending)
        try:
            self._prepare_connection()
            RecorderLoss.objects.bulk_create(
                RecorderLoss(rows=n, reason=reason[:500]) for n, reason in pending
            )
        except DatabaseError as exc:
            self._db_error(exc)
            self._next_replay = time.monotonic() + 1.0
            return
        with self._lock:
            del self._lost_pending[: len(pending)]

    def _lose(self, n: int, reason: str) -> None:
        """Count rows that cannot be stored; the count itself is persisted (RecorderLoss)."""
        logger.error("recorder: %d rows lost: %s", n, reason)
        with self._lock:
            self.counters["lost"] += n
            self._lost_pending.append((n, reason))

    def _run_periodic(self) -> None:
        for hook in list(_PERIODIC):
            try:
                hook()
            except Exception:
                logger.exception("recorder: periodic hook failed")

    # -- the spool ---------------------------------------------------------------------------

    def _spool_files(self) -> list[Path]:
        try:
            return sorted(self.config.spool_dir.glob("*.jsonl"))
        except OSError:
            return []

    def _spill_queue(self, *, keep_flushes: bool = False) -> None:
        """Move the queued rows to the spool. Flushes waiting in the queue fail, unless
        ``keep_flushes``: then they go back to the queue's head, to be answered once the
        spool is replayed (a flush that arrives while the writer backs off must wait for
        the database, not fail at once)."""
        items, flushes = [], []
        with contextlib.suppress(IndexError):
            while True:
                item = self._queue.popleft()
                if item.__class__ is not _Flush:
                    items.append(item)
                elif keep_flushes:
                    flushes.append(item)
                else:
                    item.done.set()  # ok stays False: not everything reached the database
        if items:
            self._spill(self._build_all(items))
        self._queue.extendleft(reversed(flushes))

    def _spill(self, rows: list[dict]) -> None:
        """Append rows to this process's spool segment; count them lost if even that fails."""
        if not rows:
            return
        try:
            data = b"".join(
                json.dumps(row, default=_json_default, separators=(",", ":")).encode() + b"\n"
                for row in rows
            )
        except (TypeError, ValueError) as exc:
            self._lose(len(rows), f"spill encoding failed: {exc}")
            return
        with self._spool_lock:
            try:
                if self._segment is None:
                    self._open_segment()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._segment, view) :]
                os.fsync(self._segment)
                self._segment_rows += len(rows)
                if self._segment_rows >= self.config.segment_rows:
                    self._close_segment_locked()
            except OSError as exc:
                self._close_segment_locked()
                self._lose(len(rows), f"spill to {self.config.spool_dir} failed: {exc}")
                return
        with self._lock:
            self.counters["spilled"] += len(rows)
        self._spool_pending = True

    def _open_segment(self) -> None:
        directory = self.config.spool_dir
        directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        fd = os.open(
            directory / f"{name}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600
        )
        fcntl.flock(fd, fcntl.LOCK_EX)  # no replay of a segment still being written
        self._segment, self._segment_name, self._segment_rows = fd, name, 0

    def _close_segment(self) -> None:
        with self._spool_lock:
            self._close_segment_locked()

    def _close_segment_locked(self) -> None:
        if self._segment is not None:
            with contextlib.suppress(OSError):
                os.close(self._segment)  # closing releases the flock
            self._segment = None

    def _replay_until_empty(self) -> bool:
        """For a flush: replay the spool, waiting out database errors with backoff.

        Segments held by another live process (being written or replayed there) are that
        process's to finish and do not hold the flush up.
        """
        delay = 0.05
        while not self._stopping:
            if self._replay_spool():
                return True
            self._backoff(delay)
            delay = min(delay * 2, 5.0)
        return False

    def _replay_spool(self) -> bool:
        """Replay every segment nobody else holds; False if the database refused."""
        self._close_segment()
        leftover = False
        for path in self._spool_files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # replayed by another process meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    leftover = True  # another process is writing or replaying it
                    continue
                if os.fstat(fd).st_nlink == 0:
                    continue  # deleted by the replayer we waited for
                if not self._replay_segment(path, fd):
                    self._next_replay = time.monotonic() + 1.0
                    self._spool_pending = True
                    return False
            finally:
                os.close(fd)
        self._spool_pending = leftover
        self._next_replay = time.monotonic() + 5.0
        return True

    def _replay_segment(self, path: Path, fd: int) -> bool:
        marker = _MARKER_PREFIX + path.stem[:40]
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        rows, torn = [], 0
        for line in data.splitlines():
            try:
                rows.append(_from_spool(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                torn += 1  # a line cut short by a crash mid-write
        try:
            self._prepare_connection()
            if RollupState.objects.filter(name=marker).exists():
                logger.info("recorder: %s was already replayed; deleting it", path.name)
            else:
                try:
                    self._insert(rows, marker=marker)
                    self.counters["written"] += len(rows)
                except _TRANSIENT:
                    raise
                except Exception as exc:
                    self._insert_one_by_one(rows, exc)
                self.counters["replayed"] += len(rows)
        except _TRANSIENT as exc:
            self._db_error(exc)
            return False
        if torn:
            self._lose(torn, f"unreadable lines in spool segment {path.name}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(DatabaseError):
            RollupState.objects.filter(name=marker).delete()
        return True

    def _after_fork(self) -> None:
        # The parent writes what was queued before the fork; the child starts empty. The
        # inherited spool fd shares the parent's flock: close our copy (unbuffered, so this
        # writes nothing) or the parent could never replay that segment.
        if self._segment is not None:
            with contextlib.suppress(OSError):
                os.close(self._segment)
        self._queue = collections.deque()
        self._init_state()


# --- building rows -------------------------------------------------------------------------


def _build(item: dict | tuple) -> dict:
    if item.__class__ is tuple:
        return item[0](item)  # the builder caps its own fields
    row = item
    if not row.keys() >= _COLUMN_SET:
        row = {**_DEFAULTS, **row}
        missing = _COLUMN_SET - row.keys()
        if missing:
            raise ValueError(f"row lacks {', '.join(sorted(missing))}")
    try:
        fits = not any(map(gt, map(len, _cap_values(row)), _CAP_LIMITS))
    except TypeError:  # a None (or other unsized) value: check field by field
        fits = False
    if not fits:
        for name, cap in _CAPS:
            value = row[name]
            if value and len(value) > cap:
                row[name] = value[:cap]
    return row


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool {type(value).__name__}")


def _from_spool(data: dict) -> dict:
    row = {**_DEFAULTS, **data}
    for name in _DATETIME_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    if isinstance(row.get(INTEGRATION_KEY), list):
        row[INTEGRATION_KEY] = tuple(row[INTEGRATION_KEY])
    missing = _REQUIRED - row.keys()
    if missing:
        raise KeyError(f"spooled row lacks {sorted(missing)}")
    return row


# --- inserting -----------------------------------------------------------------------------


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
        except _TRANSIENT:
            raise
        except Exception:
            logger.exception("recorder: rollup failed; raw rows kept (run rollup.rebuild)")
            if counters is not None:
                counters["rollup_errors"] += 1


_insert_sql_cache: dict[str, str] = {}


def insert_sql() -> str:
    """The INSERT for one row of ``COLUMNS`` on the current backend (``%s`` placeholders)."""
    sql = _insert_sql_cache.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in _FIELDS)
        marks = ", ".join(["%s"] * len(_FIELDS))
        table = quote(RequestLog._meta.db_table)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - no user input
        _insert_sql_cache[connection.vendor] = sql
    return sql


def _existing_integrations(ids: set[int]) -> set[int]:
    # Plain SQL: this runs once per writer batch, and the ORM's query building cost more
    # than the query itself.
    table = connection.ops.quote_name(Integration._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", list(ids))  # noqa: S608
        return {pk for (pk,) in cursor.fetchall()}


def _resolve_keys(rows: Iterable[dict]) -> None:
    for row in rows:
        if row["integration_id"] is None:
            slug, environment, base_url = row.pop(INTEGRATION_KEY)
            row["integration_id"] = resolve_integration(slug, environment, base_url).pk


def resolve_integration(
    slug: str, environment: str | None = None, base_url: str = ""
) -> Integration:
    """The integration with this slug (and environment); created, and audited, if unknown.

    Without an environment, the slug must name exactly one integration, or none: then a
    sandbox one is created. Raises ValueError when the slug is ambiguous.
    """
    from monitoring import audit

    slug = slug.strip()
    if not slug:
        raise ValueError("integration slug is empty")
    found = Integration.objects.filter(slug=slug)
    if environment:
        found = found.filter(environment=environment)
    matches = list(found[:2])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        envs = ", ".join(sorted(m.environment for m in found))
        raise ValueError(
            f"integration {slug!r} exists in several environments ({envs}); pass environment="
        )
    safe_base = Redactor().url(base_url).split("?")[0] if base_url else ""
    with transaction.atomic():
        integration, created = Integration.objects.get_or_create(
            slug=slug,
            environment=environment or "sandbox",
            defaults={
                "name": slug.replace("-", " ").replace("_", " ").title(),
                "base_url": safe_base[:500],
            },
        )
        if created:
            audit.record(
                "integration.auto_created",
                actor="monitoring.client",
                target=integration,
                after={"slug": slug, "environment": integration.environment, "base_url": safe_base},
            )
    return integration


# --- record_attempt: rows from probes and the ingest API --------------------------------------


_ATTEMPT_FIELDS = frozenset(COLUMNS) | {
    "integration",
    "url",
    "response_headers",
    "content_type",
}


def attempt_row(**fields: Any) -> dict:
    """A complete, redacted RequestLog row dict from keyword fields; see ``record_attempt``."""
    unknown = fields.keys() - _ATTEMPT_FIELDS
    if unknown:
        raise TypeError(f"record_attempt() got unknown fields: {', '.join(sorted(unknown))}")
    integration = fields.pop("integration", None)
    if integration is not None:
        fields["integration_id"] = integration if isinstance(integration, int) else integration.pk
    if fields.get("integration_id") is None:
        raise TypeError("record_attempt() needs integration= or integration_id=")
    redactor = _REDACTOR
    url = fields.pop("url", None)
    if url:
        clean = redactor.url(str(url))
        parts = urlsplit(clean)
        fields.setdefault("scheme", parts.scheme or "https")
        fields.setdefault("host", parts.hostname or "")
        fields.setdefault("path", parsing.template_path(parts.path or "/"))
        fields.setdefault("query", parts.query)
    elif fields.get("query"):
        fields["query"] = redactor.url("/?" + fields["query"]).partition("?")[2]
    for name in ("method", "host", "path", "latency_ms"):
        if fields.get(name) is None:
            raise TypeError(f"record_attempt() needs {name}= (or url=)")
    fields["method"] = str(fields["method"]).upper()
    status = fields.get("status")
    if not fields.get("outcome"):
        fields["outcome"] = parsing.classify_status(status) if status else Outcome.OTHER_ERROR
    created = fields.get("created") or timezone.now()
    fields["created"] = created
    headers = fields.pop("response_headers", None)
    content_type = fields.pop("content_type", None)
    if headers:
        apply_headers(fields, redactor.headers(dict(headers)), created.timestamp())
    for name in ("error_code", "error_message", "deprecation_link"):
        if fields.get(name):
            fields[name] = redactor.text(str(fields[name]))
    body = fields.get("error_body")
    if body:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        fields["error_body"] = redactor.body(raw, content_type, cap=ERROR_BODY_CAP)
        if not fields.get("error_code") and not fields.get("error_message"):
            parsed = parsing.parse_error(raw, content_type, scrub=redactor.text)
            fields["error_code"], fields["error_message"] = parsed.code, parsed.message
    return _build({**_DEFAULTS, **fields})


_RATE_HEADERS = parsing.RATE_LIMIT_HEADERS
_DEPRECATION_HEADERS = parsing.DEPRECATION_HEADERS
# Deprecation and version headers are the same on every call to an endpoint, and their
# parsers are pure: remember the last few answers (rate limits change every call).
_pure_cache: dict[tuple, tuple] = {}


def apply_headers(fields: dict, headers: Mapping[str, str], now: float) -> None:
    """Fill rate-limit, Retry-After, deprecation and API-version fields from (redacted,
    lower-cased) response headers. Parsers with nothing to read are skipped."""
    names = headers.keys()
    if not names.isdisjoint(_RATE_HEADERS):
        limits = parsing.parse_rate_limit(headers, now)
        fields["ratelimit_limit"] = limits.limit
        fields["ratelimit_remaining"] = limits.remaining
        if limits.reset_at is not None:
            fields["ratelimit_reset"] = _from_epoch(limits.reset_at)
        fields["retry_after_s"] = limits.retry_after_s
    rest = tuple(item for item in headers.items() if item[0] not in _RATE_HEADERS)
    if not rest:
        return
    parsed = _pure_cache.get(rest)
    if parsed is None:
        deprecation = parsing.parse_deprecation(headers)
        link = _REDACTOR.url(deprecation.link)[: parsing.LINK_CAP] if deprecation.link else ""
        parsed = (
            deprecation.deprecated,
            deprecation.deprecated_at,
            deprecation.sunset_at,
            link,
            parsing.parse_api_version(headers),
        )
        if len(_pure_cache) > 1024:
            _pure_cache.clear()
        _pure_cache[rest] = parsed
    (
        fields["deprecated"],
        fields["deprecation_at"],
        fields["sunset_at"],
        fields["deprecation_link"],
        fields["api_version"],
    ) = parsed


def _from_epoch(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


_REDACTOR = Redactor()


# --- the process-wide recorder -------------------------------------------------------------

_ALL: weakref.WeakSet[Recorder] = weakref.WeakSet()
_PERIODIC: list[Callable[[], None]] = []
_recorder = Recorder()


def get() -> Recorder:
    """The process-wide recorder."""
    return _recorder


def record(item: dict | tuple) -> None:
    """Queue one row (internal: the client and ``record_attempt`` call this)."""
    _recorder.record(item)


def record_attempt(**fields: Any) -> None:
    """Queue one attempt for the request log, e.g. from a probe (``source="probe"``).

    Keyword fields are RequestLog's (``integration_id``, ``method``, ``status``, ``outcome``,
    ``latency_ms``, ``created``, ``request_bytes``, ``response_bytes``, ``error_code``,
    ``error_message``, ``attempt``, ``call_id`` …) plus:

    * ``integration`` — an Integration or its id, instead of ``integration_id``;
    * ``url`` — the full URL: scheme, host, path *template* and redacted query come from it
      (userinfo dropped); without it give ``host`` and ``path`` (already a template);
    * ``response_headers`` — a mapping; rate-limit, Retry-After, Deprecation/Sunset/Link and
      API version are parsed from it after secret headers are dropped;
    * ``error_body`` (bytes or str) with ``content_type`` — scrubbed and capped at 2 KB; an
      error code and message are parsed from it unless given.

    ``outcome`` defaults to the status class (``other_error`` without a status), ``created``
    to now. Text fields are scrubbed here, on the caller's thread, before anything is
    queued. Returns at once; the row is written by the background writer.
    """
    _recorder.record(attempt_row(**fields))


def flush(timeout: float | None = None) -> None:
    """Block until every row recorded so far is in the database (TimeoutError after
    ``timeout`` seconds)."""
    _recorder.flush(timeout)


def stats() -> dict[str, Any]:
    """Queue length, rows written/spilled/replayed/lost, database errors, writer state."""
    return _recorder.stats()


def configure(**overrides: Any) -> Recorder:
    """Stop the process-wide writer (flushing it) and restart it with new limits.

    Keys are ``RecorderConfig`` fields; without any, settings are read again.
    """
    _recorder.stop(timeout=_recorder.config.exit_timeout_s)
    _recorder._config = RecorderConfig.from_settings(**overrides)
    _recorder._queue = collections.deque()
    _recorder._init_state()
    return _recorder


def add_periodic(hook: Callable[[], None]) -> None:
    """Run ``hook`` on the writer thread about every 30 s (e.g. refresh cached config)."""
    if hook not in _PERIODIC:
        _PERIODIC.append(hook)


def _after_fork_in_child() -> None:
    for instance in list(_ALL):
        instance._after_fork()


def _at_exit() -> None:
    for instance in list(_ALL):
        try:
            instance.stop(timeout=instance.config.exit_timeout_s)
        except Exception:  # never turn interpreter exit into a traceback
            logger.exception("recorder: flush at exit failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
