"""Write request-log rows in the background: queue, batch writer, spill file if the DB is away.

The caller's side is one ``deque.append`` of a ``monitoring.attempts.Attempt`` (or of a row
dict already built). A daemon thread drains the queue in batches, turns each attempt into a
row with ``attempts.to_row`` (the one row builder), and writes each batch in one
transaction: an ``executemany`` INSERT of the raw rows plus ``monitoring.rollup.apply_rows``
(metric buckets), so rows and their counts commit together. The writer never runs code
that came with a queue item, and never calls back into the client.

Failure handling, in order:

* A database error that may pass (SQLite locked, PostgreSQL gone: ``OperationalError`` /
  ``InterfaceError``) → the batch goes at once to a spool file under ``SPOOL_DIR`` (JSON
  lines, already redacted, fsynced); until the database answers again, the writer spills
  the queue at each wake and retries, about once a second, by replaying the spool.
* While the writer is inside a database call (a lock waited out for the busy timeout, a
  server that does not answer) a guard thread spills the queue once the writer has not
  come for it for ``RECORDER_SPILL_AFTER_MS`` (500 ms). So a ``kill -9`` during an outage
  costs at most about one second of calls; while the database answers, the rows not yet
  written.
* When the bounded queue is full anyway, callers spill on their own thread. If even the
  spill fails, the number of lost rows is kept and written as a ``RecorderLoss`` row as
  soon as the database answers (the admin shows them).
* Rows the database rejects (e.g. their integration was deleted) are counted as lost with
  the reason, never retried forever.

At exit the queue is flushed for up to ``RECORDER_EXIT_TIMEOUT_S`` (spilled at once during an
outage): by atexit, or in a multiprocessing child such as a django-q2 worker (which ends
with ``os._exit``) by multiprocessing's exit finalizers; and on SIGTERM where that would
otherwise kill the process outright (see ``_install_sigterm_handler``).

Exactly-once replay without a unique key on the hot table: each spool segment has a
random name, and the transaction that inserts its rows also inserts a ``JobState``
marker ``spool:<name>``. Crash after that commit but before the file is deleted → the
next replay finds the marker and only deletes the file. A row uid column would have cost
a unique index on every insert into ``RequestLog`` for a path that almost never runs.
Segments are ``flock``-ed by the process writing or replaying them, so several processes
can share one spool directory; a dead process's segments are replayed by the next writer.

Settings (``settings.UPSTREAM``): ``RECORDER_QUEUE_SIZE``, ``RECORDER_BATCH_SIZE``,
``RECORDER_FLUSH_INTERVAL_MS``, ``SPOOL_DIR``, and optionally ``RECORDER_BUSY_TIMEOUT_MS``
(how long the writer waits on a locked SQLite file before backing off, default 5000),
``RECORDER_SPILL_AFTER_MS`` (default 500), ``RECORDER_EXIT_TIMEOUT_S`` (flush at exit,
default 5) and ``RECORDER_SPOOL_SEGMENT_ROWS`` (default 10 000).

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
import multiprocessing
import os
import signal
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing import util as multiprocessing_util
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from monitoring import attempts
from monitoring.attempts import INTEGRATION_KEY, Attempt, to_row
from monitoring.models import JobState, RecorderLoss
from monitoring.storage import (
    DATETIME_FIELDS,
    TRANSIENT,
    existing_integrations,
    insert_rows,
    resolve_keys,
)

logger = logging.getLogger(__name__)


_MARKER_PREFIX = "spool:"


@dataclass(frozen=True)
class RecorderConfig:
    """Limits of one recorder; ``from_settings`` reads ``settings.UPSTREAM``."""

    queue_size: int = 50_000
    # A cap, not a wait: the writer takes what is queued at each wake (every flush interval,
    # or as soon as a full batch is queued), so at ordinary rates batches stay small and
    # rows reach the database within about a flush interval. Under a burst, 2000 rows per
    # transaction (~50–80 ms of SQLite write lock) spread each batch's bucket reads and
    # rewrites over four times as many rows as 500 did. The settings make it 5000 on
    # PostgreSQL (dashboard/settings.py says why).
    batch_size: int = 2000
    flush_interval_s: float = 0.2
    spool_dir: Path = Path("var/spool")
    busy_timeout_ms: int = 5000
    # With the batch in the writer's hands and the guard's tick, a kill during an outage
    # then takes under about a second of calls.
    spill_after_s: float = 0.5
    exit_timeout_s: float = 5.0
    segment_rows: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "spool_dir", Path(self.spool_dir))
        if self.queue_size < 1 or self.batch_size < 1:
            raise ValueError("recorder queue and batch sizes must be at least 1")
        if self.spill_after_s <= 0:
            raise ValueError("recorder spill_after_s must be positive")

    @classmethod
    def from_settings(cls, **overrides: Any) -> RecorderConfig:
        conf = getattr(settings, "UPSTREAM", {})
        values = {
            "queue_size": conf.get("RECORDER_QUEUE_SIZE", cls.queue_size),
            "batch_size": conf.get("RECORDER_BATCH_SIZE", cls.batch_size),
            "flush_interval_s": conf.get("RECORDER_FLUSH_INTERVAL_MS", 200) / 1000,
            "spool_dir": Path(conf.get("SPOOL_DIR", cls.spool_dir)),
            "busy_timeout_ms": conf.get("RECORDER_BUSY_TIMEOUT_MS", cls.busy_timeout_ms),
            "spill_after_s": conf.get("RECORDER_SPILL_AFTER_MS", 500) / 1000,
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
        # Reentrant: the SIGTERM handler may run on a thread that is inside one of them.
        self._lock = threading.RLock()  # starting the threads, counters bumped by callers
        self._spool_lock = threading.RLock()
        # Taking from the queue's head (writer, guard, stop): no flush marker is answered
        # while rows queued before it are still on their way to the spool.
        self._take_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._guard: threading.Thread | None = None
        self._guard_stop = threading.Event()
        self._running = False
        self._stopping = False
        self._idle = True  # the writer is waiting for work, not in a database call or backoff
        self._taken_at = 0.0  # when the writer last came for the queue
        self._outage = False  # a database error since the last good replay: spill, do not write
        self._in_hand: list[dict] = []  # the batch inside a database call (only in memory)
        self._segment: int | None = None  # fd of the open spool segment
        self._segment_name = ""
        self._segment_rows = 0
        self._lost_pending: list[tuple[int, str]] = []
        self._spool_pending = bool(self._spool_files())
        self._next_replay = 0.0
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

    def record(self, item: Attempt | dict) -> None:
        """Queue one attempt (made a row on the writer thread), or a row dict already built
        (``attempts.to_row``'s output, or a bulk loader's complete row)."""
        queue = self._queue
        if len(queue) < self._max:
            queue.append(item)
            if len(queue) >= self._batch and not self._wake.is_set():
                self._wake.set()
        else:
            self._overflow(item)
        if not self._running:
            self._start()

    def _overflow(self, item: Attempt | dict) -> None:
        # Queue full: the database has been away for a while. Spill on the caller's thread.
        try:
            row = to_row(item)
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
            "outage": self._outage,
            "writer_cpu_s": round(self._writer_cpu, 6),
            "last_error": self.last_error,
        }

    def _start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._stopping = False
            self._guard_stop.clear()
            self._taken_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="upstream-recorder", daemon=True)
            self._guard = threading.Thread(
                target=self._guard_run, name="upstream-recorder-guard", daemon=True
            )
            self._running = True
            self._thread.start()
            self._guard.start()
        _prepare_exit()

    def stop(self, timeout: float | None = None) -> None:
        """Flush what can be flushed within ``timeout``, spill the rest, stop the writer.

        During an outage nothing waits for the database: the queue goes to the spool at once.
        """
        if not self._running:
            self._spill_queue()
            self._close_segment()
            return
        flushed = not self._troubled() and self._flush(timeout)
        self._stopping = True
        self._guard_stop.set()
        if not flushed:
            self._spill_queue()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)
            if thread.is_alive() and self._in_hand:
                # A batch only in memory, inside a database call: the call ends within the
                # busy (lock) timeout, and the writer spills the batch if it failed.
                thread.join(timeout=self.config.busy_timeout_ms / 1000 + 1.0)
            if thread.is_alive():
                self._spill_queue()
                if self._in_hand:
                    logger.warning(
                        "recorder: %d rows were inside a database call at exit", len(self._in_hand)
                    )
        if self._guard is not None:
            self._guard.join(timeout=1.0)
        self._running = False
        self._thread = self._guard = None
        self._close_segment()

    def _troubled(self) -> bool:
        """In an outage, or the writer has been kept from the queue for too long."""
        waited = time.monotonic() - self._taken_at
        return self._outage or (not self._idle and waited >= self.config.spill_after_s)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.flush_interval_s
        while True:
            self._idle = True
            self._wake.wait(interval)
            self._idle = False
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                now = time.monotonic()
                # Not when stopping: the spool keeps for the next writer, exit must not wait.
                due = (self._spool_pending or self._outage) and now >= self._next_replay
                if due and not stopping:
                    self._replay_spool()
                if self._lost_pending and now >= self._next_replay:
                    self._write_losses()
                self._refresh_policies()
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
        self._taken_at = time.monotonic()
        owed = len(queue)
        while queue and (owed > 0 or len(queue) >= size or self._stopping):
            batch: list = []
            marker = None
            with self._take_lock:
                while queue and len(batch) < size:
                    item = queue.popleft()
                    owed -= 1
                    if item.__class__ is _Flush:
                        marker = item
                        break
                    batch.append(item)
                self._taken_at = time.monotonic()
                if batch and self._outage:
                    # Straight to the spool: the next replay is the database's next try.
                    self._spill(self._build_all(batch))
                    batch = []
            if batch:
                rows = self._build_all(batch)
                if rows:
                    self._write(rows)
            if marker is not None:
                marker.ok = self._replay_until_empty()
                marker.done.set()

    def _guard_run(self) -> None:
        """Spill the queue while the writer is held up in a database call or a backoff.

        A healthy writer comes for the queue every flush interval and after every batch, so
        then this thread only wakes up and looks.
        """
        after = self.config.spill_after_s
        tick = min(0.1, after / 4)
        spilled_at = 0.0
        while not self._guard_stop.wait(tick):
            if not self._queue or (self._idle and not self._outage):
                continue
            now = time.monotonic()
            if now - max(self._taken_at, spilled_at) < after:
                continue
            spilled_at = now
            try:
                self._spill_queue(keep_flushes=True)
            except Exception:  # the guard must never die either
                logger.exception("recorder: guard could not spill the queue")

    def _build_all(self, items: list) -> list[dict]:
        rows = []
        for item in items:
            try:
                rows.append(to_row(item))
            except Exception as exc:
                logger.exception("recorder: could not build a row")
                self._lose(1, f"row could not be built: {exc!r}"[:500])
        return rows

    def _write(self, rows: list[dict]) -> None:
        """Insert one batch; if the database is away, spill it (its retry is the replay)."""
        self._in_hand = rows
        try:
            self._insert(rows)
            self.counters["written"] += len(rows)
            self.counters["batches"] += 1
        except TRANSIENT as exc:
            self._db_error(exc)
            self._spill(rows)
        except Exception as exc:
            # The database answered and refused these rows (or a row is malformed): find
            # the bad ones instead of retrying the batch forever.
            self._insert_one_by_one(rows, exc)
        finally:
            self._in_hand = []

    def _backoff(self, delay: float) -> None:
        """Wait before the next attempt; meanwhile keep the queue from filling up (the
        guard spills it by age)."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0 and not self._stopping:
            if len(self._queue) >= self._max * 3 // 4:
                self._spill_queue(keep_flushes=True)
            time.sleep(min(left, 0.05))

    def _db_error(self, exc: Exception) -> None:
        self.counters["db_errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        logger.warning("recorder: database error, will retry: %s", self.last_error)
        if isinstance(exc, TRANSIENT):
            self._outage = True
            self._next_replay = time.monotonic() + 1.0
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
        resolve_keys(rows)
        # SQLite: the integrations are checked below inside the batch's IMMEDIATE
        # transaction, which no other writer can interleave with, so the per-row foreign
        # key lookups of the inserts (~15 % of the writer's time) prove nothing more. Off
        # for this transaction only (a no-op on PostgreSQL, which keeps its checks).
        unchecked = connection.disable_constraint_checking()
        try:
            with transaction.atomic():
                ids = {row["integration_id"] for row in rows}
                known = existing_integrations(ids)
                if len(known) < len(ids):
                    kept = [row for row in rows if row["integration_id"] in known]
                    self._lose(len(rows) - len(kept), "integration no longer exists")
                    rows[:] = kept
                losses = list(self._lost_pending)
                if marker is not None:
                    JobState.objects.create(name=marker, value=len(rows))
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
        for i, row in enumerate(rows):
            try:
                resolve_keys([row])
                with transaction.atomic():
                    insert_rows([row], rollup=True, counters=self.counters)
                self.counters["written"] += 1
            except TRANSIENT as exc:
                self._db_error(exc)
                self._spill(list(rows[i:]))  # the database went away: the rest waits there
                return
            except Exception as exc:
                self._lose(1, f"row refused: {exc!r}"[:500])

    def _write_losses(self) -> bool:
        with self._lock:
            pending = list(self._lost_pending)
        if not pending:
            return True
        try:
            self._prepare_connection()
            RecorderLoss.objects.bulk_create(
                RecorderLoss(rows=n, reason=reason[:500]) for n, reason in pending
            )
        except DatabaseError as exc:
            self._db_error(exc)
            self._next_replay = time.monotonic() + 1.0
            return False
        with self._lock:
            del self._lost_pending[: len(pending)]
        return True

    def _lose(self, n: int, reason: str) -> None:
        """Count rows that cannot be stored; the count itself is persisted (RecorderLoss)."""
        logger.error("recorder: %d rows lost: %s", n, reason)
        with self._lock:
            self.counters["lost"] += n
            self._lost_pending.append((n, reason))

    def _refresh_policies(self) -> None:
        # Admin edits of templates, redaction names and https reach new rows; attempts
        # decides when a reload is due, the writer only lends it its thread.
        try:
            attempts.refresh_policies()
        except Exception:
            logger.exception("recorder: integration policy refresh failed")

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
        with self._take_lock:
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
            if self._replay_spool() and self._write_losses():
                return True
            self._backoff(delay)
            delay = min(delay * 2, 5.0)
        return False

    def _replay_spool(self) -> bool:
        """Replay every segment nobody else holds; False if the database refused.

        Success ends an outage: the next batches are written, not spilled.
        """
        paths = self._spool_files()
        if paths:
            try:
                # Before closing our segment: each try of an outage would leave one more file.
                self._prepare_connection()
            except TRANSIENT as exc:
                self._db_error(exc)
                return False
        self._close_segment()
        leftover = False
        for path in paths:
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
        # A segment opened meanwhile (the guard, a caller) waits for the next replay.
        self._spool_pending = leftover or self._segment is not None
        self._next_replay = time.monotonic() + 5.0
        self._outage = False
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
            if JobState.objects.filter(name=marker).exists():
                logger.info("recorder: %s was already replayed; deleting it", path.name)
            else:
                try:
                    self._insert(rows, marker=marker)
                    self.counters["written"] += len(rows)
                except TRANSIENT:
                    raise
                except Exception as exc:
                    self._insert_one_by_one(rows, exc)
                self.counters["replayed"] += len(rows)
        except TRANSIENT as exc:
            self._db_error(exc)
            return False
        if torn:
            self._lose(torn, f"unreadable lines in spool segment {path.name}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(DatabaseError):
            JobState.objects.filter(name=marker).delete()
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


# --- the spool's rows ------------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool {type(value).__name__}")


def _from_spool(row: dict) -> dict:
    for name in DATETIME_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    if isinstance(row.get(INTEGRATION_KEY), list):
        row[INTEGRATION_KEY] = tuple(row[INTEGRATION_KEY])
    return to_row(row)  # ValueError if a required column is missing


# --- the process-wide recorder -------------------------------------------------------------

_ALL: weakref.WeakSet[Recorder] = weakref.WeakSet()
_recorder = Recorder()


def get() -> Recorder:
    """The process-wide recorder."""
    return _recorder


def record(item: Attempt | dict) -> None:
    """Queue one attempt (or a row dict already built) for the request log."""
    _recorder.record(item)


def record_attempt(**fields: Any) -> None:
    """Queue one attempt given as keyword fields (``attempts.from_fields``), e.g. a probe's."""
    _recorder.record(attempts.from_fields(**fields))


def spill_now(rows: list[dict]) -> bool:
    """Append finished rows (``to_row``'s) to the spool at once, fsynced, for the writer to
    replay; for a caller that must answer "stored" while the database is away. False if
    even the spool refused them (they are then counted lost)."""
    rec = _recorder
    with rec._spool_lock:  # no other spill can move the counter meanwhile
        before = rec.counters["spilled"]
        rec._spill(rows)
        ok = rec.counters["spilled"] - before == len(rows)
    if not rec._running:
        rec._start()
    return ok


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


def _after_fork_in_child() -> None:
    for instance in list(_ALL):
        instance._after_fork()
    # The child decides for itself when its writer starts (see _install_sigterm_handler).
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _at_exit() -> None:
    for instance in list(_ALL):
        try:
            instance.stop(timeout=instance.config.exit_timeout_s)
        except Exception:  # never turn interpreter exit into a traceback
            logger.exception("recorder: flush at exit failed")


_exit_finalizer_pid = 0


def _prepare_exit() -> None:
    """When a writer starts: make sure this process flushes when it ends."""
    global _exit_finalizer_pid
    if multiprocessing.parent_process() is None:
        _install_sigterm_handler()
    elif _exit_finalizer_pid != os.getpid():
        # A multiprocessing child (django-q2's workers) ends with os._exit, skipping atexit,
        # after its exit finalizers; its bootstrap clears those inherited from the parent.
        _exit_finalizer_pid = os.getpid()
        multiprocessing_util.Finalize(None, _at_exit, exitpriority=100)


def _install_sigterm_handler() -> bool:
    """Flush on SIGTERM where SIGTERM would otherwise kill this process outright: from the
    main thread (the only one that may), over the default disposition only, and never in a
    multiprocessing child (qcluster's sentinel ends an overrunning worker with SIGTERM and
    needs it dead at once). A process with a handler of its own stops its own way (gunicorn
    workers finish their requests, qcluster stops its cluster, our commands finish the runs
    in hand) and then exits normally, where atexit flushes."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return True
    if current is not signal.SIG_DFL or multiprocessing.parent_process() is not None:
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum: int, frame: object) -> None:
    """Flush (or spill, during an outage) every recorder, then die of the signal as the
    default disposition we replaced would have."""
    _at_exit()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
