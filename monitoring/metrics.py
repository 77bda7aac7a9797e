"""Read metric buckets: series, summaries, baselines, top endpoints, counts, deprecations.

This is the only way charts, pages and alert rules see traffic. RequestLog is read only in
bounded, indexed samples: the newest failures, and the sunset date of a deprecated endpoint.

Windows and edges
    A bucket belongs to a window [start, end) when the bucket *starts* inside it; in effect
    both edges round up to the next whole minute. summary(), compare() and top_endpoints()
    cover a window with the finest grain still kept at each edge (minutes at the ragged
    ends, hours and days in the middle), so a 5-minute window reads exactly five minute
    buckets, and a window ending at or after `now` counts the current, partial minute, hour
    or day in full (nothing is stored past now; a row stamped in the future by a skewed
    clock may be counted there). Windows longer than MINUTE_EDGES_UP_TO (6 h) round their
    edges up to the hour instead: an hour hardly matters there, while the edge minutes of
    many integrations would be most of the buckets read. Where minute buckets are already
    pruned (RETAIN_MINUTE_DAYS) an edge rounds up to the hour, past RETAIN_HOUR_DAYS to the
    day. cover() returns the pieces a window is read from.

    series() returns one point per step, steps aligned to multiples of the step since the
    Unix epoch (so hours and days are UTC hours and days). The first point covers its whole
    step even when `start` falls inside it; the last point holds what is stored so far.
    Empty steps are zero points, so the x axis is continuous. choose_step() picks ~60–120
    points (steps of 15 and 30 minutes read quarter-hour buckets, so a 24-hour series
    merges 96 buckets per line); a series over many integrations that would merge more
    than MAX_SERIES_BUCKETS buckets at that grain moves to the next coarser grain (fewer
    points) instead.

Figures
    errors = total - ok (4xx, 5xx and transport failures); error_rate = errors / total.
    Percentiles come from the merged latency histograms (nearest rank, ~1 % relative error,
    clamped to the observed min/max); they are None when there is no traffic.
    ratelimit_remaining_min is the tightest quota seen (the lowest share of its limit left,
    request or token budget) and ratelimit_limit the limit reported with it.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Max, Q, Sum
from django.utils import timezone

from monitoring.histogram import Histogram, merge_encoded, percentiles_encoded
from monitoring.models import (
    ALL_ENDPOINTS,
    COUNTERS,
    GRAIN_SECONDS,
    GRAINS,
    TOTAL_COUNTERS,
    Grain,
    Integration,
    MetricBucket,
    Outcome,
    RequestLog,
    Source,
    retain_days,
    split_endpoint,
)

QUANTILES = (50, 95, 99)
MAX_POINTS = 120
"""series() picks the finest step giving at most this many points (and so at least half)."""

# Steps a series may use; each is at most twice the one before it, so the finest step with
# <= 120 points always gives more than 60 (for spans of an hour or more).
# Steps of 15 and 30 minutes read quarter-hour buckets: a 24-hour chart then merges 96
# buckets per line, not 1,440 minutes (20 minutes is left out, it is no multiple of 15).
STEPS: list[tuple[str, int]] = (
    [(Grain.MINUTE, m * 60) for m in (1, 2, 3, 5, 10)]
    + [(Grain.QUARTER, m * 60) for m in (15, 30)]
    + [(Grain.HOUR, h * 3600) for h in (1, 2, 3, 4, 6, 8, 12)]
    + [(Grain.DAY, d * 86400) for d in (1, 2, 3, 5, 7, 14, 28, 56)]
)
_GRAIN_RANK = {Grain.MINUTE: 0, Grain.QUARTER: 1, Grain.HOUR: 2, Grain.DAY: 3}
_COARSER = {Grain.MINUTE: Grain.QUARTER, Grain.QUARTER: Grain.HOUR, Grain.HOUR: Grain.DAY}
MAX_SERIES_BUCKETS = 5_000
"""A series that could merge more buckets than this (many integrations at a fine grain) moves
to the next coarser grain, with fewer points; one integration always stays below it."""
MINUTE_EDGES_UP_TO = timedelta(hours=6)
"""Windows up to this long resolve their edges to the minute; longer ones to the hour."""
BY_CHOICES = ("volume", "errors", "p95")

_ANY_ENDPOINT = object()  # top_endpoints: every real endpoint, never the "" total rows


@dataclass(slots=True, kw_only=True)
class Summary:
    """Traffic figures for a window (or, as a Point, for one step of a series)."""

    total: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    timeouts: int = 0
    connect_errors: int = 0
    tls_errors: int = 0
    other_errors: int = 0
    s2xx: int = 0
    s3xx: int = 0
    s4xx: int = 0
    s5xx: int = 0
    s401: int = 0
    s403: int = 0
    s429: int = 0
    retries: int = 0
    deprecated: int = 0
    errors: int = 0
    error_rate: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    latency_avg: float | None = None
    latency_min: float | None = None
    latency_max: float | None = None
    ratelimit_remaining_min: int | None = None
    ratelimit_limit: int | None = None


@dataclass(slots=True, kw_only=True)
class Point(Summary):
    """One step of a series; `start` is the UTC start of the step."""

    start: datetime


@dataclass(frozen=True, slots=True)
class Series:
    grain: str
    step: timedelta
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EndpointStat:
    endpoint: str
    total: int
    errors: int
    error_rate: float | None
    p95: float | None
    s401: int
    s403: int
    s429: int
    p50: float | None = None
    p99: float | None = None
    latency_avg: float | None = None
    server_errors: int = 0
    transport_errors: int = 0


# --- Grain and step ------------------------------------------------------------------------


def choose_step(
    start: datetime, end: datetime, *, grain: str | None = None, now: datetime | None = None
) -> tuple[str, timedelta]:
    """Return (bucket grain, step) for a chart of [start, end): ~60–120 points.

    Without `grain`, a grain whose buckets are already pruned at `start` is skipped (a chart
    reaching back 5 days reads hours, since minute buckets live RETAIN_MINUTE_DAYS).
    """
    _check_window(start, end)
    if grain is not None and grain not in GRAIN_SECONDS:
        raise ValueError(f"grain must be one of {', '.join(GRAIN_SECONDS)}, got {grain!r}")
    span = (end - start).total_seconds()
    finest = grain or _finest_kept(start, now or timezone.now())
    candidates = [
        (g, s) for g, s in STEPS if (g == grain if grain else _GRAIN_RANK[g] >= _GRAIN_RANK[finest])
    ]
    for g, seconds in candidates:
        if span / seconds <= MAX_POINTS:
            return g, timedelta(seconds=seconds)
    g, seconds = candidates[-1]
    return g, timedelta(seconds=seconds)


def choose_grain(start: datetime, end: datetime, *, now: datetime | None = None) -> str:
    """Return the bucket grain (a Grain value) a chart of [start, end) should read."""
    return choose_step(start, end, now=now)[0]


def _finest_kept(when: datetime, now: datetime) -> str:
    for grain in GRAINS:
        keep = retain_days(grain)
        if keep is None or when >= now - timedelta(days=keep):
            return grain
    return Grain.DAY


def _check_window(start: datetime, end: datetime) -> None:
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must be timezone-aware datetimes")
    if end <= start:
        raise ValueError("end must come after start")


# --- Public queries ------------------------------------------------------------------------


def series(
    integration_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    *,
    grain: str | None = None,
    step: timedelta | None = None,
    source: str | None = None,
    endpoint: str | None = None,
    now: datetime | None = None,
    percentiles: bool = True,
) -> Series:
    """A time series over the given integrations (None: all), merged into one line.

    percentiles=False leaves p50/p95/p99 None and skips reading the histograms.
    """
    grain, step, starts, accs = _series(
        integration_ids, start, end, grain, step, source, endpoint, now, (), percentiles
    )
    return Series(
        grain, step, [_point(datetime.fromtimestamp(t, UTC), accs.get((t,))) for t in starts]
    )


def series_by_integration(
    integration_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    *,
    grain: str | None = None,
    step: timedelta | None = None,
    source: str | None = None,
    now: datetime | None = None,
    percentiles: bool = False,
) -> dict[int, Series]:
    """One series per integration, from one pass over the buckets.

    Every requested id gets a series (zero points if it had no traffic); with None, every
    integration that had traffic in the range does. p50/p95/p99 stay None unless
    percentiles=True: merging a histogram per integration per point is most of the cost
    (~10x for 50 integrations), and per-integration sparklines draw counts.
    """
    grain, step, starts, accs = _series(
        integration_ids,
        start,
        end,
        grain,
        step,
        source,
        None,
        now,
        ("integration_id",),
        percentiles,
    )
    ids = integration_ids if integration_ids is not None else sorted({k[0] for k in accs})
    stamps = [(t, datetime.fromtimestamp(t, UTC)) for t in starts]  # shared by every line
    return {
        iid: Series(grain, step, [_point(when, accs.get((iid, t))) for t, when in stamps])
        for iid in ids
    }


def summary(
    integration_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    endpoint: str | None = None,
    now: datetime | None = None,
) -> Summary:
    """Totals, error rate and percentiles for the window (see the module notes on edges)."""
    accs = _window(integration_ids, start, end, source, endpoint, now, group=())
    return _summary(accs.get(()))


def summary_by_integration(
    integration_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    now: datetime | None = None,
) -> dict[int, Summary]:
    """summary() for each integration in one pass; ids without traffic get a zero Summary."""
    accs = _window(integration_ids, start, end, source, None, now, group=("integration_id",))
    ids = integration_ids if integration_ids is not None else [k[0] for k in accs]
    return {iid: _summary(accs.get((iid,))) for iid in ids}


def compare(
    integration_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    *,
    shift: timedelta = timedelta(days=1),
    source: str | None = None,
    endpoint: str | None = None,
    now: datetime | None = None,
) -> tuple[Summary, Summary]:
    """(this window, the same window `shift` earlier) for baselines."""
    if shift <= timedelta(0):
        raise ValueError("shift must be positive")
    options = {"source": source, "endpoint": endpoint, "now": now}
    return (
        summary(integration_ids, start, end, **options),
        summary(integration_ids, start - shift, end - shift, **options),
    )


def top_endpoints(
    integration_id: int,
    start: datetime,
    end: datetime,
    *,
    by: str = "volume",
    limit: int = 10,
    source: str | None = None,
    now: datetime | None = None,
) -> list[EndpointStat]:
    """The endpoints of one integration ranked by volume, errors or p95 latency."""
    if by not in BY_CHOICES:
        raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    accs = _window([integration_id], start, end, source, _ANY_ENDPOINT, now, group=("endpoint",))
    stats = []
    for (endpoint,), acc in accs.items():
        s = _summary(acc)
        stats.append(
            EndpointStat(
                endpoint=endpoint,
                total=s.total,
                errors=s.errors,
                error_rate=s.error_rate,
                p95=s.p95,
                s401=s.s401,
                s403=s.s403,
                s429=s.s429,
                p50=s.p50,
                p99=s.p99,
                latency_avg=s.latency_avg,
                server_errors=s.server_errors,
                transport_errors=s.transport_errors,
            )
        )
    if by == "volume":
        stats.sort(key=lambda e: (-e.total, e.endpoint))
    elif by == "errors":
        stats.sort(key=lambda e: (-e.errors, -e.total, e.endpoint))
    else:
        stats.sort(key=lambda e: (e.p95 is None, -(e.p95 or 0), e.endpoint))
    return stats[:limit]


# --- Counter series ------------------------------------------------------------------------
# Charts that draw counts (sparklines, 401/403 lines, probe runs, verdicts) need no
# percentiles, and on the overview (one sparkline per integration) merging histograms was
# most of the page's time. These read the same "" (all endpoints) rows, summed per step in
# SQL: one query, bounded by integrations × buckets in the window.

COUNT_FIELDS = TOTAL_COUNTERS  # held by the index bucket_all_endpoints: index-only reads


@dataclass(slots=True)
class Count:
    """One step of a counter series: the counter fields of Point, nothing else.

    (Point has thirty fields; thousands of them cost more than the query.)
    """

    start: datetime
    total: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    s401: int = 0
    s403: int = 0
    s429: int = 0


def counts_by_integration(
    integration_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    source: str,
    grain: str,
    step: timedelta,
) -> dict[int, Series]:
    """Per integration, a Series of Count points, one per step (steps aligned like series)."""
    step_s = int(step.total_seconds())
    first = int(start.timestamp()) // step_s * step_s
    last = -(-int(end.timestamp()) // step_s) * step_s
    starts = range(first, last, step_s)
    found: dict[tuple[int, int], tuple] = {}
    if integration_ids:
        sums = ", ".join(f"SUM({f})" for f in COUNT_FIELDS)
        sql = (
            f"SELECT integration_id, {_step_sql(step_s)} AS slot, {sums} "  # noqa: S608
            f"FROM {_TABLE} WHERE {_ids_sql(integration_ids)} AND grain = %s "
            f"AND start >= %s AND start < %s AND source = %s AND {_ALL_ENDPOINTS_SQL} "
            "GROUP BY integration_id, slot"
        )
        params = [*integration_ids, grain, _adapt(first), _adapt_at(end), source]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for iid, slot, *values in cursor.fetchall():
                found[(iid, int(slot))] = values
    stamps = [datetime.fromtimestamp(t, UTC) for t in starts]
    out = {}
    for iid in integration_ids:
        points = []
        for t, when in zip(starts, stamps, strict=True):
            values = found.get((iid, t))
            points.append(Count(when, *values) if values else Count(when))
        out[iid] = Series(grain, step, points)
    return out


def window_totals(
    integration_ids: Sequence[int], start: datetime, end: datetime, *, source: str
) -> dict[int, tuple[int, float]]:
    """(calls, error rate) per integration from the minute buckets starting in [start, end)."""
    out = dict.fromkeys(integration_ids, (0, 0.0))
    if not integration_ids:
        return out
    sql = (
        f"SELECT integration_id, SUM(total), SUM(ok) FROM {_TABLE} "  # noqa: S608
        f"WHERE {_ids_sql(integration_ids)} AND grain = %s "
        f"AND start >= %s AND start < %s AND source = %s AND {_ALL_ENDPOINTS_SQL} "
        "GROUP BY integration_id"
    )
    params = [*integration_ids, Grain.MINUTE, _adapt_at(start), _adapt_at(end)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, source])
        for iid, total, ok in cursor.fetchall():
            out[iid] = (total, (total - ok) / total if total else 0.0)
    return out


def window_counts(
    integration_ids: Sequence[int], start: datetime, end: datetime, *, source: str
) -> dict[int, Count]:
    """Count fields per integration summed over the minute buckets starting in [start, end).

    window_totals with the status counters kept apart: a webhook verdict needs the 401s
    (failed verification) rather than every non-2xx answer. One query; `Count.start` is
    `start`. Integrations without traffic get a zero Count.
    """
    out = {iid: Count(start) for iid in integration_ids}
    if not integration_ids:
        return out
    sums = ", ".join(f"SUM({f})" for f in COUNT_FIELDS)
    sql = (
        f"SELECT integration_id, {sums} FROM {_TABLE} "  # noqa: S608
        f"WHERE {_ids_sql(integration_ids)} AND grain = %s "
        f"AND start >= %s AND start < %s AND source = %s AND {_ALL_ENDPOINTS_SQL} "
        "GROUP BY integration_id"
    )
    params = [*integration_ids, Grain.MINUTE, _adapt_at(start), _adapt_at(end)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, source])
        for iid, *values in cursor.fetchall():
            out[iid] = Count(start, *(v or 0 for v in values))
    return out


# --- Samples of raw rows --------------------------------------------------------------------


@dataclass
class ErrorGroup:
    """Failures in a window sharing a parsed error code (or a status / outcome without one)."""

    code: str
    count: int = 0
    last_seen: datetime | None = None
    message: str = ""
    statuses: Counter = field(default_factory=Counter)
    endpoints: Counter = field(default_factory=Counter)
    filter_code: str = ""  # the parsed code itself ("" when grouped by status or outcome)

    # Templates look a Counter's attributes up as keys, so they get plain lists.
    @property
    def status_list(self) -> list[str]:
        return [str(s) for s, _ in self.statuses.most_common()]

    @property
    def endpoint_list(self) -> list[str]:
        return [e for e, _ in self.endpoints.most_common(2)]


def recent_errors(
    integration_id: int, start: datetime, end: datetime, *, scan: int = 500, groups: int = 10
) -> list[ErrorGroup]:
    """The newest `scan` failures in the window, grouped by parsed error code, most first."""
    rows = (
        RequestLog.objects.filter(
            integration_id=integration_id, created__gte=start, created__lt=end
        )
        # Same shape as the partial index reqlog_failures_time's condition.
        .filter(~Q(outcome=Outcome.OK))
        .order_by("-created")
        .values_list(
            "created", "error_code", "error_message", "status", "outcome", "method", "path"
        )[:scan]
    )
    found: dict[str, ErrorGroup] = {}
    outcome_labels = dict(Outcome.choices)
    for created, code, message, status, outcome, method, path in rows:
        key = code or (f"HTTP {status}" if status else outcome_labels.get(outcome, outcome))
        group = found.get(key)
        if group is None:
            group = found[key] = ErrorGroup(code=key, last_seen=created, filter_code=code)
        group.count += 1
        if not group.message and message:
            group.message = message
        group.statuses[status or outcome_labels.get(outcome, outcome)] += 1
        group.endpoints[f"{method} {path}"] += 1
    ordered = sorted(found.values(), key=lambda g: (-g.count, g.code))
    return ordered[:groups]


def recent_error_codes(
    integration_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    scan: int = 2000,
) -> dict[int, Counter]:
    """The newest `scan` failures of these integrations counted by parsed error code ("" for
    none), per integration: the verdict names a diagnosis that explains most of them."""
    rows = RequestLog.objects.filter(
        integration_id__in=list(integration_ids), created__gte=start, created__lt=end
    ).filter(~Q(outcome=Outcome.OK))  # the partial index reqlog_failures_time's condition
    if source is not None:
        rows = rows.filter(source=source)
    out: dict[int, Counter] = {}
    for iid, code in rows.order_by("-created").values_list("integration_id", "error_code")[:scan]:
        out.setdefault(iid, Counter())[code] += 1
    return out


@dataclass
class Deprecation:
    """An endpoint answered with Deprecation/Sunset headers, and what its latest answer said."""

    endpoint: str
    responses: int
    last_seen: datetime
    sunset_at: datetime | None = None
    deprecation_at: datetime | None = None
    link: str = ""


def deprecations(
    integration_id: int, since: datetime, *, endpoint: str | None = None, limit: int = 5
) -> list[Deprecation]:
    """Endpoints of one integration answered as deprecated since `since`, soonest sunset first.

    From hour buckets (so the hour holding `since` counts in full); each endpoint's sunset
    date and link come from its newest such raw row inside its latest such hour: one bounded,
    indexed read per endpoint. `endpoint` narrows it to that one ("METHOD /path").
    """
    found = MetricBucket.objects.filter(
        integration_id=integration_id,
        grain=Grain.HOUR,
        start__gte=since - timedelta(hours=1),
        deprecated__gt=0,
    )
    if endpoint is None:
        found = found.exclude(endpoint=ALL_ENDPOINTS)
    else:
        found = found.filter(endpoint=endpoint)
    found = (
        found.values("endpoint")
        .annotate(n=Sum("deprecated"), last=Max("start"))
        .order_by("-last")[:limit]
    )
    out = []
    for row in found:
        method, path = split_endpoint(row["endpoint"])
        hour = row["last"]
        raw = (
            RequestLog.objects.filter(
                integration_id=integration_id,
                created__gte=hour,
                created__lt=hour + timedelta(hours=1),
                method=method,
                path=path,
            )
            .filter(Q(deprecated=True) | Q(sunset_at__isnull=False))
            .order_by("-created")
            .values("sunset_at", "deprecation_at", "deprecation_link", "created")
            .first()
        ) or {}
        out.append(
            Deprecation(
                endpoint=row["endpoint"],
                responses=row["n"],
                last_seen=raw.get("created") or hour,
                sunset_at=raw.get("sunset_at"),
                deprecation_at=raw.get("deprecation_at"),
                link=raw.get("deprecation_link", ""),
            )
        )
    # Soonest sunset first: that is the deadline to act on.
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda d: (d.sunset_at or far, d.endpoint))


@dataclass(frozen=True)
class AnnouncedVersion:
    """One API version the provider's responses announced, as seen in the newest rows."""

    version: str
    responses: int
    last_seen: datetime


VERSION_SAMPLE = 500


def announced_versions(
    integration_id: int, since: datetime, *, sample: int = VERSION_SAMPLE
) -> list[AnnouncedVersion]:
    """API versions announced by one integration's responses since `since`, newest first.

    Buckets do not keep the version, so this reads the newest `sample` raw rows that carry
    one (the integration-time index, walked backwards): the cost is bounded by `sample`,
    not by traffic, and the newest rows are the ones that say what the provider runs now.
    """
    rows = (
        RequestLog.objects.filter(integration_id=integration_id, created__gte=since)
        .exclude(api_version="")
        .order_by("-created")
        .values_list("api_version", "created")[:sample]
    )
    seen: dict[str, list] = {}
    for version, created in rows:
        entry = seen.setdefault(version, [0, created])
        entry[0] += 1
    found = [AnnouncedVersion(v, n, last) for v, (n, last) in seen.items()]
    return sorted(found, key=lambda a: a.last_seen, reverse=True)


# --- Window cover --------------------------------------------------------------------------

Piece = tuple[str, int, int]  # grain, first bucket start, end (epoch seconds)


def cover(start: datetime, end: datetime, now: datetime | None = None) -> list[Piece]:
    """Split a window into (grain, from, to) pieces, finest grains at the edges.

    Public for tests and the benchmark, which check the pieces against raw rows.
    """
    _check_window(start, end)
    now_s = _ceil(_seconds_up(now or timezone.now()), 60)
    s, e = _ceil(_seconds_up(start), 60), _ceil(_seconds_up(end), 60)
    if e - s > MINUTE_EDGES_UP_TO.total_seconds():
        # Over a long window an hour at the edge hardly matters, while the edge minutes of
        # many integrations are most of the buckets to read.
        s, e = _ceil(s, 3600), _ceil(e, 3600)
    if e >= now_s:
        # Nothing is stored past now, so the current hour and day buckets can stand in for
        # the tail; this keeps a 24 h window ending now to ~1 day, ~24 hours and ~60 minutes.
        e = _ceil(e, 86400)
    pieces: list[Piece] = []
    hs, he = _ceil(s, 3600), e // 3600 * 3600
    if hs >= he:
        pieces.append((Grain.MINUTE, s, e))
    else:
        pieces += [(Grain.MINUTE, s, hs), (Grain.MINUTE, he, e)]
        ds, de = _ceil(hs, 86400), he // 86400 * 86400
        if ds >= de:
            pieces.append((Grain.HOUR, hs, he))
        else:
            pieces += [(Grain.HOUR, hs, ds), (Grain.HOUR, de, he), (Grain.DAY, ds, de)]
    keep = settings.UPSTREAM
    minute_kept = now_s - keep["RETAIN_MINUTE_DAYS"] * 86400
    hour_kept = now_s - keep["RETAIN_HOUR_DAYS"] * 86400
    out = []
    for grain, lo, hi in pieces:
        if lo >= hi:
            continue
        # Pruned grains fall back to the next coarser one; the window rule (a bucket counts
        # when it starts inside) then rounds that edge up to the coarser boundary.
        if grain == Grain.MINUTE and lo < minute_kept:
            grain = Grain.HOUR
        if grain == Grain.HOUR and lo < hour_kept:
            grain = Grain.DAY
        out.append((grain, lo, hi))
    return out


def _ceil(seconds: int, unit: int) -> int:
    return -(-seconds // unit) * unit


def _seconds_up(when: datetime) -> int:
    # Bucket starts are whole seconds, so "start < end" equals "start < ceil(end)".
    return math.ceil(when.timestamp())


def _step_starts(start: datetime, end: datetime, step: timedelta) -> list[int]:
    step_s = int(step.total_seconds())
    first = int(start.timestamp()) // step_s * step_s
    return list(range(first, _seconds_up(end), step_s))


# --- Bucket reads ------------------------------------------------------------------------------
# SQL here is assembled from this module's column names and placeholders; values are always
# query parameters, but for the constant "" of the all-endpoints rows (_ALL_ENDPOINTS_SQL).

_TABLE = MetricBucket._meta.db_table
# The "" rows' condition as a literal, the very condition of the partial index
# bucket_all_endpoints: a planner can only pick a partial index when it sees the value
# (SQLite and PostgreSQL alike, for a prepared statement with a bound parameter).
_ALL_ENDPOINTS_SQL = f"endpoint = '{ALL_ENDPOINTS}'"
_N = len(COUNTERS)
# The tightest quota (the lowest share of its limit left, as the rollup merges them; a
# request or a token budget) and its limit, as one integer per row so the database takes
# the minimum: the share in 2**-30 steps above the limit, from which the remaining count
# comes back exactly (to within 1 for limits past 2**30). A quota with no limit known sorts
# after every share, by its remaining count, unless it is spent.
_RL_SHIFT = 1 << 32
_RL_NONE = _RL_SHIFT - 1
_RL_SCALE = 1 << 30
_RL_KEY = (
    "CASE WHEN ratelimit_remaining_min IS NULL THEN NULL"
    " WHEN ratelimit_limit > 0 AND ratelimit_remaining_min < ratelimit_limit THEN"
    f" CAST(ratelimit_remaining_min AS BIGINT) * {_RL_SCALE} / ratelimit_limit * {_RL_SHIFT}"
    " + ratelimit_limit"
    f" WHEN ratelimit_limit > 0 THEN CAST({_RL_SCALE} AS BIGINT) * {_RL_SHIFT} + ratelimit_limit"
    f" WHEN ratelimit_remaining_min = 0 THEN {_RL_NONE}"
    f" ELSE CAST({_RL_SCALE + 1} AS BIGINT) * {_RL_SHIFT} + ratelimit_remaining_min END"
)
_AGGREGATES = ", ".join(
    [f"SUM({c})" for c in COUNTERS]
    + [
        "SUM(latency_sum)",
        "MIN(latency_min)",
        "MAX(latency_max)",
        f"MIN({_RL_KEY})",
    ]
)


def _quota(key: int) -> tuple[int, int | None]:
    """(remaining, limit) from a ``_RL_KEY`` value."""
    share, low = divmod(int(key), _RL_SHIFT)
    if share > _RL_SCALE:
        return low, None
    if share == 0 and low == _RL_NONE:
        return 0, None
    return -(-share * low // _RL_SCALE), low


def _read(
    pieces: Iterable[Piece],
    integration_ids: Sequence[int] | None,
    source: str | None,
    endpoint: object,
    group: tuple[str, ...],
    percentiles: bool = True,
    now_s: int | None = None,
) -> dict[tuple, list]:
    """Aggregate the buckets of the pieces per group: counters, latency, rate limit, blobs.

    Counters are summed by the database; histograms can only be merged here, so the same
    query hands back each group's blobs, hex-encoded and comma-joined (reading the rows a
    second time for them cost as much as the sums), unless the caller needs no percentiles.
    With `now_s`, a piece reaching into the current period of its grain comes back in two
    rows per group, the closed periods apart from the open one, so that the closed part's
    blobs are the same string render after render (see _percentiles).
    """
    accs: dict[tuple, list] = {}
    if integration_ids is not None and not integration_ids:
        return accs
    base, base_params = _filters(integration_ids, source, endpoint)
    width = len(group)
    aggregates = f"{_AGGREGATES}, {_hex_blobs_sql()}" if percentiles else _AGGREGATES
    with connection.cursor() as cursor:
        for grain, lo, hi in pieces:
            where = " AND ".join(["grain = %s", "start >= %s", "start < %s", *base])
            params = [grain, _adapt(lo), _adapt(hi), *base_params]
            columns, grouping = list(group), list(group)
            if percentiles and now_s is not None:
                current = now_s // GRAIN_SECONDS[grain] * GRAIN_SECONDS[grain]
                if lo < current < hi:
                    # Grouped by its position: the expression holds a parameter.
                    columns.append("CASE WHEN start >= %s THEN 1 ELSE 0 END")
                    grouping.append(str(len(columns)))
                    params = [_adapt(current), *params]
            select = ", ".join(columns) + ", " if columns else ""
            group_by = f" GROUP BY {', '.join(grouping)}" if grouping else ""
            sql = f"SELECT {select}{aggregates} FROM {_TABLE} WHERE {where}{group_by}"  # noqa: S608
            cursor.execute(sql, params)
            split = len(columns) > width
            for row in cursor.fetchall():
                if split:
                    row = row[:width] + row[width + 1 :]
                if row[width] is None:  # no rows at all (only without GROUP BY)
                    continue
                key = row[:width]
                acc = accs.get(key)
                if acc is None:
                    # The first piece for a group (a series reads only one): take its sums
                    # as they are, adding them to zeros would give the same values.
                    acc = accs[key] = list(row[width : width + _N + 4])
                    acc[_N] = 0.0 + (acc[_N] or 0.0)
                    acc.append([])
                else:
                    _add(acc, row[width:])
                if percentiles:
                    acc[-1].append(row[-1])
    return accs


def _hex_blobs_sql() -> str:
    """Aggregate: the group's histogram blobs as hex, comma-separated (see _percentiles)."""
    if connection.vendor == "postgresql":
        return "string_agg(encode(histogram, 'hex'), ',')"
    return "group_concat(hex(histogram), ',')"


def _percentiles(joined: list[str], lo: float | None, hi: float | None) -> dict:
    """QUANTILES of the exact merge of _hex_blobs_sql() results (one string per piece read).

    Several blobs in one string are merged once and the merge remembered by the string's
    digest: a 30-day overview merges ~50 blobs per integration, and all but the current
    day's and hour's are the same from one render to the next (_read keeps those apart),
    so a repeated page decodes a few blobs instead of thousands. A changed bucket changes
    the string, so nothing stale is ever returned.
    """
    single: list[bytes] = []
    merged: list[Histogram] = []
    for hexes in joined:
        if not hexes:
            continue
        if "," not in hexes:
            single.append(bytes.fromhex(hexes))
            continue
        key = hashlib.blake2b(hexes.encode(), digest_size=16).digest()
        with _MERGED_LOCK:
            hist = _MERGED.get(key)
            if hist is not None:
                _MERGED.move_to_end(key)
        if hist is None:
            hist = merge_encoded(bytes.fromhex(h) for h in hexes.split(","))
            with _MERGED_LOCK:
                _MERGED[key] = hist
                if len(_MERGED) > MERGED_CACHE_SIZE:
                    _MERGED.popitem(last=False)
        merged.append(hist)
    if not merged:
        return percentiles_encoded(single, QUANTILES, lo=lo, hi=hi) if single else {}
    if len(merged) == 1 and not single:
        return merged[0].percentiles(QUANTILES, lo, hi)  # remembered ones are never changed
    total = merge_encoded(single) if single else merged.pop().copy()
    for hist in merged:
        total.merge(hist)
    return total.percentiles(QUANTILES, lo, hi)


MERGED_CACHE_SIZE = 2048
"""Merges remembered per process (a few KB to ~30 KB each): a few per integration and range."""
_MERGED: OrderedDict[bytes, Histogram] = OrderedDict()
_MERGED_LOCK = threading.Lock()


def forget_merged() -> None:
    """Empty the memo of merges (the benchmark times a cold page with it)."""
    with _MERGED_LOCK:
        _MERGED.clear()


def _filters(
    integration_ids: Sequence[int] | None, source: str | None, endpoint: object
) -> tuple[list[str], list]:
    """WHERE conditions (and their parameters) besides grain and time."""
    base, params = [], []
    if integration_ids is not None:
        base.append(_ids_sql(integration_ids))
        params += list(integration_ids)
    if endpoint is _ANY_ENDPOINT:
        base.append("endpoint <> %s")
        params.append(ALL_ENDPOINTS)
    elif endpoint is None:
        base.append(_ALL_ENDPOINTS_SQL)
    else:
        base.append("endpoint = %s")
        params.append(endpoint)
    if source is not None:
        base.append("source = %s")
        params.append(source)
    return base, params


def _add(acc: list, sums: Sequence) -> None:
    for i in range(_N):
        acc[i] += sums[i]
    acc[_N] += sums[_N] or 0.0
    lo, hi, rl = sums[_N + 1], sums[_N + 2], sums[_N + 3]
    if lo is not None and (acc[_N + 1] is None or lo < acc[_N + 1]):
        acc[_N + 1] = lo
    if hi is not None and (acc[_N + 2] is None or hi > acc[_N + 2]):
        acc[_N + 2] = hi
    if rl is not None and (acc[_N + 3] is None or rl < acc[_N + 3]):
        acc[_N + 3] = rl


def _adapt(epoch_s: int):
    return _adapt_at(datetime.fromtimestamp(epoch_s, UTC))


def _adapt_at(when: datetime):
    return connection.ops.adapt_datetimefield_value(when)


def _ids_sql(integration_ids: Sequence[int]) -> str:
    return f"integration_id IN ({', '.join(['%s'] * len(integration_ids))})"


def _step_sql(step_s: int) -> str:
    """SQL for the start of the step (epoch seconds, a multiple of step_s) holding `start`."""
    if connection.vendor == "postgresql":
        return f"(CAST(EXTRACT(EPOCH FROM start) AS BIGINT) / {step_s} * {step_s})"
    # julianday() is several times cheaper than strftime('%s') per row; bucket starts are
    # whole seconds, so rounding the day fraction back to seconds is exact.
    return f"(CAST((julianday(start) - 2440587.5) * 86400 + 0.5 AS INTEGER) / {step_s} * {step_s})"


def _figures(acc: list | None) -> dict:
    if acc is None or not acc[0]:
        return {}
    counts = dict(zip(COUNTERS, acc[:_N], strict=True))
    total = counts["total"]
    errors = total - counts["ok"]
    lo, hi, rl = acc[_N + 1], acc[_N + 2], acc[_N + 3]
    p = _percentiles(acc[-1], lo, hi)
    remaining = limit = None
    if rl is not None:
        remaining, limit = _quota(rl)
    return {
        **counts,
        "transport_errors": counts["timeouts"]
        + counts["connect_errors"]
        + counts["tls_errors"]
        + counts["other_errors"],
        "errors": errors,
        "error_rate": errors / total,
        "p50": p.get(50),
        "p95": p.get(95),
        "p99": p.get(99),
        "latency_avg": acc[_N] / total,
        "latency_min": lo,
        "latency_max": hi,
        "ratelimit_remaining_min": remaining,
        "ratelimit_limit": limit,
    }


def _summary(acc: list | None) -> Summary:
    return Summary(**_figures(acc))


def _point(start: datetime, acc: list | None) -> Point:
    return Point(start=start, **_figures(acc))


def _window(integration_ids, start, end, source, endpoint, now, *, group):
    now_s = _seconds_up(now or timezone.now())
    pieces = cover(start, end, now)
    return _read(pieces, integration_ids, source, endpoint, group, now_s=now_s)


def _series(integration_ids, start, end, grain, step, source, endpoint, now, group, percentiles):
    """Return (grain, step, step starts, accumulators keyed by group with step starts)."""
    if step is None and grain is None:
        grain, step = choose_step(start, end, now=now)
        # Many integrations at a fine grain mean many histograms to merge in Python; past
        # the budget a coarser grain answers in time, with fewer points. The estimate
        # assumes every integration and source had traffic in every bucket.
        lines = len(integration_ids) if integration_ids is not None else None
        lines = (lines if lines is not None else Integration.objects.count()) * (
            1 if source else len(Source.values)
        )
        span = (end - start).total_seconds()
        while grain != Grain.DAY and lines * span / GRAIN_SECONDS[grain] > MAX_SERIES_BUCKETS:
            grain, step = choose_step(start, end, grain=_COARSER[grain], now=now)
    elif step is None:
        grain, step = choose_step(start, end, grain=grain, now=now)
    else:
        _check_window(start, end)
        grain = grain or choose_step(start, end, now=now)[0]
        if grain not in GRAIN_SECONDS:
            raise ValueError(f"grain must be one of {', '.join(GRAIN_SECONDS)}, got {grain!r}")
        if step <= timedelta(0) or step.total_seconds() % GRAIN_SECONDS[grain]:
            raise ValueError(f"step must be a positive multiple of one {grain}")
    starts = _step_starts(start, end, step)
    # Buckets are summed per step by the database: fewer rows for Python to add up.
    slot = _step_sql(int(step.total_seconds()))
    group = (*group, slot)
    piece = (grain, starts[0], _seconds_up(end))
    accs = _read([piece], integration_ids, source, endpoint, group, percentiles)
    return grain, step, starts, accs
