"""Forms that validate what the dashboard reads from the URL and what its buttons post."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from monitoring.models import Integration, Outcome, Source

# Time ranges offered on every chart page and in the request log; the key is kept in the URL.
RANGES: dict[str, dt.timedelta] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
RANGE_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 d", "30d": "30 d"}
DEFAULT_RANGE = "24h"
# The explorer reads raw rows: a custom window longer than this would not stay bounded.
MAX_LOG_SPAN = dt.timedelta(days=31)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class TimeWindow:
    key: str
    start: dt.datetime
    end: dt.datetime

    @property
    def label(self) -> str:
        return RANGE_LABELS.get(self.key, "custom")


class RangeForm(forms.Form):
    """The ?range= of a chart page (1h, 24h, 7d, 30d)."""

    range = forms.ChoiceField(choices=[(k, RANGE_LABELS[k]) for k in RANGES], required=False)

    def window(self, now: dt.datetime | None = None) -> TimeWindow:
        key = self.cleaned_data.get("range") or DEFAULT_RANGE
        end = now or timezone.now()
        return TimeWindow(key, end - RANGES[key], end)


def _error_text(form: forms.Form) -> str:
    parts = []
    for name, errors in form.errors.items():
        label = form[name].label if name in form.fields else ""
        parts += [f"{label}: {e}" if label else str(e) for e in errors]
    return " ".join(parts)


class BadInput(Exception):
    """Raised with a message for the person; views turn it into a 400 page or fragment."""


def clean_or_raise(form: forms.Form) -> dict:
    if not form.is_valid():
        raise BadInput(_error_text(form))
    return form.cleaned_data


_CURSOR = re.compile(r"^(\d{1,20})\.(\d{1,20})$")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Every time a filter accepts lies in this span, so range arithmetic on it (a default window
# before "To", a span check) can never leave what datetime represents.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
# Row ids are 64-bit signed integers in every database Upstream supports.
_MAX_PK = 2**63 - 1


class BoundedDateTimeField(forms.DateTimeField):
    """A date and time between EARLIEST and LATEST (UTC): the year 1 or 9999 is a typo."""

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None and not EARLIEST <= result < LATEST:
            raise ValidationError(
                f"Choose a time in the years {EARLIEST.year} to {LATEST.year - 1}.",
                code="out_of_range",
            )
        return result


def encode_cursor(created: dt.datetime, pk: int) -> str:
    """A keyset position: microseconds since the epoch and the row id (integers: exact)."""
    micros = (created - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{pk}"


def decode_cursor(value: str) -> tuple[dt.datetime, int]:
    match = _CURSOR.match(value)
    if not match:
        raise ValidationError("This is not a position in the log.")
    micros, pk = int(match.group(1)), int(match.group(2))
    try:
        created = _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise ValidationError("This is not a position in the log.") from None
    if not EARLIEST <= created < LATEST or pk > _MAX_PK:
        raise ValidationError("This is not a position in the log.")
    return created, pk


# What <input type="datetime-local"> sends and expects back; the page states it is UTC.
_LOCAL = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class LogFilterForm(forms.Form):
    """The request log explorer's filters. A time window is always set, so queries stay bounded."""

    integration = forms.ModelChoiceField(
        queryset=Integration.objects.all(), required=False, empty_label="All integrations"
    )
    source = forms.ChoiceField(choices=[("", "Any source"), *Source.choices], required=False)
    outcome = forms.ChoiceField(
        choices=[("", "Any outcome"), ("failed", "Any failure"), *Outcome.choices],
        required=False,
    )
    status = forms.IntegerField(min_value=100, max_value=599, required=False)
    method = forms.ChoiceField(
        choices=[("", "Any method")] + [(m, m) for m in METHODS], required=False
    )
    path = forms.CharField(max_length=255, required=False, label="Path template")
    error_code = forms.CharField(max_length=100, required=False, label="Error code")
    q = forms.CharField(
        max_length=200,
        required=False,
        label="Search",
        help_text="Path, error code, message or flag",
    )
    call_id = forms.CharField(max_length=32, required=False, label="Call id")
    range = forms.ChoiceField(
        choices=[(k, f"Last {RANGE_LABELS[k]}") for k in RANGES], required=False, label="Time"
    )
    since = BoundedDateTimeField(required=False, label="From (UTC)", widget=_LOCAL)
    until = BoundedDateTimeField(required=False, label="To (UTC)", widget=_LOCAL)
    after = forms.CharField(required=False, widget=forms.HiddenInput, label="Position")

    def clean_path(self) -> str:
        path = self.cleaned_data["path"].strip()
        if path and not path.startswith("/"):
            raise ValidationError("A path template starts with /, e.g. /v1/users/{id}.")
        return path

    def clean_error_code(self) -> str:
        return self.cleaned_data["error_code"].strip()

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip()

    def clean_call_id(self) -> str:
        return self.cleaned_data["call_id"].strip()

    def clean_after(self) -> tuple[dt.datetime, int] | None:
        value = self.cleaned_data["after"].strip()
        return decode_cursor(value) if value else None

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        now = timezone.now()
        since, until = data.get("since"), data.get("until")
        if since is None and until is None:
            key = data.get("range") or DEFAULT_RANGE
            data["window"] = TimeWindow(key, now - RANGES[key], now)
            return data
        until = until or now
        since = since or until - RANGES[DEFAULT_RANGE]
        if since >= until:
            raise ValidationError("“From” must be before “To”.")
        if until - since > MAX_LOG_SPAN:
            raise ValidationError(
                f"Choose a window of at most {MAX_LOG_SPAN.days} days; "
                "longer spans belong to the charts, which read the metric buckets."
            )
        data["window"] = TimeWindow("custom", since, until)
        return data

    def query_without_position(self) -> str:
        """The filters as a query string (for links that keep them but restart paging)."""
        from urllib.parse import urlencode

        pairs = []
        for name in self.fields:
            if name == "after":
                continue
            value = self.data.get(name, "")
            if value not in ("", None):
                pairs.append((name, value))
        return urlencode(pairs)


class AcknowledgeForm(forms.Form):
    note = forms.CharField(max_length=500, required=False, label="Note")


SILENCE_DURATIONS = {
    "1h": dt.timedelta(hours=1),
    "4h": dt.timedelta(hours=4),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}


class SilenceForm(forms.Form):
    duration = forms.ChoiceField(
        choices=[("1h", "1 hour"), ("4h", "4 hours"), ("24h", "24 hours"), ("7d", "7 days")],
        initial="4h",
    )
    reason = forms.CharField(max_length=300, required=False)

    def ends_at(self, now: dt.datetime | None = None) -> dt.datetime:
        return (now or timezone.now()) + SILENCE_DURATIONS[self.cleaned_data["duration"]]
