"""Filters that put a unit on every number, and tags for links that keep the page's filters."""

from __future__ import annotations

import datetime as dt
import math
from urllib.parse import urlencode

from django import template
from django.utils import timezone

from monitoring.models import Alert, AlertState

register = template.Library()

DASH = "—"


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@register.filter
def ms(value) -> str:
    """A latency: "182 ms", "1.24 s", "—" when there is none."""
    number = _number(value)
    if number is None:
        return DASH
    if number >= 10_000:
        return f"{number / 1000:.1f} s"
    if number >= 1000:
        return f"{number / 1000:.2f} s"
    if number >= 10:
        return f"{number:.0f} ms"
    return f"{number:.1f} ms"


@register.filter
def pct(value) -> str:
    """A ratio 0…1 as a percentage with its sign of precision: "0 %", "<0.1 %", "3.2 %"."""
    number = _number(value)
    if number is None:
        return DASH
    if number == 0:
        return "0 %"
    percent = number * 100
    if percent < 0.1:
        return "<0.1 %"
    if percent >= 99.95 and number < 1:
        return ">99.9 %"
    return f"{percent:.0f} %" if percent >= 10 else f"{percent:.1f} %"


def _compact(number: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            scaled = number / limit
            return f"{scaled:.1f}".rstrip("0").rstrip(".") + f" {suffix}"
    return f"{number:.0f}"


@register.filter
def count(value, unit: str = "req") -> str:
    """A count with its unit: "12 req", "3.4 k req"."""
    number = _number(value)
    if number is None:
        return DASH
    text = _compact(number)
    return f"{text} {unit}" if unit else text


# The active zone is UTC except on pages for a user who chose one in their profile
# (dashboard.middleware.TimeZoneMiddleware); e-mails and tasks always render in UTC.
@register.filter
def utc(value) -> str:
    if not isinstance(value, dt.datetime):
        return DASH
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


@register.filter
def utc_short(value) -> str:
    if not isinstance(value, dt.datetime):
        return DASH
    return timezone.localtime(value).strftime("%b %d, %H:%M %Z")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400 * 2:
        hours, rest = divmod(seconds, 3600)
        minutes = rest // 60
        return f"{hours:.0f} h {minutes:.0f} min" if minutes and hours < 10 else f"{hours:.0f} h"
    return f"{seconds / 86400:.0f} d"


@register.filter
def ago(value) -> str:
    """ "4 min ago" / "in 3 d" relative to now."""
    if not isinstance(value, dt.datetime):
        return DASH
    delta = (timezone.now() - value).total_seconds()
    if -1 < delta < 1:
        return "just now"
    return f"{_span(delta)} ago" if delta > 0 else f"in {_span(delta)}"


@register.filter
def seconds(value) -> str:
    number = _number(value)
    return DASH if number is None else _span(number)


@register.filter
def days_until(value) -> int | None:
    if not isinstance(value, dt.datetime):
        return None
    return math.floor((value - timezone.now()).total_seconds() / 86400)


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """The current query string with some parameters replaced (None drops one)."""
    request = context["request"]
    params = request.GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    return "?" + urlencode(list(params.lists()), doseq=True) if params else request.path


@register.simple_tag
def firing_alert_count() -> int:
    """Alerts firing and not acknowledged (the nav's badge): a COUNT on alert_state_time."""
    return Alert.objects.filter(state=AlertState.FIRING).count()


@register.simple_tag
def silence_choices() -> list[tuple[str, str]]:
    from dashboard.forms import SilenceForm

    return list(SilenceForm.base_fields["duration"].choices)
