"""The background recorder: batches, spill and exactly-once replay, losses, threads, forks.

How a recording process ends (exit, SIGTERM, kill -9) is in test_recorder_kill.py.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from monitoring import attempts, recorder, storage
from monitoring.models import (
    Integration,
    JobState,
    MetricBucket,
    RecorderLoss,
    RequestLog,
)
from monitoring.recorder import Recorder, RecorderConfig


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def integration(transactional_db):
    attempts.clear_policies()
    return Integration.objects.create(name="Paybox", slug="paybox", environment="production")


@pytest.fixture
def make_recorder(transactional_db, spool):
    """Private recorders, stopped (flushed) before the database is emptied."""
    made: list[Recorder] = []

    def make(**overrides) -> Recorder:
        config = RecorderConfig(spool_dir=spool, busy_timeout_ms=50, flush_interval_s=0.02)
        made.append(Recorder(replace(config, **overrides)))
        return made[-1]

    yield make
    for instance in made:
        instance.stop(timeout=10)


def row(integration: Integration, n: int = 0, **extra) -> dict:
    return attempts.to_row(
        attempts.from_fields(
            integration=integration,
            method="GET",
            url=f"https://api.paybox.test/v1/payments/{1000 + n}",
            status=200,
            latency_ms=12.5 + n,
            **extra,
        )
    )


def warm(rec: Recorder, integration: Integration) -> None:
    """Let the writer open its connection: a long-running writer already has one."""
    rec.record(row(integration, -1))
    rec.flush(timeout=20)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_flush_writes_every_row_and_its_metric_buckets(make_recorder, integration):
    rec = make_recorder(batch_size=7)
    for n in range(30):
        rec.record(row(integration, n))
    rec.flush(timeout=10)
    assert RequestLog.objects.filter(integration=integration).count() == 30
    assert rec.stats()["written"] == 30 and rec.stats()["batches"] >= 5
    bucket = MetricBucket.objects.get(grain="day", endpoint="GET /v1/payments/{id}")
    assert bucket.total == 30


def test_rows_spill_while_the_database_is_locked_and_are_replayed_exactly_once(
    make_recorder, integration, locked_database, spool
):
    rec = make_recorder(queue_size=20, batch_size=5)
    warm(rec, integration)
    with locked_database:
        for n in range(200):
            rec.record(row(integration, n))
        wait_for(lambda: rec.stats()["spilled"] >= 150 and rec.stats()["db_errors"] >= 1)
        assert list(spool.glob("*.jsonl"))
        assert RequestLog.objects.count() == 1
    rec.flush(timeout=20)
    logged = RequestLog.objects.filter(integration=integration)
    assert logged.count() == 201
    assert sorted(logged.values_list("latency_ms", flat=True)) == [12.5 + n for n in range(-1, 200)]
    assert MetricBucket.objects.get(grain="day", endpoint="GET /v1/payments/{id}").total == 201
    assert list(spool.glob("*.jsonl")) == []
    assert not JobState.objects.filter(name__startswith="spool:").exists()
    assert rec.stats()["lost"] == 0


def test_a_batch_the_database_turned_away_goes_to_the_spool_at_once(
    make_recorder, integration, locked_database, spool
):
    rec = make_recorder(queue_size=1000)
    warm(rec, integration)
    with locked_database:
        for n in range(3):
            rec.record(row(integration, n))
        # Not kept in memory for the next try: a kill would take it.
        wait_for(lambda: rec.stats()["spilled"] == 3 and rec.stats()["outage"])
        assert rec.stats()["queued"] == 0 and list(spool.glob("*.jsonl"))
    rec.flush(timeout=20)
    assert not rec.stats()["outage"]
    logged = RequestLog.objects.filter(integration=integration)
    assert sorted(logged.values_list("latency_ms", flat=True)) == [11.5, 12.5, 13.5, 14.5]
    assert list(spool.glob("*.jsonl")) == []


def test_rows_reach_the_spool_while_the_writer_waits_out_a_lock(
    make_recorder, integration, locked_database, spool
):
    rec = make_recorder(busy_timeout_ms=5000, spill_after_s=0.5)
    warm(rec, integration)
    with locked_database:
        rec.record(row(integration, 0))
        wait_for(lambda: rec.stats()["queued"] == 0)  # the writer has it, and waits on the lock
        for n in range(1, 51):
            rec.record(row(integration, n))
        # Within about the spill age, not after the 5 s the writer waits.
        wait_for(lambda: rec.stats()["spilled"] == 50, timeout=2.5)
        assert rec.stats()["db_errors"] == 0  # the writer is still waiting
    rec.flush(timeout=20)
    logged = RequestLog.objects.filter(integration=integration)
    assert sorted(logged.values_list("latency_ms", flat=True)) == [12.5 + n for n in range(-1, 51)]
    assert list(spool.glob("*.jsonl")) == []


def test_a_segment_committed_just_before_a_crash_is_not_replayed_twice(
    make_recorder, integration, spool
):
    rows = [row(integration, n) for n in range(5)]
    rec = make_recorder()
    rec._spill([dict(r) for r in rows])
    rec._close_segment()
    (segment,) = spool.glob("*.jsonl")
    # The replay transaction committed, then the process died before deleting the file.
    with transaction.atomic():
        storage.insert_rows([dict(r) for r in rows])
        JobState.objects.create(name=f"spool:{segment.stem}", value=5)

    rec.flush(timeout=10)
    assert RequestLog.objects.count() == 5
    assert MetricBucket.objects.get(grain="day", endpoint="GET /v1/payments/{id}").total == 5
    assert not segment.exists()
    assert not JobState.objects.filter(name__startswith="spool:").exists()


def test_a_segment_held_by_another_process_is_left_to_it(make_recorder, integration, spool):
    rec = make_recorder()
    rec._spill([row(integration, n) for n in range(3)])
    rec._close_segment()
    (segment,) = spool.glob("*.jsonl")
    other = os.open(segment, os.O_RDONLY)  # a second open file: a lock as another process has
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        rec.flush(timeout=10)  # does not wait for the other writer
        assert segment.exists() and RequestLog.objects.count() == 0
    finally:
        os.close(other)
    rec.flush(timeout=10)
    assert RequestLog.objects.count() == 3 and not segment.exists()


def test_rows_of_a_deleted_integration_are_counted_as_lost(make_recorder, integration):
    gone = Integration.objects.create(name="Gone", slug="gone", environment="sandbox")
    orphan = row(gone)
    gone.delete()
    rec = make_recorder()
    rec.record(orphan)
    rec.record(row(integration))
    rec.flush(timeout=10)
    assert RequestLog.objects.count() == 1
    assert rec.stats()["lost"] == 1
    loss = RecorderLoss.objects.get()
    assert (loss.rows, loss.reason) == (1, "integration no longer exists")


def test_when_even_the_spill_fails_the_loss_is_persisted(
    make_recorder, integration, locked_database, tmp_path
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    rec = make_recorder(queue_size=4, batch_size=1, spool_dir=blocker / "spool")
    warm(rec, integration)
    with locked_database:
        for n in range(40):
            rec.record(row(integration, n))
        wait_for(lambda: rec.stats()["lost"] > 0)
    rec.flush(timeout=20)
    lost = rec.stats()["lost"]
    assert RequestLog.objects.count() - 1 + lost == 40
    assert RecorderLoss.objects.aggregate(total=Sum("rows"))["total"] == lost
    assert "spill to" in RecorderLoss.objects.first().reason


def test_flush_times_out_while_the_database_is_locked(make_recorder, integration, locked_database):
    rec = make_recorder()
    warm(rec, integration)
    rec.record(row(integration))
    with locked_database, pytest.raises(TimeoutError):
        rec.flush(timeout=0.3)
    rec.flush(timeout=10)
    assert RequestLog.objects.count() == 2


def test_a_failing_rollup_keeps_the_raw_rows(make_recorder, integration, monkeypatch):
    def broken(rows):
        raise RuntimeError("bug in the rollup")

    monkeypatch.setattr(storage, "_apply_rows", broken)
    rec = make_recorder()
    rec.record(row(integration))
    rec.flush(timeout=10)
    assert RequestLog.objects.count() == 1
    assert rec.stats()["rollup_errors"] == 1 and rec.stats()["lost"] == 0


def test_threads_recording_at_once_lose_nothing(make_recorder, integration):
    rec = make_recorder(queue_size=300, batch_size=50)
    template = row(integration)

    def work(offset: int) -> None:
        for n in range(250):
            rec.record({**template, "latency_ms": float(offset + n)})

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rec.flush(timeout=20)
    assert RequestLog.objects.count() == 1000
    assert RequestLog.objects.values("latency_ms").distinct().count() == 1000


def test_a_forked_child_starts_its_own_writer_and_leaves_the_parents_rows(
    integration, spool, transactional_db
):
    recorder.configure(spool_dir=spool, flush_interval_s=30, batch_size=10_000)
    try:
        for n in range(5):
            recorder.record_attempt(**_fields(integration, n))
        assert recorder.stats()["queued"] == 5  # still in memory when we fork
        pid = os.fork()
        if pid == 0:  # the child: record, flush, report through the exit status only
            status = 1
            try:
                for n in range(100, 103):
                    recorder.record_attempt(**_fields(integration, n))
                recorder.flush(timeout=20)
                status = 0 if recorder.stats()["written"] == 3 else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        recorder.flush(timeout=20)
    finally:
        recorder.configure()
    latencies = sorted(RequestLog.objects.values_list("latency_ms", flat=True))
    assert latencies == [float(n) for n in (0, 1, 2, 3, 4, 100, 101, 102)]


def _fields(integration: Integration, n: int) -> dict:
    return {
        "integration": integration,
        "method": "GET",
        "host": "api.paybox.test",
        "path": "/v1/health",
        "status": 200,
        "latency_ms": float(n),
        "created": datetime.now(UTC),
    }


def test_stats_report_the_queue_and_the_writer(make_recorder, integration):
    rec = make_recorder()
    assert rec.stats()["writer_alive"] is False
    rec.record(row(integration))
    rec.flush(timeout=10)
    stats = rec.stats()
    assert stats["writer_alive"] is True
    assert (stats["queued"], stats["written"], stats["spool_files"]) == (0, 1, 0)
    assert settings.UPSTREAM["RECORDER_BATCH_SIZE"] == RecorderConfig.from_settings().batch_size


def test_the_admin_shows_the_total_of_lost_rows(client, superuser):
    RecorderLoss.objects.create(rows=2, reason="spill to /full failed")
    RecorderLoss.objects.create(rows=3, reason="integration no longer exists")
    client.force_login(superuser)
    page = client.get("/admin/monitoring/recorderloss/")
    assert page.status_code == 200
    assert "5 request-log rows lost in total" in page.content.decode()
