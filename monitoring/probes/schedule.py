"""Probes on time: claim due probes, run them, keep up/degraded/down state, record every run.

:func:`claim_due` and :func:`record_runs` are the database half, always called from
synchronous code: claiming moves ``next_run_at`` forward with a compare-and-set update per
probe (``SELECT … FOR UPDATE SKIP LOCKED`` first on PostgreSQL; on SQLite the IMMEDIATE
transaction serialises claimers), so two dispatchers never run one slot twice, and
``claimed_until`` keeps a slow run from overlapping the next slot of the same probe.
:func:`record_runs` moves each probe's state with hysteresis (:func:`next_state`), writes a
result row and a flip row on change, and the run's request-log rows and their buckets, all
in one transaction: a worker killed at any point leaves a run wholly stored or not at all
(its claim then lapses and the probe's next slot runs as usual).

:class:`Dispatcher` joins them to :func:`monitoring.probes.run.execute`: the calling thread
claims and writes, an asyncio loop in a second thread runs the HTTP calls concurrently (at
most ``PROBE_CONCURRENCY`` in flight; it only claims what it can start at once, so a slow
provider holds one slot, never the queue, and unclaimed work stays free for another
dispatcher).

Why a loop inside a django-q2 task: django-q2's scheduler only looks at schedules about every
30 s, far too coarse for 30-second probes. The ``upstream:probe-dispatcher`` schedule starts
:func:`dispatch_task` every minute; it ticks every half second for up to ``Q_TIMEOUT`` minus
the longest probe timeout minus a margin (80 s with the default 120 s), long enough to bridge
a late schedule. Each new task takes the dispatcher generation over (a ``JobState`` row),
and the previous loop stops at its next tick, finishing the runs in hand, so normally only
one django-q2 worker is busy dispatching. ``manage.py run_probes --loop`` is the same loop
without that hand-over, for running a dedicated dispatcher process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import attempts, storage
from monitoring.models import (
    JobState,
    Probe,
    ProbeFlip,
    ProbeKind,
    ProbeResult,
    ProbeState,
)
from monitoring.probes.run import (
    MAX_TIMEOUT_S,
    ProbeSpec,
    RunResult,
    allow_hosts,
    default_concurrency,
    execute,
    failed_run,
    make_client,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# A claim outlives the run's own timeout by this much before another dispatcher may retake it.
CLAIM_MARGIN_S = 10.0
TICK_S = 0.5
DISPATCHER_GENERATION = "probe_dispatcher_generation"


# --- state ------------------------------------------------------------------------------------


def next_state(
    state: str,
    failures: int,
    successes: int,
    *,
    ok: bool,
    degraded: bool,
    fail_threshold: int,
    recover_threshold: int,
) -> tuple[str, int, int]:
    """Hysteresis: (new state, consecutive failures, consecutive successes) after one run.

    Down after ``fail_threshold`` failures in a row; back after ``recover_threshold``
    successes in a row. Fewer failures than that leave the state as it was. Outside ``down``
    a success sets up or degraded from its own latency verdict.
    """
    if not ok:
        failures, successes = failures + 1, 0
        if failures >= max(1, fail_threshold):
            return ProbeState.DOWN, failures, successes
        return state, failures, successes
    failures, successes = 0, successes + 1
    if state == ProbeState.DOWN and successes < max(1, recover_threshold):
        return state, failures, successes
    return (ProbeState.DEGRADED if degraded else ProbeState.UP), failures, successes


_STATE_FIELDS = [
    "id", "state", "consecutive_failures", "consecutive_successes", "fail_threshold",
    "recover_threshold", "cert_days_left", "cert_checked_at", "state_changed_at",
    "incident_name", "incident_url", "incident_since",
]  # fmt: skip
_RUN_FIELDS = [
    "state", "state_changed_at", "consecutive_failures", "consecutive_successes",
    "last_run_at", "last_ok", "last_reason", "last_message", "last_latency_ms",
    "cert_days_left", "cert_checked_at", "claimed_until", "incident_name", "incident_url",
    "incident_since",
]  # fmt: skip


def record_runs(runs: Iterable[tuple[ProbeSpec, RunResult]]) -> list[ProbeResult]:
    """Store results, move each probe's state (with a flip row on change), release claims.

    Only run-state fields are written, so a configuration edit made meanwhile survives.
    The runs' request-log rows and their buckets commit in the same transaction: a worker
    killed after the results were stored but before a background writer's turn would have
    kept the results and lost their rows (the claims of a run that never commits lapse).
    """
    runs = list(runs)
    if not runs:
        return []
    now = timezone.now()
    results, flips, touched = [], [], []
    log_rows = _request_log_rows(runs)
    with transaction.atomic():
        probes = Probe.objects.only(*_STATE_FIELDS).in_bulk([spec.probe_id for spec, _ in runs])
        for spec, run in runs:
            probe = probes.get(spec.probe_id)
            if probe is None:  # deleted while it ran
                continue
            state, failures, successes = next_state(
                probe.state,
                probe.consecutive_failures,
                probe.consecutive_successes,
                ok=run.ok,
                degraded=run.degraded,
                fail_threshold=probe.fail_threshold,
                recover_threshold=probe.recover_threshold,
            )
            if state != probe.state:
                flips.append(
                    ProbeFlip(
                        probe=probe,
                        created=now,
                        from_state=probe.state,
                        to_state=state,
                        reason=run.reason,
                        message=run.message,
                    )
                )
                logger.info("probe %s: %s → %s %s", probe.pk, probe.state, state, run.message)
                probe.state_changed_at = now
            probe.state = state
            probe.consecutive_failures = failures
            probe.consecutive_successes = successes
            probe.last_run_at = run.started_at
            probe.last_ok = run.ok
            probe.last_reason = run.reason
            probe.last_message = run.message
            probe.last_latency_ms = run.latency_ms
            if run.cert_days_left is not None:
                probe.cert_days_left = run.cert_days_left
                probe.cert_checked_at = now
            probe.claimed_until = None
            if spec.kind == ProbeKind.STATUSPAGE and run.ok:
                _note_incident(probe, run, now)
            touched.append(probe)
            results.append(
                ProbeResult(
                    probe=probe,
                    created=run.started_at,
                    ok=run.ok,
                    degraded=run.degraded,
                    reason=run.reason,
                    status=run.status,
                    latency_ms=run.latency_ms,
                    cert_days_left=run.cert_days_left,
                    message=run.message,
                    scheduled_for=spec.scheduled_for,
                )
            )
        ProbeResult.objects.bulk_create(results)
        ProbeFlip.objects.bulk_create(flips)
        rows = [_db_values([getattr(p, f) for f in _RUN_FIELDS] + [p.pk]) for p in touched]
        with connection.cursor() as cursor:
            cursor.executemany(_update_sql(_RUN_FIELDS), rows)
        if log_rows:
            # Held until commit on PostgreSQL (FOR KEY SHARE): an integration deleted
            # meanwhile takes its probes' rows with it, and never leaves orphans.
            known = storage.existing_integrations({row["integration_id"] for row in log_rows})
            storage.insert_rows([row for row in log_rows if row["integration_id"] in known])
    return results


def _note_incident(probe: Probe, run: RunResult, now: dt.datetime) -> None:
    """Keep the status page's open incident on the probe; an unreachable page changes nothing."""
    if run.incident is None:
        probe.incident_name, probe.incident_url, probe.incident_since = "", "", None
        return
    name, link, since = run.incident
    if name != probe.incident_name:
        probe.incident_since = since or now
    probe.incident_name, probe.incident_url = name[:300], link[:500]


def _request_log_rows(runs: list[tuple[ProbeSpec, RunResult]]) -> list[dict]:
    """Every run is also an attempt in the request log (source "probe"): its rows.

    A multi-step run is one attempt per step it sent (a reused sign-in sent nothing).
    """
    rows = []
    for spec, parent in runs:
        if not parent.logged:
            continue
        for run in parent.attempts or [parent]:
            try:
                rows.append(attempts.to_row(_attempt(spec, run)))
            except Exception:  # one bad row must not cost the batch its results
                logger.exception("probe %s: could not build its request-log row", spec.probe_id)
    return rows


def _attempt(spec: ProbeSpec, run: RunResult) -> attempts.Attempt:
    return attempts.from_fields(
        integration_id=spec.integration_id,
        source="probe",
        method=run.method,
        url=run.url,
        status=run.status,
        outcome=run.outcome,
        latency_ms=run.latency_ms or 0.0,
        response_headers=run.response_headers,
        request_bytes=run.request_bytes,
        response_bytes=run.response_bytes,
        error_message="" if run.ok else run.message,
        created=run.started_at,
    )


# --- claiming ---------------------------------------------------------------------------------


def _next_slot(slot: dt.datetime, interval_s: int, now: dt.datetime) -> dt.datetime:
    """The slot after ``slot`` that is still ahead of ``now``, keeping the probe's phase."""
    step = dt.timedelta(seconds=max(1, interval_s))
    behind = (now - slot) // step if now >= slot else 0
    return slot + step * (behind + 1)


def _free(now: dt.datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def claim_due(
    *, limit: int, now: dt.datetime | None = None, due_by: dt.datetime | None = None
) -> list[ProbeSpec]:
    """Claim up to ``limit`` probes due by ``due_by`` (default now), oldest slot first."""
    if limit <= 0:
        return []
    now = now or timezone.now()
    due = (
        Probe.objects.filter(enabled=True, next_run_at__lte=due_by or now)
        .filter(_free(now))
        .order_by("next_run_at", "pk")
    )
    postgres = connection.vendor == "postgresql"
    # On SQLite every transaction takes the write lock: don't take it on an idle tick.
    if not postgres and not due.exists():
        return []
    # Compare-and-set per row: the slot must still be the one we read.
    # Inside this transaction nobody else can have moved it (SQLite: we hold the write lock;
    # PostgreSQL: we hold the row locks), so a short row count means something is badly
    # wrong and the whole claim is rolled back rather than half taken.
    sql = _update_sql(["next_run_at", "claimed_until"], "next_run_at = %s AND enabled")
    claimed, params = [], []
    with transaction.atomic():
        if postgres:
            due = due.select_for_update(skip_locked=True)
        for probe in due.only(*_SPEC_FIELDS)[:limit]:
            slot = probe.next_run_at
            timeout = min(max(probe.timeout_s, 0.1), MAX_TIMEOUT_S)
            until = now + dt.timedelta(seconds=timeout + CLAIM_MARGIN_S)
            params.append(
                _db_values([_next_slot(slot, probe.interval_s, now), until, probe.pk, slot])
            )
            claimed.append(ProbeSpec.from_probe(probe, scheduled_for=slot))
        if not claimed:
            return []
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            if cursor.rowcount != len(claimed):
                logger.error("claimed %d of %d due probes; retrying", cursor.rowcount, len(claimed))
                transaction.set_rollback(True)
                return []
    return claimed


_SPEC_FIELDS = [
    "id", "integration_id", "method", "url", "headers", "body", "timeout_s", "assertions",
    "interval_s", "next_run_at", "kind", "steps",
]  # fmt: skip


def _update_sql(fields: list[str], condition: str = "") -> str:
    """``UPDATE probe SET f = %s, … WHERE id = %s [AND condition]`` for executemany.

    One plain UPDATE per row: ``bulk_update`` builds CASE expressions that cost ~10 ms a row
    to compile, more than the probe run itself.
    """
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(Probe._meta.get_field(f).column)} = %s" for f in fields)
    where = f"{quote('id')} = %s" + (f" AND {condition}" if condition else "")
    # Only model field names and constants go in; values are parameters.
    return f"UPDATE {quote(Probe._meta.db_table)} SET {sets} WHERE {where}"  # noqa: S608


def _db_values(values: list[Any]) -> list[Any]:
    """Adapt datetimes the way Django's backend stores them (SQLite keeps text)."""
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(v) if isinstance(v, dt.datetime) else v for v in values]


# --- running ----------------------------------------------------------------------------------


async def _run_all(
    specs: list[ProbeSpec], *, verify: ssl.SSLContext | bool, concurrency: int
) -> list[RunResult]:
    gate = asyncio.Semaphore(concurrency)
    allowed = allow_hosts()
    async with make_client(verify=verify, concurrency=concurrency) as client:

        async def one(spec: ProbeSpec) -> RunResult:
            async with gate:
                return await execute(spec, client, allowed=allowed)

        return list(await asyncio.gather(*(one(s) for s in specs)))


def try_once(spec: ProbeSpec, *, verify: ssl.SSLContext | bool = True) -> RunResult:
    """Run a probe that may not be saved yet once, through the real runner (SSRF guard and
    all), recording nothing: the editor's "Test run"."""
    (result,) = asyncio.run(_run_all([spec], verify=verify, concurrency=1))
    return result


def run_now(
    probes: Iterable[Probe], *, verify: ssl.SSLContext | bool = True
) -> tuple[list[ProbeResult], list[Probe]]:
    """Run these probes at once, outside their schedule: (results, probes already running).

    Each probe is claimed first, so a run already in flight elsewhere is not doubled; the
    schedule (``next_run_at``) is left alone.
    """
    probes = list(probes)
    concurrency = default_concurrency()
    now = timezone.now()
    rounds = math.ceil(len(probes) / concurrency) if probes else 0
    hold = dt.timedelta(seconds=MAX_TIMEOUT_S * rounds + CLAIM_MARGIN_S)
    specs, busy = [], []
    for probe in probes:
        won = Probe.objects.filter(pk=probe.pk).filter(_free(now)).update(claimed_until=now + hold)
        if won:
            specs.append(ProbeSpec.from_probe(probe))
        else:
            busy.append(probe)
    if not specs:
        return [], busy
    try:
        runs = asyncio.run(_run_all(specs, verify=verify, concurrency=concurrency))
    except BaseException:
        Probe.objects.filter(pk__in=[s.probe_id for s in specs]).update(claimed_until=None)
        raise
    return record_runs(zip(specs, runs, strict=True)), busy


@dataclass
class DispatchStats:
    runs: int = 0
    ok: int = 0
    failed: int = 0
    # The latest runs' lateness only: a --loop dispatcher runs for months.
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def __str__(self) -> str:
        late = sorted(self.lateness_s)
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))] if late else 0.0
        return f"{self.runs} runs, {self.ok} ok, {self.failed} failed, lateness p99 {p99:.2f} s"


class HttpThread:
    """An asyncio loop in a daemon thread, holding the shared AsyncClient."""

    def __init__(self, *, verify: ssl.SSLContext | bool, concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="probe-http", daemon=True)
        self.thread.start()
        self.client = self.call(self._open(verify, concurrency))

    @staticmethod
    async def _open(verify: ssl.SSLContext | bool, concurrency: int) -> httpx.AsyncClient:
        return make_client(verify=verify, concurrency=concurrency)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self, specs: list[ProbeSpec], allowed: list[str], done: queue.Queue) -> None:
        """Start runs of ``specs``; each finished (spec, RunResult) is put on ``done``.

        One hand-over for the whole batch: a wake-up per run would make the two threads
        trade the GIL once per probe (up to 5 ms each), delaying the last starts by seconds.
        """

        def launch() -> None:
            for spec in specs:
                task = self.loop.create_task(execute(spec, self.client, allowed=allowed))
                self.tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self.tasks.discard)
                task.add_done_callback(partial(_finished, done, spec))

        self.loop.call_soon_threadsafe(launch)

    def close(self) -> None:
        try:
            self.call(self.client.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


class Dispatcher:
    """Claims due probes every tick, runs them concurrently, writes results as they finish."""

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        verify: ssl.SSLContext | bool = True,
        tick_s: float = TICK_S,
    ) -> None:
        self.concurrency = concurrency or default_concurrency()
        self.verify = verify
        self.tick_s = tick_s

    def run(
        self,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
        deadline: float | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> DispatchStats:
        """Dispatch until ``stop`` is set, ``deadline`` (monotonic) passes or ``keep_going()``
        says no; with ``once``, until nothing is due. Runs in hand always finish and are saved.
        """
        stop = stop or threading.Event()
        stats = DispatchStats()
        done: queue.Queue[tuple[ProbeSpec, RunResult]] = queue.Queue()
        allowed = allow_hosts()
        started = timezone.now()
        in_flight = 0
        finished: list[tuple[ProbeSpec, RunResult]] = []
        http = HttpThread(verify=self.verify, concurrency=self.concurrency)
        try:
            while True:
                stopping = (
                    stop.is_set()
                    or (deadline is not None and time.monotonic() >= deadline)
                    or (keep_going is not None and not keep_going())
                )
                # Refill the free slots before saving what finished, so the HTTP loop is
                # never idle while this thread writes.
                if not stopping and in_flight < self.concurrency:
                    specs = self._claim(self.concurrency - in_flight, started if once else None)
                    if specs:
                        http.start(specs, allowed, done)
                    in_flight += len(specs)
                    stopping = once and not specs and in_flight == 0
                self._write(finished, stats)
                if stopping and in_flight == 0:
                    break
                finished = _collect(done, self.tick_s)
                in_flight -= len(finished)
        finally:
            http.close()
        return stats

    def _claim(self, limit: int, due_by: dt.datetime | None) -> list[ProbeSpec]:
        try:
            return claim_due(limit=limit, due_by=due_by)
        except Exception:
            # A locked or restarting database must not end the loop; try again next tick.
            logger.exception("claiming due probes failed")
            return []

    @staticmethod
    def _write(finished: list[tuple[ProbeSpec, RunResult]], stats: DispatchStats) -> None:
        if not finished:
            return
        try:
            record_runs(finished)
        except Exception:
            # The claims lapse by themselves; the next slots run as usual.
            logger.exception("saving %d probe results failed", len(finished))
        for spec, run in finished:
            stats.runs += 1
            stats.ok += run.ok
            stats.failed += not run.ok
            late = run.lateness_s(spec.scheduled_for)
            if late is not None:
                stats.lateness_s.append(late)


def _finished(done: queue.Queue, spec: ProbeSpec, task: asyncio.Task) -> None:
    # execute() never raises, but a cancelled task must still count as finished.
    try:
        run = task.result()
    except BaseException as exc:
        run = failed_run(spec, exc)
    done.put((spec, run))


def _collect(done: queue.Queue, timeout: float) -> list:
    """Wait up to ``timeout`` for one finished run, then take whatever else has finished."""
    try:
        items = [done.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            items.append(done.get_nowait())
        except queue.Empty:
            return items


# --- django-q2 entry points --------------------------------------------------------------------


def dispatcher_loop_seconds() -> float:
    """How long one scheduled dispatcher task loops: within django-q2's task timeout."""
    q_timeout = settings.Q_CLUSTER.get("timeout") or 120
    # The runs claimed last may take MAX_TIMEOUT_S more, then they are saved.
    return max(10.0, q_timeout - MAX_TIMEOUT_S - 10)


def _take_over() -> int:
    """Become the current dispatcher generation; older loops notice and stop."""
    return JobState.bump(DISPATCHER_GENERATION)


def _still_current(generation: int) -> Callable[[], bool]:
    checked = [time.monotonic(), True]

    def keep_going() -> bool:
        if time.monotonic() - checked[0] >= 1.0:
            checked[0] = time.monotonic()
            checked[1] = JobState.objects.filter(
                name=DISPATCHER_GENERATION, value=generation
            ).exists()
        return bool(checked[1])

    return keep_going


def dispatch_task(loop_seconds: float | None = None) -> str:
    """django-q2 task (every minute): dispatch due probes until a newer task takes over."""
    generation = _take_over()
    seconds = loop_seconds if loop_seconds is not None else dispatcher_loop_seconds()
    stats = Dispatcher().run(
        deadline=time.monotonic() + seconds, keep_going=_still_current(generation)
    )
    return f"dispatcher {generation}: {stats}"
