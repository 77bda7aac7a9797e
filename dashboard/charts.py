"""Chart payloads: metric series from monitoring.metrics shaped for static/js/app.js to draw.

A payload is plain JSON (it reaches the page through json_script): ``kind`` picks the chart
type ("bars" stacked, "lines", "spark"), ``labels`` are the x-axis, each of ``series`` has a
``colour`` naming a palette variable in app.css, ``unit`` goes on every number, and optional
``markers`` put a triangle (an alert) at a label index.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence

from django.utils import timezone

from monitoring import metrics
from monitoring.models import Alert, Grain, ProbeResult, retain_days

# Colours for one line per integration, in the Okabe–Ito order (app.css variables).
CYCLE = ["info", "warn", "ok", "bad", "violet", "sky"]
SPARK_POINTS = 48


def _utc(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC)


QUARTER_UP_TO = dt.timedelta(hours=60)
"""Spans up to this read quarter-hour buckets: 15-minute steps to 30 h (96 points at 24 h),
30-minute steps beyond (60–120 points)."""


def step_for(
    start: dt.datetime, end: dt.datetime, *, now: dt.datetime | None = None
) -> tuple[str, dt.timedelta]:
    """The grain and step of every chart on a page: minutes up to 6 h, quarter-hours up to
    60 h (while they are kept), hours up to 8 days, days beyond. Coarse on purpose: a
    point's percentiles cost one merge per bucket it spans, so a point is one or two
    quarter-hours for a day, not fifteen minutes, and hours for a week."""
    span = end - start
    if span <= dt.timedelta(hours=6):
        grain = Grain.MINUTE
    elif span <= QUARTER_UP_TO and _kept(Grain.QUARTER, start, now):
        grain = Grain.QUARTER
    elif span <= dt.timedelta(days=8):
        grain = Grain.HOUR
    else:
        grain = Grain.DAY
    return metrics.choose_step(start, end, grain=grain)


def _kept(grain: str, start: dt.datetime, now: dt.datetime | None) -> bool:
    # A window reaching back past the grain's retention would chart pruned (empty) buckets.
    keep = retain_days(grain)
    return keep is None or start >= (now or timezone.now()) - dt.timedelta(days=keep)


def spark_step(start: dt.datetime, end: dt.datetime) -> tuple[str, dt.timedelta]:
    """step_for, at most ~48 points: a sparkline (and the overview's 401/403 lines) needs
    no more, and fifty integrations × fewer points is what keeps the overview fast. Where
    step_for reads quarter-hours, a sparkline reads hours: 24 points for a day."""
    grain, step = step_for(start, end)
    if grain == Grain.QUARTER:
        grain, step = metrics.choose_step(start, end, grain=Grain.HOUR)
    span = end - start
    for g, seconds in metrics.STEPS:
        candidate = dt.timedelta(seconds=seconds)
        if g == grain and candidate >= step and span / candidate <= SPARK_POINTS:
            return grain, candidate
    return grain, step


def per(step: dt.timedelta) -> str:
    """ "min", "15 min", "h", "6 h", "day" — the period one point of a series covers."""
    seconds = int(step.total_seconds())
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}"
    return f"{seconds} s"


def label(start: dt.datetime, step: dt.timedelta, span: dt.timedelta) -> str:
    # In the page's zone (the user's profile; UTC unless chosen): axes read like the page.
    start = timezone.localtime(start)
    if step >= dt.timedelta(days=1):
        return start.strftime("%b %d")
    if span <= dt.timedelta(hours=24):
        return start.strftime("%H:%M")
    return start.strftime("%b %d %H:%M")


def labels(points: Sequence, step: dt.timedelta) -> list[str]:
    if not points:
        return []
    zone = timezone.get_current_timezone_name()
    return list(_labels(points[0].start, step, len(points), zone))


@functools.lru_cache(maxsize=64)
def _labels(first: dt.datetime, step: dt.timedelta, n: int, zone: str) -> tuple[str, ...]:
    # Every sparkline on the overview shares one axis: worked out once (per zone, which
    # `label` reads from the active one: `zone` is here to key the cache).
    span = step * (n - 1)
    return tuple(label(first + i * step, step, span) for i in range(n))


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _latency(points: Sequence, name: str) -> list[float | None]:
    # No calls in a period: a gap in the line, not a drop to 0 ms.
    return [_round(getattr(p, name)) if p.total else None for p in points]


def markers(
    alerts: Iterable[Alert], points: Sequence, step: dt.timedelta, heights: Sequence[float]
) -> list[dict]:
    """Triangles at the period where each alert started (alerts outside the series are left out)."""
    if not points:
        return []
    seconds = step.total_seconds()
    first = points[0].start
    out = []
    for alert in alerts:
        index = int((alert.first_seen - first).total_seconds() // seconds)
        if 0 <= index < len(points):
            out.append({"i": index, "y": heights[index], "text": f"Alert: {alert.title}"})
    return out


def _payload(kind: str, series, step: dt.timedelta, points: Sequence, unit: str, **extra) -> dict:
    return {
        "kind": kind,
        "labels": labels(points, step),
        "series": series,
        "unit": unit,
        "x_title": "UTC",
        **extra,
    }


def traffic(s) -> dict:
    """Requests per period by outcome, stacked."""
    p = s.points
    series = [
        {"key": "ok", "label": "OK", "colour": "ok", "data": [x.ok for x in p]},
        {
            "key": "4xx",
            "label": "Client errors (4xx)",
            "colour": "warn",
            "data": [x.client_errors for x in p],
        },
        {
            "key": "5xx",
            "label": "Server errors (5xx)",
            "colour": "bad",
            "data": [x.server_errors for x in p],
        },
        {
            "key": "transport",
            "label": "Timeouts & transport",
            "colour": "violet",
            "data": [x.transport_errors for x in p],
        },
    ]
    return _payload("bars", series, s.step, p, "req", y_title=f"requests / {per(s.step)}")


def latency(s) -> dict:
    p = s.points
    series = [
        {"key": "p50", "label": "p50", "colour": "sky", "data": _latency(p, "p50")},
        {"key": "p95", "label": "p95", "colour": "info", "data": _latency(p, "p95")},
        {
            "key": "p99",
            "label": "p99",
            "colour": "violet",
            "data": _latency(p, "p99"),
            "dash": True,
        },
    ]
    return _payload("lines", series, s.step, p, "ms", y_title="latency")


def auth_failures(s, alerts: Iterable[Alert] = ()) -> dict:
    """401 and 403 per period, with a marker where a failed-auth alert started."""
    p = s.points
    s401, s403 = [x.s401 for x in p], [x.s403 for x in p]
    series = [
        {"key": "401", "label": "401 Unauthorized", "colour": "warn", "data": s401},
        {"key": "403", "label": "403 Forbidden", "colour": "bad", "data": s403, "dash": True},
    ]
    heights = [max(a, b) for a, b in zip(s401, s403, strict=True)]
    return _payload(
        "lines",
        series,
        s.step,
        p,
        "req",
        y_title=f"responses / {per(s.step)}",
        markers=markers(alerts, p, s.step, heights),
        marker_label="Failed-auth alerts",
        suggested_max=4,
    )


def rate_limit(s) -> dict:
    """The lowest remaining quota seen in each period against the limit the provider announced."""
    p = s.points
    series = [
        {
            "key": "remaining",
            "label": "Remaining (lowest)",
            "colour": "info",
            "data": [x.ratelimit_remaining_min for x in p],
            "fill": True,
        },
        {
            "key": "limit",
            "label": "Limit",
            "colour": "muted",
            "data": [x.ratelimit_limit for x in p],
            "dash": True,
            "stepped": True,
        },
    ]
    return _payload("lines", series, s.step, p, "req", y_title="requests left in window")


def probe_outcomes(s) -> dict:
    """Probe runs per period: passed vs failed."""
    p = s.points
    series = [
        {"key": "ok", "label": "Passed", "colour": "ok", "data": [x.ok for x in p]},
        {
            "key": "failed",
            "label": "Failed",
            "colour": "bad",
            "data": [x.total - x.ok for x in p],
        },
    ]
    return _payload("bars", series, s.step, p, "runs", y_title=f"runs / {per(s.step)}")


def sparkline(s, now: dt.datetime) -> dict:
    # A half-filled last period would read as traffic dropping off: leave it out.
    p = [x for x in s.points if x.start + s.step <= now] or s.points
    series = [{"key": "total", "label": "Requests", "colour": "info", "data": [x.total for x in p]}]
    return _payload("spark", series, s.step, p, "req")


def auth_across(by_integration: dict, integrations: Sequence, alerts: Iterable[Alert] = ()) -> dict:
    """One line of 401+403 per integration, alert markers where failed-auth alerts started."""
    series, step, points = [], dt.timedelta(hours=1), []
    heights: list[float] = []
    for n, integration in enumerate(integrations):
        s = by_integration.get(integration.pk)
        if s is None:
            continue
        step, points = s.step, s.points
        data = [x.s401 + x.s403 for x in s.points]
        heights = [max(h, v) for h, v in zip(heights, data, strict=True)] if heights else data
        series.append(
            {
                "key": f"i{integration.pk}",
                "label": integration.name,
                "colour": CYCLE[n % len(CYCLE)],
                "dash": n >= len(CYCLE),
                "data": data,
            }
        )
    return _payload(
        "lines",
        series,
        step,
        points,
        "req",
        y_title=f"401 + 403 / {per(step)}",
        markers=markers(alerts, points, step, heights) if points else [],
        marker_label="Failed-auth alerts",
        suggested_max=4,
    )


def probe_latency(results: Sequence[ProbeResult]) -> dict:
    """Latency of a probe's recent runs, oldest first; failed runs are marked."""
    data = [_round(r.latency_ms) for r in results]
    span = results[-1].created - results[0].created if results else dt.timedelta()
    fmt = "%H:%M" if span <= dt.timedelta(hours=24) else "%b %d %H:%M"
    failed = [
        {"i": i, "y": data[i] or 0, "text": f"Failed: {r.get_reason_display() or 'error'}"}
        for i, r in enumerate(results)
        if not r.ok
    ]
    return {
        "kind": "lines",
        "labels": [_utc(r.created).strftime(fmt) for r in results],
        "series": [{"key": "latency", "label": "Latency", "colour": "info", "data": data}],
        "unit": "ms",
        "x_title": "UTC",
        "y_title": "latency",
        "markers": failed,
        "marker_label": "Failed runs",
    }


# --- Webhooks: deliveries the provider sends back (source "webhook") -----------------------------


def webhook_deliveries(s) -> dict:
    """Deliveries per period by what Upstream answered: verified, failed verification, rejected."""
    p = s.points
    series = [
        {
            "key": "verified",
            "label": "Verified (new or duplicate)",
            "colour": "ok",
            "data": [x.s2xx for x in p],
        },
        {
            "key": "failed",
            "label": "Failed verification (401)",
            "colour": "bad",
            "data": [x.s401 for x in p],
        },
        {
            "key": "rejected",
            "label": "Malformed or too large",
            "colour": "warn",
            "data": [x.total - x.s2xx - x.s401 for x in p],
        },
    ]
    return _payload("bars", series, s.step, p, "deliveries", y_title=f"deliveries / {per(s.step)}")


def webhook_lag(s) -> dict:
    """Delivery lag percentiles: the provider's timestamp to receipt (signed schemes only)."""
    return {**latency(s), "y_title": "delivery lag"}
