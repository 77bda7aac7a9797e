"""Every number on a page carries its unit."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from dashboard.templatetags import upstream as tags


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (4.26, "4.3 ms"), (182.4, "182 ms"), (1240, "1.24 s"), (12_500, "12.5 s")],
)
def test_ms(value, text):
    assert tags.ms(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0, "0 %"),
        (0.0004, "<0.1 %"),
        (0.031, "3.1 %"),
        (0.25, "25 %"),
        (0.9999, ">99.9 %"),
        (1, "100 %"),
    ],
)
def test_pct(value, text):
    assert tags.pct(value) == text


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (12, "req", "12 req"),
        (3400, "req", "3.4 k req"),
        (2_000_000, "B", "2 M B"),
        (None, "req", "—"),
    ],
)
def test_count(value, unit, text):
    assert tags.count(value, unit) == text


@time_machine.travel(dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), tick=False)
def test_ago_reads_both_ways():
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert tags.ago(now - dt.timedelta(minutes=4)) == "4 min ago"
    assert tags.ago(now + dt.timedelta(days=23)) == "in 23 d"
    assert tags.ago(now - dt.timedelta(hours=3, minutes=5)) == "3 h 5 min ago"
    assert tags.ago(None) == "—"
