"""Tests for the metrics query API: series, summaries, top endpoints, counts and samples."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring import metrics
from monitoring.histogram import Histogram
from monitoring.models import Integration, MetricBucket, RequestLog
from tests.monitoring._rows import log, record

NOW = datetime(2024, 5, 10, 14, 37, 21, tzinfo=UTC)
STATUSES = [200, 200, 200, 201, 401, 403, 429, 500, None]


@pytest.fixture
def two(db):
    return [
        Integration.objects.create(name=name, slug=name.lower()) for name in ("Paubox", "Stripe")
    ]


def traffic(integrations, start: datetime, minutes: int, every_s: int = 47):
    """Deterministic mixed traffic every `every_s` seconds over `minutes` minutes."""
    rows = []
    for i in range(minutes * 60 // every_s):
        rows.append(
            log(
                integrations[i % len(integrations)].pk,
                start + timedelta(seconds=i * every_s + (i % 7) * 0.37),
                path=["/v1/a", "/v1/b/{id}", "/v1/c"][i % 3],
                source=["client", "client", "probe"][i % 3 == 0 and i % 2],
                status=STATUSES[i % len(STATUSES)],
                latency_ms=5 + (i * 37) % 900,
                attempt=1 + (i % 5 == 0),
                ratelimit_remaining=(i * 13) % 50,
                ratelimit_limit=100,
            )
        )
    record(rows)
    return rows


def raw_figures(rows) -> dict:
    """What a summary must say about these raw rows, computed without buckets."""
    if not rows:
        return {"total": 0, "error_rate": None, "p95": None}
    latencies = [r.latency_ms for r in rows]
    hist = Histogram.from_values(latencies)
    total = len(rows)
    errors = sum(r.outcome != "ok" for r in rows)
    return {
        "total": total,
        "errors": errors,
        "error_rate": errors / total,
        "s401": sum(r.status == 401 for r in rows),
        "s403": sum(r.status == 403 for r in rows),
        "s429": sum(r.status == 429 for r in rows),
        "retries": sum(r.attempt > 1 for r in rows),
        "transport_errors": sum(r.status is None for r in rows),
        "p50": hist.percentile(50),
        "p95": hist.percentile(95),
        "p99": hist.percentile(99),
        "latency_min": min(latencies),
        "latency_max": max(latencies),
        "ratelimit_remaining_min": min(r.ratelimit_remaining for r in rows),
    }


def figures_of(summary: metrics.Summary, like: dict) -> dict:
    return {k: getattr(summary, k) for k in like}


def ceil_minute(when: datetime) -> datetime:
    floor = when.replace(second=0, microsecond=0)
    return floor if floor == when else floor + timedelta(minutes=1)


def ceil_hour(when: datetime) -> datetime:
    floor = when.replace(minute=0, second=0, microsecond=0)
    return floor if floor == when else floor + timedelta(hours=1)


def in_window(rows, start, end):
    """Rows of the buckets starting inside [start, end): the documented window rule.

    Edges round up to the minute; windows longer than six hours round them to the hour.
    """
    lo, hi = ceil_minute(start), ceil_minute(end)
    if hi - lo > metrics.MINUTE_EDGES_UP_TO:
        lo, hi = ceil_hour(lo), ceil_hour(hi)
    return [r for r in rows if lo <= r.created < hi]


# --- Grain and step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "grain", "step", "points"),
    [
        (timedelta(hours=1), "minute", timedelta(minutes=1), 60),
        (timedelta(hours=6), "minute", timedelta(minutes=3), 120),
        (timedelta(hours=24), "15m", timedelta(minutes=15), 96),
        (timedelta(hours=48), "15m", timedelta(minutes=30), 96),
        (timedelta(days=7), "hour", timedelta(hours=2), 84),
        (timedelta(days=30), "hour", timedelta(hours=6), 120),
        (timedelta(days=365), "day", timedelta(days=5), 73),
    ],
)
def test_choose_step_gives_a_readable_number_of_points(span, grain, step, points):
    assert metrics.choose_step(NOW - span, NOW, now=NOW) == (grain, step)
    assert metrics.choose_grain(NOW - span, NOW, now=NOW) == grain
    assert span / step == points


@given(minutes=st.integers(60, 2 * 365 * 1440))
def test_choose_step_keeps_charts_between_60_and_120_points(minutes):
    span = timedelta(minutes=minutes)
    # Retention aside (the span may reach past the minute buckets), any span of an hour or
    # more gets 60–120 points.
    _grain, step = metrics.choose_step(NOW - span, NOW, grain=None, now=NOW - span)
    assert 60 <= math.ceil(span / step) <= 120


def test_choose_step_skips_grains_already_pruned_at_the_start():
    # Minutes live 3 days, quarter-hours as long as raw rows (14), hours 400.
    start = NOW - timedelta(days=5)
    assert metrics.choose_step(start, start + timedelta(hours=6), now=NOW) == (
        "15m",
        timedelta(minutes=15),
    )
    start = NOW - timedelta(days=20)
    assert metrics.choose_step(start, start + timedelta(hours=6), now=NOW) == (
        "hour",
        timedelta(hours=1),
    )
    old = NOW - timedelta(days=500)
    assert metrics.choose_grain(old, old + timedelta(hours=6), now=NOW) == "day"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.summary(None, NOW, NOW), "after start"),
        (lambda: metrics.summary(None, NOW.replace(tzinfo=None), NOW), "timezone-aware"),
        (lambda: metrics.series(None, NOW - timedelta(hours=1), NOW, grain="week"), "grain"),
        (lambda: metrics.top_endpoints(1, NOW - timedelta(hours=1), NOW, by="size"), "by must"),
        (lambda: metrics.top_endpoints(1, NOW - timedelta(hours=1), NOW, limit=0), "limit"),
        (lambda: metrics.compare(None, NOW - timedelta(hours=1), NOW, shift=timedelta()), "shift"),
        (
            lambda: metrics.series(
                None, NOW - timedelta(hours=1), NOW, grain="hour", step=timedelta(minutes=5)
            ),
            "multiple",
        ),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(db, call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- Series --------------------------------------------------------------------------------


def test_series_points_equal_raw_rows_per_step_with_empty_steps_as_zeros(two):
    start = NOW - timedelta(hours=2)
    rows = traffic(two, start - timedelta(minutes=30), minutes=60)  # stops 90 min before NOW
    series = metrics.series(None, start, NOW, now=NOW)
    assert (series.grain, series.step) == ("minute", timedelta(minutes=1))
    starts = [p.start for p in series.points]
    assert starts[0] == start.replace(second=0) and starts[-1] == NOW.replace(second=0)
    assert all(b - a == series.step for a, b in itertools.pairwise(starts))
    for point in series.points:
        expected = raw_figures(in_window(rows, point.start, point.start + series.step))
        assert figures_of(point, expected) == expected, point.start
    assert series.points[-1].total == 0 and series.points[-1].error_rate is None


def test_series_with_coarser_steps_merges_minutes_exactly(two):
    start = NOW - timedelta(hours=3)
    rows = traffic(two, start, minutes=180, every_s=13)
    series = metrics.series([two[0].pk], start, NOW, step=timedelta(minutes=20), grain="minute")
    mine = [r for r in rows if r.integration_id == two[0].pk]
    for point in series.points:
        window = [r for r in mine if point.start <= r.created < point.start + series.step]
        expected = raw_figures(window)
        assert figures_of(point, expected) == expected


def test_series_by_integration_gives_every_requested_id_a_series(two):
    third = Integration.objects.create(name="Quiet", slug="quiet")
    start = NOW - timedelta(hours=1)
    rows = traffic(two, start, minutes=60)
    by = metrics.series_by_integration([two[0].pk, third.pk], start, NOW, now=NOW)
    assert set(by) == {two[0].pk, third.pk}
    # A series' first point covers its whole step, from the minute `start` falls in.
    assert sum(p.total for p in by[two[0].pk].points) == sum(
        r.integration_id == two[0].pk for r in in_window(rows, start.replace(second=0), NOW)
    )
    assert len(by[third.pk].points) == len(by[two[0].pk].points)
    # Counts only unless asked: sparklines skip the per-point histogram merges.
    assert all(p.p95 is None for p in by[two[0].pk].points)
    with_p = metrics.series_by_integration([two[0].pk], start, NOW, now=NOW, percentiles=True)
    single = metrics.series([two[0].pk], start, NOW, now=NOW)
    assert with_p[two[0].pk].points == single.points
    assert all(p.total == 0 for p in by[third.pk].points)
    assert set(metrics.series_by_integration(None, start, NOW, now=NOW)) == {
        two[0].pk,
        two[1].pk,
    }


def test_series_filters_by_source_and_endpoint(two):
    start = NOW - timedelta(hours=1)
    rows = traffic(two, start, minutes=60)
    window = in_window(rows, start.replace(second=0), NOW)
    probe = metrics.series(None, start, NOW, source="probe", now=NOW)
    assert sum(p.total for p in probe.points) == sum(r.source == "probe" for r in window)
    b = metrics.series(None, start, NOW, endpoint="GET /v1/b/{id}", now=NOW)
    assert sum(p.total for p in b.points) == sum(r.path == "/v1/b/{id}" for r in window)


def test_series_reads_a_fixed_number_of_queries(two, django_assert_num_queries):
    traffic(two, NOW - timedelta(days=1), minutes=24 * 60, every_s=300)
    with django_assert_num_queries(1):  # sums and histograms together
        metrics.series([two[0].pk], NOW - timedelta(days=1), NOW, now=NOW)
    with django_assert_num_queries(2):  # and how many integrations "all" is
        metrics.series(None, NOW - timedelta(days=1), NOW, now=NOW)


def test_series_of_many_integrations_moves_to_a_coarser_grain(two, settings):
    start = NOW - timedelta(days=1)
    assert metrics.series([two[0].pk], start, NOW, now=NOW).grain == "15m"
    many = list(range(1, 200))
    coarse = metrics.series(many, start, NOW, source="client", now=NOW)
    assert (coarse.grain, coarse.step) == ("hour", timedelta(hours=1))
    # An explicit grain is the caller's choice.
    assert metrics.series(many, start, NOW, grain="minute", now=NOW).grain == "minute"


def test_a_day_series_reads_quarter_hours_and_equals_the_merge_of_its_minutes(two):
    start = NOW - timedelta(days=1)
    traffic(two, start, minutes=24 * 60, every_s=170)
    quarters = metrics.series(None, start, NOW, now=NOW)
    minutes = metrics.series(None, start, NOW, grain="minute", step=quarters.step, now=NOW)
    assert (quarters.grain, quarters.step) == ("15m", timedelta(minutes=15))
    assert len(quarters.points) == len(minutes.points) >= 96
    assert sum(p.total for p in quarters.points) > 0
    # Histograms merge exactly, so the percentiles match the minute merge to the bit.
    assert quarters.points == minutes.points


# --- Summary, edges and baselines ----------------------------------------------------------


def test_a_five_minute_summary_ending_now_reads_minute_buckets_exactly(two):
    rows = traffic(two, NOW - timedelta(minutes=20), minutes=20, every_s=7)
    for minutes in (1, 5, 15):
        start = NOW - timedelta(minutes=minutes)
        expected = raw_figures(in_window(rows, start, NOW))
        got = metrics.summary(None, start, NOW, now=NOW)
        assert figures_of(got, expected) == expected
    assert metrics.summary(None, NOW - timedelta(minutes=5), NOW, now=NOW).total == len(
        [r for r in rows if r.created >= NOW.replace(second=0) - timedelta(minutes=4)]
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start_min=st.integers(0, 3 * 1440 - 1),
    length_min=st.integers(1, 3 * 1440),
    seconds=st.integers(0, 59),
)
def test_any_window_within_minute_retention_equals_the_raw_rows(
    traffic_3d, start_min, length_min, seconds
):
    rows, origin = traffic_3d
    start = origin + timedelta(minutes=start_min, seconds=seconds)
    end = min(start + timedelta(minutes=length_min), NOW)
    if end <= start:
        return
    expected = raw_figures(in_window(rows, start, end))
    assert figures_of(metrics.summary(None, start, end, now=NOW), expected) == expected


@pytest.fixture
def traffic_3d(two):
    origin = NOW - timedelta(days=2, hours=23)
    return traffic(
        two, origin, minutes=int((NOW - origin).total_seconds() // 60), every_s=97
    ), origin


def test_edges_older_than_minute_retention_round_up_to_the_hour(two):
    old = NOW - timedelta(days=5)
    hour = old.replace(minute=0, second=0, microsecond=0)
    rows = traffic(two, hour, minutes=180, every_s=60)
    start, end = hour + timedelta(minutes=30), hour + timedelta(minutes=150)
    # Hour buckets starting in [start, end): 1:00 and 2:00 after `hour`.
    expected = [
        r for r in rows if hour + timedelta(hours=1) <= r.created < hour + timedelta(hours=3)
    ]
    assert metrics.summary(None, start, end, now=NOW).total == len(expected)


def test_compare_returns_this_window_and_the_same_window_a_day_earlier(two):
    rows = traffic(two, NOW - timedelta(days=1, hours=2), minutes=26 * 60, every_s=60)
    start = NOW - timedelta(hours=1)
    now_summary, baseline = metrics.compare([two[0].pk], start, NOW, now=NOW)
    mine = [r for r in rows if r.integration_id == two[0].pk]
    assert now_summary.total == len(in_window(mine, start, NOW))
    day = timedelta(days=1)
    assert baseline.total == len(in_window(mine, start - day, NOW - day))
    assert baseline.total > 0 and now_summary.s401 > 0


def test_summary_by_integration_splits_what_summary_adds_up(two):
    start = NOW - timedelta(hours=6)
    traffic(two, start, minutes=360, every_s=31)
    both = metrics.summary(None, start, NOW, now=NOW)
    each = metrics.summary_by_integration([two[0].pk, two[1].pk], start, NOW, now=NOW)
    assert each[two[0].pk].total + each[two[1].pk].total == both.total
    assert min(s.latency_min for s in each.values()) == both.latency_min


def test_rate_limit_headroom_reports_the_lowest_remaining_with_its_limit(two):
    record(
        [
            log(two[0].pk, NOW - timedelta(minutes=3), ratelimit_remaining=40, ratelimit_limit=50),
            log(two[0].pk, NOW - timedelta(minutes=2), ratelimit_remaining=7, ratelimit_limit=1000),
            log(two[0].pk, NOW - timedelta(minutes=1), ratelimit_remaining=7, ratelimit_limit=None),
            log(two[1].pk, NOW - timedelta(minutes=1)),
        ]
    )
    s = metrics.summary(None, NOW - timedelta(hours=1), NOW, now=NOW)
    assert (s.ratelimit_remaining_min, s.ratelimit_limit) == (7, 1000)
    quiet = metrics.summary([two[1].pk], NOW - timedelta(hours=1), NOW, now=NOW)
    assert (quiet.ratelimit_remaining_min, quiet.ratelimit_limit) == (None, None)


def test_a_window_without_traffic_is_a_zero_summary(two):
    s = metrics.summary([two[0].pk], NOW - timedelta(hours=1), NOW, now=NOW)
    assert s == metrics.Summary()
    assert metrics.summary([], NOW - timedelta(hours=1), NOW, now=NOW).total == 0


@time_machine.travel(NOW, tick=False)
def test_now_defaults_to_the_current_time(two):
    record([log(two[0].pk, NOW - timedelta(seconds=5))])
    assert metrics.summary(None, NOW - timedelta(minutes=5), NOW).total == 1


def test_metrics_never_read_the_raw_request_log(two, django_assert_num_queries):
    traffic(two, NOW - timedelta(hours=2), minutes=120)
    RequestLog.objects.all().delete()  # the buckets alone must answer
    assert metrics.summary(None, NOW - timedelta(hours=2), NOW, now=NOW).total > 0
    assert MetricBucket.objects.exists()


# --- Top endpoints -------------------------------------------------------------------------


def test_top_endpoints_ranks_by_volume_errors_and_p95(two):
    at = NOW - timedelta(minutes=10)
    rows = (
        [log(two[0].pk, at, path="/busy", latency_ms=10) for _ in range(6)]
        + [log(two[0].pk, at, path="/failing", status=500, latency_ms=20) for _ in range(4)]
        + [log(two[0].pk, at, path="/slow", latency_ms=3000, status=401) for _ in range(2)]
        + [log(two[1].pk, at, path="/elsewhere") for _ in range(50)]
    )
    record(rows)
    start = NOW - timedelta(hours=1)
    volume = metrics.top_endpoints(two[0].pk, start, NOW, now=NOW)
    assert [e.endpoint for e in volume] == ["GET /busy", "GET /failing", "GET /slow"]
    assert volume[0].total == 6 and volume[0].errors == 0 and volume[0].error_rate == 0
    errors = metrics.top_endpoints(two[0].pk, start, NOW, by="errors", limit=2, now=NOW)
    assert [(e.endpoint, e.errors, e.s401) for e in errors] == [
        ("GET /failing", 4, 0),
        ("GET /slow", 2, 2),
    ]
    slow = metrics.top_endpoints(two[0].pk, start, NOW, by="p95", limit=1, now=NOW)
    assert slow[0].endpoint == "GET /slow" and slow[0].p95 == 3000


# --- Counter series --------------------------------------------------------------------------


def test_counts_by_integration_match_the_full_series_step_by_step(two):
    start = NOW - timedelta(hours=2)
    traffic(two, start, minutes=120)
    step = timedelta(minutes=10)
    lines = metrics.counts_by_integration(
        [two[0].pk, two[1].pk], start, NOW, source="client", grain="minute", step=step
    )
    for integration in two:
        full = metrics.series([integration.pk], start, NOW, source="client", step=step, now=NOW)
        counted = lines[integration.pk]
        assert (counted.grain, counted.step) == ("minute", step)
        assert [p.start for p in counted.points] == [p.start for p in full.points]
        for fields in metrics.COUNT_FIELDS:
            assert [getattr(p, fields) for p in counted.points] == [
                getattr(p, fields) for p in full.points
            ]
    assert sum(p.total for p in lines[two[0].pk].points) > 0


def test_counts_by_integration_give_idle_integrations_zero_points_in_one_query(
    two, django_assert_num_queries
):
    with django_assert_num_queries(1):
        lines = metrics.counts_by_integration(
            [two[0].pk, two[1].pk],
            NOW - timedelta(hours=1),
            NOW,
            source="probe",
            grain="minute",
            step=timedelta(minutes=5),
        )
    assert [len(s.points) for s in lines.values()] == [13, 13]  # 13:35 … 14:35
    assert not any(p.total for s in lines.values() for p in s.points)
    assert (
        metrics.counts_by_integration(
            [],
            NOW - timedelta(hours=1),
            NOW,
            source="probe",
            grain="minute",
            step=timedelta(minutes=5),
        )
        == {}
    )


def test_window_totals_count_calls_and_the_error_rate_per_integration(two):
    at = NOW - timedelta(minutes=3)
    record(
        [log(two[0].pk, at) for _ in range(3)]
        + [log(two[0].pk, at, status=503)]
        + [log(two[0].pk, NOW - timedelta(minutes=30))]  # before the window
        + [log(two[1].pk, at, source="probe")]
    )
    start = NOW - timedelta(minutes=10)
    totals = metrics.window_totals([two[0].pk, two[1].pk], start, NOW, source="client")
    assert totals == {two[0].pk: (4, 0.25), two[1].pk: (0, 0.0)}
    assert metrics.window_totals([two[1].pk], start, NOW, source="probe") == {two[1].pk: (1, 0.0)}


# --- Samples of raw rows -------------------------------------------------------------------


def test_recent_errors_group_the_newest_failures_by_code(two):
    at = NOW - timedelta(minutes=5)
    rows = [log(two[0].pk, at + timedelta(seconds=i), status=401) for i in range(3)]
    for row in rows:
        row.error_code, row.error_message = "invalid_api_key", "Invalid API key."
    rows += [log(two[0].pk, at, status=503, path="/v1/other") for _ in range(2)]
    rows += [log(two[0].pk, at, status=None)]  # a timeout: grouped by its outcome
    rows += [log(two[0].pk, at), log(two[1].pk, at, status=500)]  # an OK call, another's error
    record(rows)
    groups = metrics.recent_errors(two[0].pk, NOW - timedelta(hours=1), NOW)
    assert [(g.code, g.count, g.filter_code) for g in groups] == [
        ("invalid_api_key", 3, "invalid_api_key"),
        ("HTTP 503", 2, ""),
        ("Timeout", 1, ""),
    ]
    assert groups[0].message == "Invalid API key."
    assert groups[0].last_seen == at + timedelta(seconds=2)
    assert groups[0].status_list == ["401"] and groups[1].endpoint_list == ["GET /v1/other"]
    assert len(metrics.recent_errors(two[0].pk, NOW - timedelta(hours=1), NOW, scan=2)) == 1
    assert len(metrics.recent_errors(two[0].pk, NOW - timedelta(hours=1), NOW, groups=1)) == 1


def _deprecated(integration_id: int, at: datetime, path: str, **fields) -> RequestLog:
    row = log(integration_id, at, path=path, deprecated=True)
    for name, value in fields.items():
        setattr(row, name, value)
    return row


def test_deprecations_list_endpoints_soonest_sunset_first_with_their_latest_answer(two):
    iid = two[0].pk
    record(
        [
            _deprecated(
                iid, NOW - timedelta(hours=3), "/v1/old", sunset_at=NOW + timedelta(days=9)
            ),
            # The latest deprecated hour of /v1/old: its sunset moved earlier.
            _deprecated(
                iid,
                NOW - timedelta(minutes=20),
                "/v1/old",
                sunset_at=NOW + timedelta(days=5),
                deprecation_link="https://docs.example.com/old",
            ),
            _deprecated(iid, NOW - timedelta(minutes=10), "/v1/older"),  # no sunset announced
            _deprecated(iid, NOW - timedelta(days=3), "/v1/ancient"),  # before `since`
            log(iid, NOW - timedelta(minutes=5), path="/v1/fine"),
            _deprecated(two[1].pk, NOW - timedelta(minutes=5), "/v1/elsewhere"),
        ]
    )
    found = metrics.deprecations(iid, NOW - timedelta(hours=24))
    assert [(d.endpoint, d.responses) for d in found] == [("GET /v1/old", 2), ("GET /v1/older", 1)]
    old = found[0]
    assert old.sunset_at == NOW + timedelta(days=5)
    assert old.link == "https://docs.example.com/old"
    assert old.last_seen == NOW - timedelta(minutes=20)
    assert found[1].sunset_at is None and found[1].link == ""
    assert len(metrics.deprecations(iid, NOW - timedelta(hours=24), limit=1)) == 1


def test_deprecations_of_one_endpoint_answer_the_alerts_sunset_lookup(two):
    iid = two[0].pk
    record(
        [
            _deprecated(
                iid,
                NOW - timedelta(minutes=15),
                "/v1/old",
                sunset_at=NOW + timedelta(days=30),
                deprecation_at=NOW - timedelta(days=60),
            ),
            _deprecated(iid, NOW - timedelta(minutes=5), "/v1/other"),
        ]
    )
    [only] = metrics.deprecations(iid, NOW - timedelta(minutes=60), endpoint="GET /v1/old")
    assert (only.endpoint, only.sunset_at) == ("GET /v1/old", NOW + timedelta(days=30))
    assert only.deprecation_at == NOW - timedelta(days=60)
    assert metrics.deprecations(iid, NOW - timedelta(minutes=60), endpoint="GET /v1/none") == []


# --- Long windows: the remembered merges and the all-endpoints index (issue 19) -----------


def test_a_week_summary_equals_the_raw_rows_whether_its_merges_are_remembered_or_not(two):
    """The 7-day overview's figures come from remembered merges after the first render;
    they must stay exact, and a late row landing in a closed day must show at once."""
    week = timedelta(days=7)
    rows = traffic(two, NOW - week, minutes=7 * 24 * 60, every_s=1800)
    ids = [two[0].pk, two[1].pk]
    metrics.forget_merged()
    cold = metrics.summary_by_integration(ids, NOW - week, NOW, source="client", now=NOW)
    remembered = len(metrics._MERGED)
    warm = metrics.summary_by_integration(ids, NOW - week, NOW, source="client", now=NOW)
    assert remembered > 0 and len(metrics._MERGED) == remembered  # the second read reused them
    assert warm == cold
    mine = [r for r in rows if r.integration_id == two[0].pk and r.source == "client"]
    want = raw_figures(in_window(mine, NOW - week, NOW))
    assert figures_of(warm[two[0].pk], want) == want

    # A late row (a replayed spool) in a closed day of the window: a different string of
    # blobs, so a new merge, never the remembered one.
    late = log(
        two[0].pk,
        NOW - timedelta(days=3),
        latency_ms=25_000.0,
        ratelimit_remaining=49,
        ratelimit_limit=100,
    )
    record([late])
    after = metrics.summary_by_integration(ids, NOW - week, NOW, source="client", now=NOW)
    want = raw_figures(in_window([*mine, late], NOW - week, NOW))
    assert figures_of(after[two[0].pk], want) == want
    assert after[two[0].pk].latency_max == 25_000.0


def test_a_summary_reaching_into_the_current_day_reads_one_query_per_piece(
    two, django_assert_num_queries
):
    traffic(two, NOW - timedelta(days=2), minutes=2 * 24 * 60, every_s=900)
    pieces = metrics.cover(NOW - timedelta(days=2), NOW, NOW)
    assert any(g == "day" and lo < NOW.timestamp() < hi for g, lo, hi in pieces)
    with django_assert_num_queries(len(pieces)):
        s = metrics.summary([two[0].pk], NOW - timedelta(days=2), NOW, source="client", now=NOW)
    assert s.total > 0 and s.p95 is not None


def test_the_merge_memo_keeps_at_most_its_size(two, monkeypatch):
    monkeypatch.setattr(metrics, "MERGED_CACHE_SIZE", 2)
    metrics.forget_merged()
    traffic(two, NOW - timedelta(days=3), minutes=3 * 24 * 60, every_s=3600)
    for days in (1, 2, 3):
        metrics.summary_by_integration(
            [two[0].pk, two[1].pk], NOW - timedelta(days=days), NOW, now=NOW
        )
    assert len(metrics._MERGED) == 2


def test_all_endpoint_rows_have_their_own_index(db):
    """Migration 0017: the overview's "" rows are read through bucket_all_endpoints."""
    from django.db import connection

    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, MetricBucket._meta.db_table)
    assert found["bucket_all_endpoints"]["columns"][:4] == [
        "integration_id",
        "grain",
        "source",
        "start",
    ]
