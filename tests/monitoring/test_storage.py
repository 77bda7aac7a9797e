"""The one insert path: COPY on PostgreSQL, executemany elsewhere, and the rollup beside it."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import DataError, IntegrityError, OperationalError, connection, transaction
from django.forms.models import model_to_dict

from monitoring import attempts, rollup, storage
from monitoring.models import Integration, MetricBucket, RequestLog
from monitoring.rollup import KEY_COLUMNS, VALUE_COLUMNS

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="COPY is PostgreSQL's; SQLite's executemany path is covered by the other tests",
)

BODY = '{"error": "tab\\there, newline\\n and a backslash \\\\"}'
T0 = datetime(2026, 3, 10, 12, 0, 7, 250_000, tzinfo=UTC)


@pytest.fixture
def integration(db):
    attempts.clear_policies()
    return Integration.objects.create(name="Paubox", slug="paubox")


def rows(integration: Integration, n: int = 40, *, offset: int = 0) -> list[dict]:
    """Complete rows that use every kind of column, the rare datetimes and text included."""
    out = []
    for i in range(offset, offset + n):
        status = (200, 201, 401, 429, 503, None)[i % 6]
        out.append(
            attempts.to_row(
                {
                    "created": T0 + timedelta(seconds=37 * i, microseconds=i),
                    "integration_id": integration.pk,
                    "source": ("client", "ingest", "probe")[i % 3],
                    "method": ("GET", "POST")[i % 2],
                    "host": "api.paubox.test",
                    "path": f"/v1/messages/{{id}}/part{i % 4}",
                    "query": "page=2" if i % 5 == 0 else "",
                    "status": status,
                    "outcome": "timeout" if status is None else ("ok" if status < 400 else "x"),
                    "latency_ms": 10.0 + i * 3.25,
                    "request_bytes": None if i % 4 else 512,
                    "response_bytes": 2048 + i,
                    "error_code": "rate_limited" if status == 429 else "",
                    "error_message": "Zu viele Anfragen — später ✓" if status == 429 else "",
                    "error_body": BODY if i % 7 == 0 else "",
                    "call_id": f"{i:032x}",
                    "attempt": 1 + (i % 3 == 2),
                    "backoff_ms": 0.5 * (i % 3),
                    "ratelimit_limit": 600 if i % 2 else None,
                    "ratelimit_remaining": (600 - i) if i % 2 else None,
                    "ratelimit_reset": T0 + timedelta(minutes=1) if i % 3 == 0 else None,
                    "retry_after_s": 1.5 if status == 429 else None,
                    "deprecated": i % 8 == 0,
                    "deprecation_at": T0 - timedelta(days=3) if i % 8 == 0 else None,
                    "sunset_at": T0 + timedelta(days=90) if i % 16 == 0 else None,
                    "deprecation_link": "https://docs.paubox.test/sunset" if i % 8 == 0 else "",
                    "api_version": "2026-01-01",
                }
            )
        )
    return out


def stored() -> list[dict]:
    return [
        {k: v for k, v in model_to_dict(r).items() if k != "id"}
        for r in RequestLog.objects.order_by("created")
    ]


def buckets() -> dict[tuple, tuple]:
    return {
        b[: len(KEY_COLUMNS)]: b[len(KEY_COLUMNS) :]
        for b in MetricBucket.objects.values_list(*KEY_COLUMNS, *VALUE_COLUMNS)
    }


def insert(batch: list[dict], **kwargs) -> None:
    with transaction.atomic():
        storage.insert_rows([dict(row) for row in batch], **kwargs)


def clear() -> None:
    RequestLog.objects.all().delete()
    MetricBucket.objects.all().delete()


@postgresql_only
def test_copy_stores_every_column_exactly_as_the_executemany_path(integration, monkeypatch):
    batch = rows(integration)
    insert(batch)
    by_copy, copy_buckets = stored(), buckets()
    clear()
    # The path as it was before COPY: executemany, then the rollup counted and written.
    monkeypatch.setattr(storage, "copy_rows", lambda rows, then: storage._executemany_rows(rows))
    monkeypatch.setattr(storage, "_apply_rows", lambda rows: rollup.apply_dicts(rows))
    insert(batch)

    assert by_copy == stored()
    assert len(by_copy) == 40
    assert by_copy[0]["created"] == T0 and by_copy[21]["error_message"].endswith("✓")
    # Counted while the COPY ran, written after it: the very buckets of the plain path.
    assert copy_buckets == buckets()


@postgresql_only
def test_buckets_merged_over_many_copied_batches_equal_one_rollup_of_all_rows(integration):
    everything = rows(integration, 300)
    for i in range(0, 300, 70):
        insert(everything[i : i + 70])
    incremental = buckets()
    MetricBucket.objects.all().delete()
    batch = rollup.Batch()
    batch.add_many(
        [tuple(row[f] for f in rollup.ROW_FIELDS) for row in everything]
    )  # ROW_FIELDS order, as rebuild() feeds it
    rollup.write(batch)

    assert incremental == buckets()
    day = MetricBucket.objects.get(grain="day", endpoint="", source="client")
    assert day.total == 100


@postgresql_only
def test_a_rolled_back_copy_leaves_no_row_and_no_bucket(integration):
    with pytest.raises(RuntimeError), transaction.atomic():
        storage.insert_rows(rows(integration))
        assert RequestLog.objects.count() == 40  # inside: the COPY's rows are there
        raise RuntimeError("the batch's transaction fails after the insert")
    assert RequestLog.objects.count() == 0
    assert MetricBucket.objects.count() == 0


@postgresql_only
def test_a_locked_table_fails_the_copy_after_lock_timeout_as_a_transient_error(
    integration, locked_database
):
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '50ms'")
    with locked_database, pytest.raises(storage.TRANSIENT) as raised, transaction.atomic():
        storage.insert_rows(rows(integration))
    # Django's own error class (psycopg's is translated): the recorder spills on exactly it.
    assert isinstance(raised.value, OperationalError)
    assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")
    insert(rows(integration))  # the connection is usable again
    assert RequestLog.objects.count() == 40


@postgresql_only
def test_a_row_postgresql_refuses_fails_the_whole_copy(integration):
    batch = rows(integration, 5)
    batch[3]["status"] = 70_000  # beyond the smallint column: refused, never wrapped around
    with pytest.raises(DataError, match="out of range"), transaction.atomic():
        storage.insert_rows(batch)
    assert RequestLog.objects.count() == 0
    assert MetricBucket.objects.count() == 0


@postgresql_only
@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("attempt", -40_000, "out of range for type smallint"),
        ("response_bytes", 2**31, "out of range for type integer"),
        ("ratelimit_limit", 12.5, "is not an integer"),
        ("status", "200", "is not an integer"),
    ],
)
def test_binary_copy_refuses_integers_its_column_cannot_hold(integration, column, value, message):
    batch = rows(integration, 5)
    batch[2][column] = value
    with pytest.raises(DataError, match=message), transaction.atomic():
        storage.insert_rows(batch)
    assert RequestLog.objects.count() == 0


@postgresql_only
def test_copy_keeps_the_extremes_an_integer_column_can_hold(integration):
    batch = rows(integration, 3)
    batch[0]["status"] = 32_767
    batch[1]["response_bytes"] = 2**31 - 1
    insert(batch)
    got = RequestLog.objects.order_by("created")
    assert [r.status for r in got][:1] == [32_767]
    assert got[1].response_bytes == 2**31 - 1


@postgresql_only
def test_rows_of_an_integration_that_does_not_exist_are_refused(integration):
    batch = rows(integration, 4)
    batch[1]["integration_id"] = integration.pk + 1000
    with pytest.raises(IntegrityError, match="do not exist"), transaction.atomic():
        storage.insert_rows(batch)
    assert RequestLog.objects.count() == 0


def _wait_for_lock_wait(timeout: float = 10.0) -> None:
    """Until some other session of this database waits for a lock (polled, no sleep guess)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Inside a transaction pg_stat_activity would show one snapshot throughout.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no session started waiting for a lock")


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_delete_during_an_open_batch_waits_for_it_and_leaves_no_orphans():
    # No foreign-key constraint on PostgreSQL (migration 0018): the batch's KEY SHARE and
    # the delete's lock-first are what keep orphans out.
    integration = Integration.objects.create(name="Paubox", slug="paubox-delete")
    copied, deleted, errors = threading.Event(), threading.Event(), []

    def deleter() -> None:
        try:
            copied.wait(10)
            Integration.objects.get(pk=integration.pk).delete()
            deleted.set()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=deleter)
    thread.start()
    with transaction.atomic():
        storage.insert_rows(rows(integration, 30))
        copied.set()
        _wait_for_lock_wait()  # the delete waits for this batch
        assert not deleted.is_set()
    thread.join(10)
    assert errors == [] and deleted.is_set()
    assert not Integration.objects.filter(pk=integration.pk).exists()
    assert RequestLog.objects.filter(integration_id=integration.pk).count() == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_batch_written_while_its_integration_is_deleted_is_refused():
    integration = Integration.objects.create(name="Paubox", slug="paubox-gone")
    errors, outcome = [], []

    def writer() -> None:
        try:
            with transaction.atomic():
                storage.insert_rows(rows(integration, 10))
            outcome.append("written")
        except IntegrityError:
            outcome.append("refused")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    with transaction.atomic():
        Integration.objects.get(pk=integration.pk).delete()  # holds its lock until commit
        thread.start()
        _wait_for_lock_wait()
    thread.join(10)
    assert errors == [] and outcome == ["refused"]
    assert RequestLog.objects.count() == 0


@postgresql_only
def test_a_nan_latency_keeps_the_copied_rows_and_counts_a_rollup_error(integration):
    batch = rows(integration, 6)
    batch[2]["latency_ms"] = math.nan
    counters = Counter()
    with transaction.atomic():
        storage.insert_rows(batch, counters=counters)
    assert RequestLog.objects.count() == 6
    assert MetricBucket.objects.count() == 0
    assert counters["rollup_errors"] == 1


@postgresql_only
def test_a_swapped_rollup_hook_is_called_on_the_copy_path_too(integration, monkeypatch):
    seen = []
    monkeypatch.setattr(storage, "_apply_rows", lambda batch: seen.append(len(batch)))
    insert(rows(integration, 9))
    insert(rows(integration, 4), rollup=False)
    assert seen == [9]
    assert RequestLog.objects.count() == 13
    assert MetricBucket.objects.count() == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_copy_writers_count_every_row_exactly_once():
    integration = Integration.objects.create(name="Paubox", slug="paubox-concurrent")
    batches = [rows(integration, 50, offset=50 * k) for k in range(6)]
    errors = []

    def writer(mine: list[list[dict]]) -> None:
        try:
            for batch in mine:
                insert(batch)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(batches[k::3],)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert RequestLog.objects.count() == 300
    totals = MetricBucket.objects.filter(endpoint="", integration=integration)
    for grain in ("minute", "15m", "hour", "day"):
        assert sum(totals.filter(grain=grain).values_list("total", flat=True)) == 300


def test_on_sqlite_rows_go_through_one_executemany(integration, monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite side of the contract")
    monkeypatch.setattr(storage, "copy_rows", None)  # never reached here
    insert(rows(integration, 12))
    assert RequestLog.objects.count() == 12
    assert MetricBucket.objects.get(grain="day", endpoint="", source="client").total == 4


def test_buckets_updated_with_whole_and_fractional_latencies_keep_every_figure(integration):
    # The update of stored buckets binds each column as one array on PostgreSQL: a latency
    # of 120 (an int) beside 80.5 must still bind, or the batch's buckets would be lost.
    first, second = rows(integration, 6), rows(integration, 6, offset=6)
    for n, row in enumerate(first + second):
        row["created"] = T0
        row["latency_ms"] = 120 if n % 2 else 80.5
    counters = Counter()
    for batch in (first, second):
        with transaction.atomic():
            storage.insert_rows(batch, counters=counters)
    assert counters["rollup_errors"] == 0
    day = MetricBucket.objects.filter(grain="day", endpoint="")
    assert sum(day.values_list("total", flat=True)) == 12
    assert {b.latency_min for b in day} == {80.5}
