"""Chart payloads: labels, units, gaps for empty periods, alert markers at the right period."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

from dashboard import charts
from monitoring.metrics import Point, Series

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=15)


def series(*totals, s401=0):
    points = [
        Point(start=T0 + i * STEP, total=n, ok=n, s401=s401, p50=10.0 if n else None)
        for i, n in enumerate(totals)
    ]
    return Series("minute", STEP, points)


def test_per_names_the_period_one_point_covers():
    assert charts.per(dt.timedelta(minutes=1)) == "min"
    assert charts.per(dt.timedelta(minutes=15)) == "15 min"
    assert charts.per(dt.timedelta(hours=6)) == "6 h"
    assert charts.per(dt.timedelta(days=1)) == "day"


def test_labels_show_the_time_of_day_within_a_day_and_the_date_beyond():
    assert charts.labels(series(1, 2).points, STEP) == ["12:00", "12:15"]
    two_hours = dt.timedelta(hours=2)
    week = Series("hour", two_hours, [Point(start=T0 + d * two_hours) for d in range(84)])
    assert charts.labels(week.points, week.step)[0] == "Mar 01 12:00"


def test_traffic_is_stacked_by_outcome_with_a_unit():
    payload = charts.traffic(series(3, 0, 5))
    assert payload["kind"] == "bars"
    assert payload["unit"] == "req"
    assert payload["y_title"] == "requests / 15 min"
    assert [s["key"] for s in payload["series"]] == ["ok", "4xx", "5xx", "transport"]
    assert payload["series"][0]["data"] == [3, 0, 5]
    json.dumps(payload)  # it goes to the page through json_script


def test_latency_leaves_a_gap_where_there_were_no_calls():
    payload = charts.latency(series(3, 0, 5))
    p50 = payload["series"][0]["data"]
    assert p50 == [10.0, None, 10.0]
    assert payload["unit"] == "ms"


def test_an_alert_marker_lands_on_the_period_it_started_in():
    s = series(0, 0, 0, 0, s401=4)
    alert = SimpleNamespace(first_seen=T0 + dt.timedelta(minutes=31), title="spike")
    late = SimpleNamespace(first_seen=T0 + dt.timedelta(hours=5), title="outside")
    payload = charts.auth_failures(s, [alert, late])
    assert payload["markers"] == [{"i": 2, "y": 4, "text": "Alert: spike"}]


def test_the_sparkline_leaves_out_the_period_still_filling():
    s = series(5, 6, 7)
    now = T0 + 2 * STEP + dt.timedelta(minutes=3)  # inside the third period
    assert charts.sparkline(s, now)["series"][0]["data"] == [5, 6]


def test_failed_auth_across_integrations_has_one_line_each():
    a, b = SimpleNamespace(pk=1, name="Paubox"), SimpleNamespace(pk=2, name="Stripe")
    payload = charts.auth_across({1: series(0, 1), 2: series(2, 0, s401=3)}, [a, b])
    assert [s["label"] for s in payload["series"]] == ["Paubox", "Stripe"]
    assert payload["series"][1]["data"] == [3, 3]
    assert payload["series"][0]["colour"] != payload["series"][1]["colour"]


def test_sparklines_get_a_few_dozen_points_at_every_range():
    end = T0
    for hours, (grain, points) in {
        1: ("minute", 30),
        24: ("hour", 24),
        24 * 7: ("hour", 42),
        24 * 30: ("day", 30),
    }.items():
        got_grain, step = charts.spark_step(end - dt.timedelta(hours=hours), end)
        assert (got_grain, dt.timedelta(hours=hours) / step) == (grain, points)


def test_charts_read_quarter_hours_where_they_give_sixty_to_a_hundred_twenty_points():
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    for hours, (grain, points) in {
        1: ("minute", 60),
        6: ("minute", 120),
        12: ("15m", 48),
        24: ("15m", 96),
        30: ("15m", 120),
        48: ("15m", 96),
        60: ("15m", 120),
        24 * 7: ("hour", 84),
        24 * 30: ("day", 30),
    }.items():
        got_grain, step = charts.step_for(end - dt.timedelta(hours=hours), end)
        assert (got_grain, dt.timedelta(hours=hours) / step) == (grain, points), hours


def test_a_day_long_ago_reads_hours_once_its_quarter_hours_are_pruned(settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_RAW_DAYS": 7, "RETAIN_MINUTE_DAYS": 3}
    now = dt.datetime.now(dt.UTC)
    recent, old = now - dt.timedelta(days=5), now - dt.timedelta(days=8)
    assert charts.step_for(recent - dt.timedelta(hours=24), recent)[0] == "15m"
    grain, step = charts.step_for(old - dt.timedelta(hours=24), old)
    assert (grain, step) == ("hour", dt.timedelta(hours=1))
