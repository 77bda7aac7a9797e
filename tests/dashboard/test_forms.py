"""The dashboard's GET filter forms: every field bounded, so no value is a 500 further on."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from dashboard.forms import (
    EARLIEST,
    LogFilterForm,
    RangeForm,
    decode_cursor,
    encode_cursor,
)

HOSTILE = [
    "0001-01-01T00:00",
    "9999-12-31T23:59",
    "99999-01-01T00:00",
    "-1",
    "0",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "9" * 25,
    "-" + "9" * 25,
    "9" * 5000,
    "\x00",
    "/v1/\x00",
    "\udcff",
    "x" * 10_000,
    "2026-02-30T00:00",
    "2026-13-01T00:00",
    "99999999999999999999.99999999999999999999",
    "1.99999999999999999999",
    "0.0",
    "{" * 2000,
]


@pytest.mark.parametrize("field", list(LogFilterForm.base_fields))
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_no_hostile_value_gets_past_validation_unbounded(db, field, value):
    form = LogFilterForm({"range": "24h", field: value})
    if form.is_valid():
        window = form.cleaned_data["window"]
        assert window.start < window.end
        assert window.end - window.start <= dt.timedelta(days=31)
    else:
        assert form.errors


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_the_range_form_takes_only_its_choices(value):
    assert not RangeForm({"range": value}).is_valid()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("until", "0001-01-01T00:00"),
        ("since", "0001-01-01T00:00"),
        ("until", "9999-12-31T23:59"),
        ("since", "1999-12-31T23:59"),
        ("until", "2100-01-01T00:00"),
    ],
)
def test_times_outside_the_supported_years_are_refused_with_a_message(db, field, value):
    form = LogFilterForm({field: value})
    assert not form.is_valid()
    assert form.errors[field] == ["Choose a time in the years 2000 to 2099."]


def test_times_inside_the_supported_years_are_taken(db):
    form = LogFilterForm({"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["window"].start == EARLIEST


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor(dt.datetime(1999, 12, 31, tzinfo=dt.UTC), 1),
        encode_cursor(dt.datetime(2100, 1, 1, tzinfo=dt.UTC), 1),
        f"{encode_cursor(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 1).split('.')[0]}.{2**63}",
    ],
)
def test_a_position_outside_what_the_log_can_hold_is_refused(cursor):
    with pytest.raises(ValidationError, match="not a position"):
        decode_cursor(cursor)
