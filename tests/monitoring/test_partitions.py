"""Tests for RequestLog's day partitions on PostgreSQL: conversion, creating ahead, dropping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from monitoring import partitions, retention, tasks
from monitoring.models import Integration, RequestLog
from tests.monitoring._rows import log

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="declarative partitioning is PostgreSQL's; SQLite keeps one plain table",
)

TODAY = date(2026, 3, 10)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def integration(db):
    return Integration.objects.create(name="Paubox", slug="paubox")


def where(row_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {partitions.TABLE} WHERE id = %s",  # noqa: S608
            [row_id],
        )
        return cursor.fetchone()[0]


@postgresql_only
def test_migrations_leave_request_log_partitioned_by_day_with_a_default(db):
    assert partitions.enabled()
    assert partitions.partitions()[-1] == partitions.Partition(partitions.DEFAULT, None)


@postgresql_only
def test_a_row_of_a_day_without_partition_lands_in_the_default_and_moves_when_made(integration):
    row = RequestLog.objects.create(**_fields(integration, at(TODAY)))
    assert where(row.pk) == partitions.DEFAULT

    made = partitions.ensure(TODAY, ahead=1)

    assert made == [partitions.partition_name(TODAY + timedelta(days=n)) for n in (-1, 0, 1)]
    assert where(row.pk) == partitions.partition_name(TODAY)
    assert RequestLog.objects.get(pk=row.pk).created == at(TODAY)
    assert partitions.ensure(TODAY, ahead=1) == []
    # A second worker racing the first finds the day made and reports nothing new.
    assert partitions.create_day(TODAY) is False


@postgresql_only
def test_retention_drops_whole_expired_days_and_chunk_deletes_the_rest(integration, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_RAW_DAYS": 2}
    old_days = [TODAY - timedelta(days=n) for n in (5, 4, 3)]
    for day in old_days:
        partitions.create_day(day)
    partitions.ensure(TODAY, ahead=0)
    ancient = at(TODAY - timedelta(days=40))
    RequestLog.objects.bulk_create(
        [log(integration.pk, at(day)) for day in old_days]
        + [log(integration.pk, ancient), log(integration.pk, at(TODAY))]
    )

    report = retention.prune(now=at(TODAY), pause_s=0)

    assert report.dropped_partitions == [partitions.partition_name(d) for d in old_days]
    assert report.deleted["request_log"] == 1  # the ancient row, from the default partition
    assert list(RequestLog.objects.values_list("created", flat=True)) == [at(TODAY)]
    assert "dropped 3 day partitions" in str(report)


@postgresql_only
def test_a_day_left_detached_by_a_dead_run_is_dropped_by_the_next(integration):
    day = TODAY - timedelta(days=9)
    partitions.create_day(day)
    RequestLog.objects.create(**_fields(integration, at(day)))
    name = partitions.partition_name(day)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {partitions.TABLE} DETACH PARTITION {name}")
    assert name not in {p.name for p in partitions.partitions()}

    assert partitions.drop_expired(at(TODAY)) == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        assert cursor.fetchone()[0] is None
    # A detached day that has not expired (kept on purpose) is left alone.
    kept = partitions.partition_name(TODAY + timedelta(days=5))
    partitions.create_day(TODAY + timedelta(days=5))
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {partitions.TABLE} DETACH PARTITION {kept}")
        assert partitions.drop_expired(at(TODAY)) == []
        cursor.execute("SELECT to_regclass(%s)", [kept])
        assert cursor.fetchone()[0] == kept


@postgresql_only
def test_a_partition_whose_lock_is_held_is_left_for_the_next_run(integration, monkeypatch):
    partitions.create_day(TODAY - timedelta(days=9))
    calls = []

    def locked(name):
        calls.append(name)
        return False

    monkeypatch.setattr(partitions, "_drop", locked)
    assert partitions.drop_expired(at(TODAY)) == []
    assert calls == [partitions.partition_name(TODAY - timedelta(days=9))]


@postgresql_only
def test_converting_back_and_forth_keeps_every_row_and_the_id_sequence(integration):
    partitions.ensure(TODAY, ahead=0)
    RequestLog.objects.bulk_create(
        [log(integration.pk, at(TODAY - timedelta(days=n))) for n in range(4)]
    )
    before = sorted(RequestLog.objects.values_list("id", "created"))

    with connection.schema_editor() as editor:
        partitions.unpartition_table(None, editor)
    assert not partitions.enabled()
    assert sorted(RequestLog.objects.values_list("id", "created")) == before

    with connection.schema_editor() as editor:
        partitions.partition_table(None, editor)
    assert partitions.enabled()
    assert sorted(RequestLog.objects.values_list("id", "created")) == before
    # Each day with rows got its partition; nothing was left in the default.
    assert {where(row_id) for row_id, _ in before} == {
        partitions.partition_name(created.date()) for _, created in before
    }
    fresh = RequestLog.objects.create(**_fields(integration, at(TODAY)))
    assert fresh.pk > max(row_id for row_id, _ in before)


def test_the_scheduled_task_creates_partitions_ahead():
    assert "upstream:create-partitions" in {spec.name for spec in tasks.SCHEDULES}


@pytest.mark.django_db
def test_the_task_reports_what_it_made(monkeypatch):
    monkeypatch.setattr(partitions, "ensure", lambda: ["monitoring_requestlog_p20260310"])
    assert tasks.create_partitions() == "created 1 partitions: monitoring_requestlog_p20260310"


def _fields(integration, created):
    row = log(integration.pk, created)
    return {
        f.attname: getattr(row, f.attname)
        for f in RequestLog._meta.concrete_fields
        if f.attname != "id"
    }


@pytest.mark.skipif(connection.vendor == "postgresql", reason="the SQLite side of the contract")
def test_on_sqlite_every_partition_operation_is_a_no_op(db):
    assert not partitions.enabled()
    assert partitions.ensure(TODAY) == []
    assert partitions.drop_expired(at(TODAY)) == []
