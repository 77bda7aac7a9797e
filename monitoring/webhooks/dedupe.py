"""Has this event or delivery id been accepted already? The WebhookSeen table, or Redis.

Only verified deliveries are remembered (a forger must not be able to burn an id). The
window is at least the endpoint's replay window and at least four days, because providers
redeliver a message they think failed (a lost or slow answer) with the same id for that
long: Svix over about 33 hours, Stripe for up to three days; GitHub's and Stripe's manual
redeliveries keep their ids too.

Without Redis, one ``INSERT … ON CONFLICT`` per delivery answers in a single statement:
a new id inserts, an id seen longer ago than the window refreshes its row, a recent one
changes nothing (rowcount 0: a duplicate). With ``REDIS_URL`` set the Django cache is
Redis, shared by every process, and ``cache.add`` with the window as timeout does it.

The statement runs on one worker thread per process, which keeps its database connection
open: a request thread's connection is opened and closed per request (``CONN_MAX_AGE``
0), and on SQLite that close-and-reopen costs ~20 ms, forty times the insert. Inside a
caller's transaction (a test, an atomic block) it runs on the caller's connection instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.core.cache import caches
from django.db import DatabaseError, connection
from django.utils import timezone

from monitoring.models import WebhookSeen

logger = logging.getLogger(__name__)

MIN_WINDOW_S = 4 * 24 * 3600
# Old rows are pruned by the process that notices, at most this often, in bounded chunks.
PRUNE_EVERY_S = 600
PRUNE_CHUNK = 5000

_pruned_at = 0.0
_prune_lock = threading.Lock()

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
    return type(caches["default"]).__module__ == "django.core.cache.backends.redis"


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
    params = [endpoint_id, key, now, now - timedelta(seconds=window)]
    try:
        if connection.in_atomic_block:
            return _remember(params)
        return _worker().submit(_remember_on_worker, params).result(timeout=30)
    except Exception:  # a database error, or the worker timed out: take the delivery
        logger.warning("webhook dedupe: database unavailable, delivery taken as new")
        return True


def _remember(params: list) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_REMEMBER, params)
        return cursor.rowcount != 0


def _remember_on_worker(params: list) -> bool:
    try:
        fresh = _remember(params)
    except DatabaseError:
        connection.close()  # a broken connection is not reused; the next call reconnects
        raise
    _maybe_prune()
    return fresh


_executor: tuple[int, ThreadPoolExecutor] | None = None
_executor_lock = threading.Lock()


def stop() -> None:
    """Close the dedupe thread's connection and end the thread (tests, before dropping a
    database; the next delivery starts a new one)."""
    global _executor
    with _executor_lock:
        current, _executor = _executor, None
    if current is not None and current[0] == os.getpid():
        current[1].submit(_close).result(timeout=30)
        current[1].shutdown(wait=True)


def _close() -> None:
    connection.close()  # looked up on the worker: its own thread's connection


def _worker() -> ThreadPoolExecutor:
    """This process's dedupe thread (a new one after a fork: threads do not survive it)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():
            _executor = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="hook-dedupe"))
        return _executor[1]


def _maybe_prune() -> None:
    global _pruned_at
    now = time.monotonic()
    if now - _pruned_at < PRUNE_EVERY_S or not _prune_lock.acquire(blocking=False):
        return
    try:
        _pruned_at = now
        prune()
    finally:
        _prune_lock.release()


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
