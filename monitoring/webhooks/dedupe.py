"""Has this event or delivery id been accepted already? The WebhookSeen table, or Redis.

Only verified deliveries are remembered (a forger must not be able to burn an id). The
window is at least the endpoint's replay window and at least four days, because providers
redeliver a message they think failed (a lost or slow answer) with the same id for that
long: Svix over about 33 hours, Stripe for up to three days; GitHub's and Stripe's manual
redeliveries keep their ids too.

Without Redis, one ``INSERT … ON CONFLICT`` per delivery answers in a single autocommit
statement (no transaction or savepoint around it): a new id inserts, an id seen longer ago
than the window refreshes its row, a recent one changes nothing (rowcount 0: a duplicate).
The unique constraint decides, so two processes racing on one id cannot both see it as new.
With ``REDIS_URL`` set the Django cache is Redis, shared by every process, and
``cache.add`` with the window as timeout does it.

The statement runs on one connection per process kept open for it, on the request's own
thread under a lock: a request thread's connection is opened and closed per request on
SQLite (``CONN_MAX_AGE`` 0), and that reopening costs ten times the insert; handing the
statement to a worker thread instead costs as much again in thread switches. Inside a
caller's transaction (a test, an atomic block) it runs on the caller's connection, which
alone sees the caller's uncommitted rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.utils import timezone

from monitoring.models import WebhookSeen

logger = logging.getLogger(__name__)

MIN_WINDOW_S = 4 * 24 * 3600
# Old rows are pruned by the process that notices, at most this often, in bounded chunks,
# on a thread of its own (never in a request).
PRUNE_EVERY_S = 600
PRUNE_CHUNK = 5000
# How long a delivery waits for the process's dedupe connection before it is taken as new.
WAIT_S = 30.0
# SQLite: the dedupe connection leaves WAL checkpoints (an fsync each) to the recorder's
# connection, which commits after every batch anyway; this is only the backstop, in pages,
# for a WAL that nobody else checkpoints. Durability is unchanged: each commit is as
# durable as before, only which connection copies the WAL back into the database differs.
SQLITE_CHECKPOINT_PAGES = 10_000

_TABLE = WebhookSeen._meta.db_table
# "key" is quoted: a reserved word in some dialects. The table name is the model's own.
_REMEMBER = (
    f'INSERT INTO {_TABLE} (endpoint_id, "key", created) VALUES (%s, %s, %s) '  # noqa: S608
    f'ON CONFLICT (endpoint_id, "key") DO UPDATE SET created = excluded.created '
    f"WHERE {_TABLE}.created < %s"
)


def window_s(replay_window_s: int) -> int:
    """How long an id is remembered: never shorter than the replay window."""
    return max(int(replay_window_s), MIN_WINDOW_S)


def key_of(delivery_id: str) -> str:
    return hashlib.sha256(delivery_id.encode("utf-8", "surrogateescape")).hexdigest()


def _uses_redis() -> bool:
    # Read from the setting, not ``caches["default"]``: that lookup costs more than the
    # rest of a duplicate check. Django's own Redis backend, as REDIS_URL configures.
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    return backend.startswith("django.core.cache.backends.redis.")


def first_time(endpoint_id: int, delivery_id: str, replay_window_s: int) -> bool:
    """Remember ``delivery_id`` for the endpoint; False if it was seen within the window.

    If the store is unavailable the delivery is taken as new: processing twice is the lesser
    harm than refusing a provider's genuine message.
    """
    window = window_s(replay_window_s)
    key = key_of(delivery_id)
    if _uses_redis():
        try:
            return bool(
                caches["default"].add(f"upstream:hook:{endpoint_id}:{key}", 1, timeout=window)
            )
        except Exception:
            logger.warning("webhook dedupe: cache unavailable, delivery taken as new")
            return True
    now = timezone.now()
    seen = (endpoint_id, key, now, now - timedelta(seconds=window))
    if connection.in_atomic_block:
        try:
            with connection.cursor() as cursor:
                cursor.execute(_REMEMBER, seen)
                return cursor.rowcount != 0
        except DatabaseError:
            logger.warning("webhook dedupe: database unavailable, delivery taken as new")
            return True
    try:
        return _remember_on_own_connection(seen)
    except (DatabaseError, TimeoutError):
        logger.warning("webhook dedupe: database unavailable, delivery taken as new")
        return True
    finally:
        _maybe_prune()


# The process's dedupe connection: (pid, Django connection, the statement in its driver's
# placeholders). A child after a fork opens its own and never touches (or closes) the one
# it inherited.
_own: tuple[int, Any, str] | None = None
_inherited: list[Any] = []
_own_lock = threading.Lock()


def _remember_on_own_connection(seen: tuple) -> bool:
    if not _own_lock.acquire(timeout=WAIT_S):
        raise TimeoutError("the dedupe connection stayed busy")
    try:
        conn, sql = _connection()
        try:
            return _execute(conn, sql, seen)
        except conn.Database.Error as exc:
            _close(conn)
            if _busy(exc):
                raise DatabaseError("dedupe: the database stayed locked") from None
            # A connection the server dropped (idle timeout, restart) is not reused: retry
            # once on a fresh one, so one stale socket does not let a duplicate through.
        conn, sql = _connection()
        try:
            return _execute(conn, sql, seen)
        except conn.Database.Error:
            _close(conn)
            raise DatabaseError("dedupe statement failed") from None
    finally:
        _own_lock.release()


def _busy(exc: Exception) -> bool:
    """SQLite's lock wait ran out: trying again at once would only wait as long again."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _execute(conn, sql: str, seen: tuple) -> bool:
    # The driver's own cursor, past Django's wrappers (which cost as much as the statement):
    # the connection is this module's alone, in autocommit, so none of what they manage
    # (queries log, transaction state, health checks per request) applies to it.
    endpoint_id, key, now, cutoff = seen
    if conn.vendor == "sqlite":  # as the ORM stores them there: naive UTC text
        now, cutoff = str(now.replace(tzinfo=None)), str(cutoff.replace(tzinfo=None))
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, (endpoint_id, key, now, cutoff))
        return cursor.rowcount != 0
    finally:
        cursor.close()


def _connection() -> tuple[Any, str]:
    global _own
    pid = os.getpid()
    if _own is not None and _own[0] == pid:
        conn, sql = _own[1], _own[2]
    else:
        if _own is not None:
            _inherited.append(_own[1])  # the parent's: kept referenced, never closed here
        conn = connections.create_connection(DEFAULT_DB_ALIAS)
        conn.inc_thread_sharing()  # used by whichever request thread holds the lock
        sql = _REMEMBER.replace("%s", "?") if conn.vendor == "sqlite" else _REMEMBER
        _own = (pid, conn, sql)
    if conn.connection is None:
        conn.ensure_connection()
        if conn.vendor == "sqlite":
            conn.connection.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    return conn, sql


def _close(conn) -> None:
    try:
        conn.close()
    except DatabaseError:
        conn.connection = None  # already broken: the next use reconnects


def stop() -> None:
    """Close this process's dedupe connection and wait for a running prune (tests, before
    dropping a database; the next delivery opens a new connection)."""
    global _own
    with _own_lock:
        current, _own = _own, None
        if current is not None and current[0] == os.getpid():
            _close(current[1])
    pruning = _pruning
    if pruning is not None:
        pruning.join(timeout=30)


_pruned_at = 0.0
_pruning: threading.Thread | None = None
_prune_lock = threading.Lock()


def _maybe_prune() -> None:
    global _pruned_at, _pruning
    now = time.monotonic()
    if now - _pruned_at < PRUNE_EVERY_S or not _prune_lock.acquire(blocking=False):
        return
    try:
        if now - _pruned_at < PRUNE_EVERY_S:
            return
        _pruned_at = now
        _pruning = threading.Thread(target=_prune_in_background, name="hook-prune", daemon=True)
        _pruning.start()
    finally:
        _prune_lock.release()


def _prune_in_background() -> None:
    try:
        prune()
    except Exception:
        logger.warning("webhook dedupe: pruning failed, will retry later")
    finally:
        connection.close()  # this thread's own connection


def prune(max_rows: int = PRUNE_CHUNK) -> int:
    """Delete up to ``max_rows`` ids older than every endpoint's window; returns how many.

    Rows older than ``MIN_WINDOW_S`` may still matter for an endpoint with a longer replay
    window, so the cut is per endpoint only when such endpoints exist.
    """
    from monitoring.models import WebhookEndpoint

    cutoff = timezone.now() - timedelta(seconds=MIN_WINDOW_S)
    long = {
        e.pk: timezone.now() - timedelta(seconds=window_s(e.replay_window_s))
        for e in WebhookEndpoint.objects.filter(replay_window_s__gt=MIN_WINDOW_S).only(
            "pk", "replay_window_s"
        )
    }
    old = WebhookSeen.objects.filter(created__lt=cutoff).exclude(endpoint_id__in=long)
    ids = list(old.values_list("pk", flat=True)[:max_rows])
    for endpoint_id, endpoint_cutoff in long.items():
        ids += WebhookSeen.objects.filter(
            endpoint_id=endpoint_id, created__lt=endpoint_cutoff
        ).values_list("pk", flat=True)[: max(0, max_rows - len(ids))]
    try:
        deleted, _ = WebhookSeen.objects.filter(pk__in=ids).delete() if ids else (0, {})
    except DatabaseError:
        logger.warning("webhook dedupe: pruning failed, will retry later")
        return 0
    return deleted
