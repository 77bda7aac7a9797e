"""Tests for the rollup of raw request rows into minute/15m/hour/day metric buckets."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring import rollup
from monitoring.histogram import Histogram, merge_encoded
from monitoring.models import COUNTERS, Integration, MetricBucket, Outcome, RequestLog
from tests.monitoring._rows import log, record

T0 = datetime(2024, 3, 1, 22, 50, tzinfo=UTC)
TRANSPORT = [
    Outcome.TIMEOUT,
    Outcome.CONNECT_ERROR,
    Outcome.TLS_ERROR,
    Outcome.PROTOCOL_ERROR,
    Outcome.READ_ERROR,
    Outcome.BLOCKED,
    Outcome.OTHER_ERROR,
]


@pytest.fixture
def two(db):
    return [
        Integration.objects.create(name=name, slug=name.lower()) for name in ("Paubox", "Stripe")
    ]


# --- An independent reference: buckets computed straight from the raw rows ----------------


def _floor(when: datetime, grain: str) -> datetime:
    when = when.astimezone(UTC).replace(second=0, microsecond=0)
    if grain == "15m":
        when = when.replace(minute=when.minute // 15 * 15)
    if grain in ("hour", "day"):
        when = when.replace(minute=0)
    if grain == "day":
        when = when.replace(hour=0)
    return when


def expected_buckets(rows) -> dict[tuple, dict]:
    groups = defaultdict(list)
    for r in rows:
        for grain in ("minute", "15m", "hour", "day"):
            for endpoint in (f"{r.method} {r.path}", ""):
                key = (r.integration_id, grain, _floor(r.created, grain), r.source, endpoint)
                groups[key].append(r)
    out = {}
    for key, rs in groups.items():
        status = [r.status for r in rs if r.status is not None]
        # The tightest budget: the lowest share of its limit left (an unknown limit after
        # every known share unless spent), then the fewest left, then the smaller limit.
        budgets = [
            (
                r.ratelimit_remaining / r.ratelimit_limit
                if r.ratelimit_limit
                else (0.0 if r.ratelimit_remaining == 0 else math.inf),
                r.ratelimit_remaining,
                r.ratelimit_limit or math.inf,
            )
            for r in rs
            if r.ratelimit_remaining is not None
        ]
        tightest = min(budgets, default=None)
        lowest = tightest[1] if tightest else None
        limits = [tightest[2]] if tightest and tightest[2] != math.inf else []
        out[key] = {
            "total": len(rs),
            "ok": sum(r.outcome == "ok" for r in rs),
            "client_errors": sum(r.outcome == "client_error" for r in rs),
            "server_errors": sum(r.outcome == "server_error" for r in rs),
            "timeouts": sum(r.outcome == "timeout" for r in rs),
            "connect_errors": sum(r.outcome == "connect_error" for r in rs),
            "tls_errors": sum(r.outcome == "tls_error" for r in rs),
            "other_errors": sum(
                r.outcome in ("protocol_error", "read_error", "blocked", "other_error") for r in rs
            ),
            "s2xx": sum(200 <= s < 300 for s in status),
            "s3xx": sum(300 <= s < 400 for s in status),
            "s4xx": sum(400 <= s < 500 for s in status),
            "s5xx": sum(500 <= s < 600 for s in status),
            "s401": status.count(401),
            "s403": status.count(403),
            "s429": status.count(429),
            "retries": sum(r.attempt > 1 for r in rs),
            "deprecated": sum(r.deprecated for r in rs),
            "latency_sum": sum(r.latency_ms for r in rs),
            "latency_min": min(r.latency_ms for r in rs),
            "latency_max": max(r.latency_ms for r in rs),
            "ratelimit_remaining_min": lowest,
            "ratelimit_limit": min(limits, default=None),
            "histogram": Histogram.from_values(r.latency_ms for r in rs).encode(),
        }
    return out


def stored_buckets() -> dict[tuple, dict]:
    fields = [*COUNTERS, "latency_sum", "latency_min", "latency_max"]
    fields += ["ratelimit_remaining_min", "ratelimit_limit", "histogram"]
    out = {}
    for b in MetricBucket.objects.all():
        values = {f: getattr(b, f) for f in fields}
        values["histogram"] = bytes(values["histogram"])
        out[(b.integration_id, b.grain, b.start, b.source, b.endpoint)] = values
    return out


def assert_buckets_match(rows) -> None:
    want, got = expected_buckets(rows), stored_buckets()
    assert set(got) == set(want)
    for key, values in want.items():
        # Float sums depend on addition order, so they agree to rounding, not to the bit.
        assert got[key]["latency_sum"] == pytest.approx(values.pop("latency_sum"), rel=1e-9)
        del got[key]["latency_sum"]
        assert got[key] == values, key


# --- Properties ----------------------------------------------------------------------------

row_spec = st.fixed_dictionaries(
    {
        "which": st.integers(0, 1),
        "offset_s": st.floats(0, 26 * 3600, allow_nan=False),
        "method": st.sampled_from(["GET", "POST"]),
        "path": st.sampled_from(["/v1/a", "/v1/b/{id}"]),
        "source": st.sampled_from(["client", "probe", "ingest"]),
        "status": st.sampled_from([200, 204, 301, 400, 401, 403, 404, 429, 500, 503, None]),
        "transport": st.sampled_from(TRANSPORT),
        "latency_ms": st.floats(0, 700_000, allow_nan=False),
        "attempt": st.integers(1, 3),
        "deprecated": st.booleans(),
        "remaining": st.none() | st.integers(0, 5),
        "limit": st.none() | st.sampled_from([10, 100]),
    }
)


def build(spec, integrations) -> RequestLog:
    return log(
        integrations[spec["which"]].pk,
        T0 + timedelta(seconds=spec["offset_s"]),
        method=spec["method"],
        path=spec["path"],
        source=spec["source"],
        status=spec["status"],
        outcome=None if spec["status"] is not None else spec["transport"],
        latency_ms=spec["latency_ms"],
        attempt=spec["attempt"],
        deprecated=spec["deprecated"],
        ratelimit_remaining=spec["remaining"],
        ratelimit_limit=spec["limit"],
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(row_spec, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_buckets_equal_a_direct_computation_from_raw_rows(two, specs, cuts):
    MetricBucket.objects.all().delete()
    RequestLog.objects.all().delete()
    rows = [build(s, two) for s in specs]
    # Any split into writer batches (including late rows of an earlier hour) gives the same.
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    for lo, hi in itertools.pairwise(bounds):
        record(rows[lo:hi])
    assert_buckets_match(rows)


def test_merging_minute_buckets_gives_exactly_the_hour_and_endpoints_the_total(two):
    rows = [
        log(two[0].pk, T0 + timedelta(seconds=37 * i), path=f"/v1/{i % 3}", latency_ms=1.7 * i)
        for i in range(1, 200)
    ]
    record(rows)
    hour = datetime(2024, 3, 1, 23, tzinfo=UTC)
    whole = MetricBucket.objects.get(grain="hour", start=hour, endpoint="")
    minutes = MetricBucket.objects.filter(
        grain="minute", start__gte=hour, start__lt=hour + timedelta(hours=1), endpoint=""
    )
    endpoints = MetricBucket.objects.filter(grain="hour", start=hour).exclude(endpoint="")
    for parts in (minutes, endpoints):
        assert len(parts) > 1
        for counter in COUNTERS:
            assert sum(getattr(b, counter) for b in parts) == getattr(whole, counter)
        merged = merge_encoded(b.histogram for b in parts)
        assert merged.encode() == bytes(whole.histogram)
        assert min(b.latency_min for b in parts) == whole.latency_min
        assert max(b.latency_max for b in parts) == whole.latency_max


def test_rolled_back_writes_leave_no_bucket_behind(two):
    with pytest.raises(RuntimeError), transaction.atomic():
        rows = [log(two[0].pk, T0)]
        RequestLog.objects.bulk_create(rows)
        rollup.apply_rows(rows)
        raise RuntimeError("the writer's transaction fails")
    assert not MetricBucket.objects.exists()


def test_late_rows_land_in_the_bucket_of_their_own_time(two):
    record([log(two[0].pk, T0 + timedelta(hours=3))])
    late = T0 - timedelta(days=2, minutes=7)
    record([log(two[0].pk, late, status=401), log(two[0].pk, late, status=401)])
    bucket = MetricBucket.objects.get(grain="minute", start=_floor(late, "minute"), endpoint="")
    assert (bucket.total, bucket.s401) == (2, 2)
    day = MetricBucket.objects.get(grain="day", start=_floor(late, "day"), endpoint="")
    assert day.total == 2
    now_day = _floor(T0 + timedelta(hours=3), "day")
    assert MetricBucket.objects.get(grain="day", start=now_day, endpoint="").total == 1


def test_a_nan_latency_is_refused_before_any_bucket_is_written(two):
    rows = [log(two[0].pk, T0), log(two[0].pk, T0, latency_ms=float("nan"))]
    with pytest.raises(ValueError, match="NaN"):
        rollup.apply_rows(rows)
    assert not MetricBucket.objects.exists()


# --- Rebuild -------------------------------------------------------------------------------


def test_rebuild_is_idempotent_and_matches_the_incremental_rollup(two):
    now = T0 + timedelta(days=1)
    rows = [
        log(two[i % 2].pk, T0 + timedelta(minutes=13 * i), status=[200, 401, 500][i % 3])
        for i in range(120)
    ]
    record(rows)
    incremental = stored_buckets()
    for _ in range(2):
        report = rollup.rebuild(T0, T0 + timedelta(hours=27), now=now)
        assert report.raw_rows == len(rows)
        assert stored_buckets() == incremental


def test_rebuild_of_one_integration_leaves_the_others_alone(two):
    record([log(two[0].pk, T0), log(two[1].pk, T0)])
    MetricBucket.objects.filter(integration=two[1]).update(total=999)
    rollup.rebuild(T0, T0 + timedelta(minutes=1), [two[0].pk], now=T0)
    assert set(MetricBucket.objects.filter(integration=two[1]).values_list("total", flat=True)) == {
        999
    }
    assert MetricBucket.objects.get(integration=two[0], grain="day", endpoint="").total == 1


def test_rebuild_refuses_days_whose_raw_rows_may_be_pruned(two):
    now = T0 + timedelta(days=20)
    with pytest.raises(ValueError, match="cannot be rebuilt exactly"):
        rollup.rebuild(T0, T0 + timedelta(hours=1), now=now)


@time_machine.travel(T0 + timedelta(hours=2), tick=False)
def test_rebuild_metrics_command_rebuilds_and_reports(two):
    record([log(two[0].pk, T0)])
    MetricBucket.objects.all().delete()
    call_command("rebuild_metrics", "--since", "2024-03-01", "--until", "2024-03-02T00:00")
    assert MetricBucket.objects.get(grain="day", endpoint="").total == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "yesterday"],
        ["--since", "2024-03-02", "--until", "2024-03-01"],
        ["--since", "2024-01-01"],
        ["--since", "2024-03-01", "--integration", "nope"],
    ],
)
@time_machine.travel(T0 + timedelta(hours=2), tick=False)
def test_rebuild_metrics_command_reports_bad_input_clearly(two, args):
    with pytest.raises(CommandError):
        call_command("rebuild_metrics", *args)
