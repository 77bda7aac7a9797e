"""Tests for retention: what expires when, chunked deletes, and SQLite space reclaim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from monitoring import retention
from monitoring.models import Grain, Integration, MetricBucket, Probe, ProbeResult, RequestLog
from monitoring.tasks import SCHEDULES
from tests.monitoring._rows import log, record

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.fixture
def integration(db):
    return Integration.objects.create(name="Paubox", slug="paubox")


def bucket(integration, grain, start) -> MetricBucket:
    return MetricBucket.objects.create(
        integration=integration, grain=grain, start=start, endpoint="", source="client", total=1
    )


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch):
    monkeypatch.setattr(retention, "PAUSE_S", 0)


def test_each_kind_of_row_expires_exactly_at_its_retention_boundary(integration):
    raw_cut = NOW - timedelta(days=14)
    record([log(integration.pk, raw_cut - SECOND), log(integration.pk, raw_cut)])
    MetricBucket.objects.all().delete()
    minute_cut = NOW - timedelta(days=3)
    hour_cut = NOW - timedelta(days=400)
    quarter_cut = NOW - timedelta(days=14)  # as long as raw rows
    cuts = ((Grain.MINUTE, minute_cut), (Grain.QUARTER, quarter_cut), (Grain.HOUR, hour_cut))
    for grain, cut in cuts:
        bucket(integration, grain, cut - timedelta(minutes=1))
        bucket(integration, grain, cut)
    bucket(integration, Grain.DAY, NOW - timedelta(days=4000))
    probe = Probe.objects.create(integration=integration, name="health", url="https://x.test/")
    probe_cut = NOW - timedelta(days=14)
    ProbeResult.objects.create(probe=probe, ok=True, created=probe_cut - SECOND)
    ProbeResult.objects.create(probe=probe, ok=True, created=probe_cut)

    report = retention.prune(now=NOW, pause_s=0)

    assert report.complete
    assert report.deleted == {
        "request_log": 1,
        "minute_buckets": 1,
        "quarter_buckets": 1,
        "hour_buckets": 1,
        "probe_results": 1,
        "ingest_batch_ids": 0,  # the api app's, registered with the engine's (api.apps)
    }
    assert list(RequestLog.objects.values_list("created", flat=True)) == [raw_cut]
    assert set(MetricBucket.objects.values_list("grain", "start")) == {
        (Grain.MINUTE, minute_cut),
        (Grain.QUARTER, quarter_cut),
        (Grain.HOUR, hour_cut),
        (Grain.DAY, NOW - timedelta(days=4000)),
    }
    assert list(ProbeResult.objects.values_list("created", flat=True)) == [probe_cut]


def test_retention_follows_the_settings(integration, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_RAW_DAYS": 2}
    record(
        [log(integration.pk, NOW - timedelta(days=3)), log(integration.pk, NOW - timedelta(days=1))]
    )
    retention.prune(now=NOW, pause_s=0, vacuum=False)
    assert RequestLog.objects.count() == 1


def test_chunked_pruning_deletes_all_expired_rows_and_leaves_newer_ones(integration, monkeypatch):
    monkeypatch.setattr(retention, "FIRST_CHUNK", 7)
    monkeypatch.setattr(retention, "MIN_CHUNK", 7)
    monkeypatch.setattr(retention, "MAX_CHUNK", 7)
    old = [log(integration.pk, NOW - timedelta(days=20, minutes=i)) for i in range(50)]
    new = [log(integration.pk, NOW - timedelta(days=13, minutes=i)) for i in range(30)]
    # Interleave ids, as late rows from a replayed spill would.
    record([row for pair in zip(old, new, strict=False) for row in pair] + old[30:])
    kept = set(RequestLog.objects.filter(created__gte=NOW - timedelta(days=14)).values_list("id"))
    deletes = []
    real_delete = retention._delete
    monkeypatch.setattr(
        retention, "_delete", lambda table, ids: deletes.append(len(ids)) or real_delete(table, ids)
    )
    report = retention.prune(now=NOW, pause_s=0, vacuum=False)
    assert report.deleted["request_log"] == 50
    assert set(RequestLog.objects.values_list("id")) == kept
    assert max(deletes) == 7 and len(deletes) >= 8  # raw rows in chunks of 7, plus buckets


def test_a_spent_budget_stops_early_and_the_next_run_finishes(integration):
    record([log(integration.pk, NOW - timedelta(days=20)) for _ in range(5)])
    stopped = retention.prune(now=NOW, budget_s=0, pause_s=0)
    assert not stopped.complete and RequestLog.objects.count() == 5
    assert retention.prune(now=NOW, pause_s=0).complete
    assert not RequestLog.objects.exists()


def test_should_stop_ends_the_run_after_the_chunk_in_hand(integration, monkeypatch):
    monkeypatch.setattr(retention, "FIRST_CHUNK", 2)
    monkeypatch.setattr(retention, "MAX_CHUNK", 2)
    monkeypatch.setattr(retention, "MIN_CHUNK", 2)
    record([log(integration.pk, NOW - timedelta(days=20)) for _ in range(6)])
    calls = iter([False, True])
    report = retention.prune(now=NOW, pause_s=0, should_stop=lambda: next(calls, True))
    assert not report.complete and report.deleted["request_log"] == 2
    assert RequestLog.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_new_sqlite_databases_are_incremental_and_pruning_shrinks_the_file():
    # Start from no free pages: earlier tests' flushes leave some behind in the shared file.
    retention.release_free_pages(pause_s=0)
    integration = Integration.objects.create(name="Paubox", slug="paubox")
    big = "x" * 400
    rows = [log(integration.pk, NOW - timedelta(days=20)) for _ in range(2000)]
    for row in rows:
        row.error_body = big
    record(rows)
    first = retention.prune(now=NOW, pause_s=0)
    assert first.deleted["request_log"] == 2000
    if connection.vendor != "sqlite":
        # PostgreSQL's own autovacuum reclaims space; there is nothing for Upstream to do.
        assert retention.auto_vacuum_mode() is None and first.vacuumed_pages == 0
        return
    assert retention.auto_vacuum_mode() == "incremental"
    # What a run frees is kept for the next hour's rows ...
    assert first.vacuumed_pages == 0 and retention.free_pages() > 100
    # ... and handed back by the next run if nothing reused it.
    second = retention.prune(now=NOW, pause_s=0)
    assert second.vacuumed_pages > 100
    assert retention.free_pages() == 0


@pytest.mark.django_db(transaction=True)
def test_release_free_pages_keeps_the_requested_reserve():
    integration = Integration.objects.create(name="Paubox", slug="paubox")
    rows = [log(integration.pk, NOW - timedelta(days=20)) for _ in range(2000)]
    for row in rows:
        row.error_body = "y" * 400
    record(rows)
    RequestLog.objects.all().delete()
    if connection.vendor != "sqlite":
        assert retention.release_free_pages(keep=50, pause_s=0) == 0
        return
    assert retention.free_pages() > 150
    retention.release_free_pages(keep=50, pause_s=0)
    assert retention.free_pages() == 50


def test_release_free_pages_does_nothing_without_incremental_auto_vacuum(db, monkeypatch):
    monkeypatch.setattr(retention, "auto_vacuum_mode", lambda: "none")
    assert retention.release_free_pages() == 0


@time_machine.travel(NOW, tick=False)
def test_the_hourly_task_prunes_and_describes_what_it_did(integration):
    record([log(integration.pk, NOW - timedelta(days=15))])
    assert "request_log 1" in retention.prune_task()
    assert not RequestLog.objects.exists()
    spec = next(s for s in SCHEDULES if s.name == "upstream:prune")
    assert spec.func == "monitoring.tasks.prune" and spec.minutes == 60


@time_machine.travel(NOW, tick=False)
def test_prune_command_prunes_and_refuses_a_bad_budget(integration, capsys):
    record([log(integration.pk, NOW - timedelta(days=15))])
    call_command("prune")
    assert "request_log 1" in capsys.readouterr().out
    with pytest.raises(CommandError, match="budget"):
        call_command("prune", "--budget", "0")


def test_quarter_hour_buckets_outlive_minutes_when_raw_rows_are_kept_longer(integration, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_MINUTE_DAYS": 2, "RETAIN_RAW_DAYS": 5}
    MetricBucket.objects.all().delete()
    for grain in (Grain.MINUTE, Grain.QUARTER):
        bucket(integration, grain, NOW - timedelta(days=4))
    bucket(integration, Grain.QUARTER, NOW - timedelta(days=6))
    report = retention.prune(now=NOW, pause_s=0, vacuum=False)
    assert report.deleted["minute_buckets"] == 1
    assert report.deleted["quarter_buckets"] == 1
    assert list(MetricBucket.objects.values_list("grain", "start")) == [
        (Grain.QUARTER, NOW - timedelta(days=4))
    ]
