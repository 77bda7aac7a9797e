"""What one evaluation cycle reads: bucket totals, histograms, quotas, probe state, failed sign-ins.

Reads are grouped: one query per distinct window over the metric buckets' all-endpoint rows
(all integrations at once; latency and rate-limit windows add one each), one for the hour
buckets behind the baselines, one for probe state, two for failed sign-ins in the audit log.
Rules are then checked in Python against this snapshot, so the cost grows with the number of
windows, not of rules. Per-endpoint rows are read only for a rule that fires (its top
endpoints) and for deprecations.

Baselines (failed-auth spikes, failed sign-ins, traffic stopped) come from hour buckets:
the *same hour of day on each of the previous 7 days*, median taken, and — for the spike
detectors only — also the median of the previous 24 hours, whichever is higher, scaled
to the rule's window. The median ignores a past burst or outage; the 24-hour term lets a
new steady level of background 401s stop counting as a spike within a day. Hours before
the integration was created are left out rather than counted as zero.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import IntegerField, Q, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, TruncHour

from monitoring import audit
from monitoring.histogram import Histogram, merge_encoded
from monitoring.models import (
    ALL_ENDPOINTS,
    AuditLog,
    Grain,
    Integration,
    MetricBucket,
    Probe,
    Source,
)

# Windows longer than this read hour buckets (minute buckets are kept only a few days).
HOUR_GRAIN_FROM_MIN = 180

_COUNTERS = (
    "total", "ok", "client_errors", "server_errors", "timeouts", "connect_errors",
    "tls_errors", "other_errors", "s401", "s403", "s429", "deprecated", "latency_sum",
)  # fmt: skip

# A throttled sign-in's audit row stands for `after.attempts` refused attempts
# (monitoring.throttle writes one row per burst, not per attempt); every other row is one.
_ATTEMPTS = Sum(Coalesce(Cast(KT("after__attempts"), IntegerField()), Value(1)))


class Counts:
    """Summed bucket counters of one integration (or one of its endpoints) over a window."""

    __slots__ = (*_COUNTERS, "calls")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, values: dict) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + (values.get(name) or 0))

    @property
    def transport_errors(self) -> int:
        return self.timeouts + self.connect_errors + self.tls_errors + self.other_errors

    def errors(self, include_4xx: bool = False) -> int:
        extra = self.client_errors if include_4xx else 0
        return self.server_errors + self.transport_errors + extra


# Annotation names may not clash with the model's fields, hence the prefix.
_SUMS = {f"n_{name}": Sum(name) for name in _COUNTERS} | {
    "n_calls": Sum("total", filter=~Q(source=Source.PROBE))
}


def counts_of(row: dict) -> Counts:
    """Counts from one aggregate row whose sums are named n_<counter> (as `_SUMS` names them)."""
    counts = Counts()
    counts.add({k[2:]: v for k, v in row.items() if k.startswith("n_")})
    return counts


@dataclass
class ProbeView:
    name: str
    state: str
    since: dt.datetime | None
    reason: str
    message: str
    cert_days_left: float | None


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


class BucketData:
    """Everything one evaluation cycle reads, fetched lazily, once per window.

    The benchmark subclasses this to compute the same figures from the raw request log.
    """

    def __init__(self, now: dt.datetime, integrations: dict[int, Integration]) -> None:
        self.now = now
        self.integrations = integrations
        self.minute = now.replace(second=0, microsecond=0)
        self.hour = _hour(now)
        self._windows: dict[int, dict[int, Counts]] = {}
        self._endpoints: dict[tuple[int, int], dict[str, Counts]] = {}
        self._latency: dict[int, dict[int, tuple[Histogram, float | None, float | None]]] = {}
        self._ratelimit: dict[int, dict[int, list[tuple[dt.datetime, int, int]]]] = {}
        self._hourly: dict[int, dict[dt.datetime, tuple[int, int]]] | None = None
        self._probes: dict[int, list[ProbeView]] | None = None
        self._signins: dict[int, dict[str, int]] = {}
        self._signin_hourly: dict[str, dict[dt.datetime, int]] | None = None

    # Time ranges ------------------------------------------------------------------------

    def bounds(self, minutes: int) -> tuple[str, dt.datetime]:
        """The grain and first bucket start of a window of `minutes` ending now.

        Minute windows hold exactly `minutes` buckets, the current (partial) one included;
        long windows use hour buckets and so may start up to 59 minutes earlier.
        """
        if minutes > HOUR_GRAIN_FROM_MIN:
            return Grain.HOUR, _hour(self.now - dt.timedelta(minutes=minutes))
        return Grain.MINUTE, self.minute - dt.timedelta(minutes=minutes - 1)

    def baseline_hours(self) -> list[dt.datetime]:
        """Hour starts behind the baselines: the same hour on each of the last 7 days, and
        each of the last 24 hours (all before the current hour)."""
        same_hour = [self.hour - dt.timedelta(days=d) for d in range(1, 8)]
        trailing = [self.hour - dt.timedelta(hours=h) for h in range(1, 25)]
        return sorted(set(same_hour + trailing))

    # Queries (overridden by the raw-table benchmark peer) -----------------------------

    def _buckets(self, minutes: int):
        grain, since = self.bounds(minutes)
        buckets = MetricBucket.objects.filter(grain=grain, start__gte=since, start__lte=self.now)
        # Webhook deliveries are the provider's traffic, not our calls: their 401s, lag and
        # volume have their own rules (monitoring.alerts.webhook_rules).
        return buckets.exclude(source=Source.WEBHOOK).order_by()

    def _for_all(self, buckets):
        # Naming the integrations lets the database seek the bucket key index once per
        # integration instead of reading every bucket of the period.
        if len(self.integrations) <= 500:
            return buckets.filter(integration_id__in=list(self.integrations))
        return buckets

    def window(self, minutes: int) -> dict[int, Counts]:
        """Totals per integration over the window, from the all-endpoint rows; one query."""
        if minutes not in self._windows:
            rows = (
                self._for_all(self._buckets(minutes))
                .filter(endpoint=ALL_ENDPOINTS)
                .values("integration_id")
                .annotate(**_SUMS)
            )
            self._windows[minutes] = {row["integration_id"]: counts_of(row) for row in rows}
        return self._windows[minutes]

    def endpoints(self, minutes: int, integration_id: int) -> dict[str, Counts]:
        """Per-endpoint counters of one integration; read only when a finding needs them.

        A short (minute-grain) window is read for every integration at once the first time
        any finding asks: one grouped query costs about what one integration's does, and a
        cycle with many findings asked once per integration. Long windows read hour buckets
        of one integration at a time (all of them would be hundreds of rows per finding).
        """
        key = (minutes, integration_id)
        if key not in self._endpoints:
            grain, _ = self.bounds(minutes)
            buckets = self._buckets(minutes).exclude(endpoint=ALL_ENDPOINTS)
            if grain == Grain.MINUTE and integration_id in self.integrations:
                rows = self._for_all(buckets).values("integration_id", "endpoint").annotate(**_SUMS)
                found: dict[int, dict[str, Counts]] = {iid: {} for iid in self.integrations}
                for row in rows:
                    found.setdefault(row["integration_id"], {})[row["endpoint"]] = counts_of(row)
                for iid, counts in found.items():
                    self._endpoints.setdefault((minutes, iid), counts)
            else:
                rows = (
                    buckets.filter(integration_id=integration_id)
                    .values("endpoint")
                    .annotate(**_SUMS)
                )
                self._endpoints[key] = {row["endpoint"]: counts_of(row) for row in rows}
        return self._endpoints[key]

    def latency(
        self, minutes: int, integration_id: int
    ) -> tuple[Histogram, float | None, float | None]:
        """The merged latency histogram of one integration over the window, with min and max.

        Histograms of every integration in the window are read in one query, the first time
        any latency rule with this window asks.
        """
        if minutes not in self._latency:
            rows = (
                self._for_all(self._buckets(minutes))
                .filter(endpoint=ALL_ENDPOINTS, total__gt=0)
                .values_list("integration_id", "histogram", "latency_min", "latency_max")
            )
            blobs: dict[int, list] = defaultdict(list)
            lows: dict[int, float] = {}
            highs: dict[int, float] = {}
            for iid, blob, low, high in rows.iterator(chunk_size=5000):
                blobs[iid].append(blob)
                if low is not None and (iid not in lows or low < lows[iid]):
                    lows[iid] = low
                if high is not None and (iid not in highs or high > highs[iid]):
                    highs[iid] = high
            self._latency[minutes] = {
                iid: (merge_encoded(b), lows.get(iid), highs.get(iid)) for iid, b in blobs.items()
            }
        return self._latency[minutes].get(integration_id, (Histogram(), None, None))

    def ratelimit(self, minutes: int) -> dict[int, list[tuple[dt.datetime, int, int]]]:
        """Per integration, per minute: the tightest (remaining, limit) seen, oldest first."""
        if minutes not in self._ratelimit:
            rows = (
                self._for_all(self._buckets(minutes))
                .filter(
                    endpoint=ALL_ENDPOINTS,
                    ratelimit_limit__gt=0,
                    ratelimit_remaining_min__isnull=False,
                )
                .values_list(
                    "integration_id", "start", "ratelimit_remaining_min", "ratelimit_limit"
                )
            )
            self._ratelimit[minutes] = tightest(rows)
        return self._ratelimit[minutes]

    def hourly(self) -> dict[int, dict[dt.datetime, tuple[int, int]]]:
        """Per integration and baseline hour: (401 + 403, calls other than probes)."""
        if self._hourly is None:
            rows = (
                self._for_all(MetricBucket.objects.order_by())
                .filter(grain=Grain.HOUR, start__in=self.baseline_hours(), endpoint=ALL_ENDPOINTS)
                .exclude(source=Source.WEBHOOK)
                .values("integration_id", "start")
                .annotate(
                    auth=Sum("s401") + Sum("s403"),
                    calls=Sum("total", filter=~Q(source=Source.PROBE)),
                )
            )
            result: dict[int, dict[dt.datetime, tuple[int, int]]] = defaultdict(dict)
            for row in rows:
                result[row["integration_id"]][row["start"]] = (row["auth"] or 0, row["calls"] or 0)
            self._hourly = dict(result)
        return self._hourly

    def probes(self) -> dict[int, list[ProbeView]]:
        if self._probes is None:
            result: dict[int, list[ProbeView]] = defaultdict(list)
            rows = Probe.objects.filter(enabled=True).values_list(
                "integration_id", "name", "state", "state_changed_at", "last_reason",
                "last_message", "cert_days_left",
            )  # fmt: skip
            for iid, *rest in rows:
                result[iid].append(ProbeView(*rest))
            self._probes = dict(result)
        return self._probes

    def signins(self, minutes: int) -> dict[str, int]:
        """Failed sign-ins to Upstream per client address over the window."""
        if minutes not in self._signins:
            since = self.now - dt.timedelta(minutes=minutes)
            rows = (
                AuditLog.objects.filter(
                    action=audit.Actions.SIGNIN_FAILED, created__gt=since, created__lte=self.now
                )
                .order_by()
                .values("ip")
                .annotate(n=_ATTEMPTS)
            )
            self._signins[minutes] = {row["ip"] or "": row["n"] for row in rows}
        return self._signins[minutes]

    def signin_hourly(self) -> dict[str, dict[dt.datetime, int]]:
        """Failed sign-ins per client address ("" = all) and baseline hour."""
        if self._signin_hourly is None:
            hours = self.baseline_hours()
            rows = (
                AuditLog.objects.filter(
                    action=audit.Actions.SIGNIN_FAILED, created__gte=hours[0], created__lt=self.hour
                )
                .order_by()
                .annotate(hour=TruncHour("created"))
                .values("hour", "ip")
                .annotate(n=_ATTEMPTS)
            )
            result: dict[str, dict[dt.datetime, int]] = defaultdict(lambda: defaultdict(int))
            for row in rows:
                result[row["ip"] or ""][row["hour"]] += row["n"]
                result["*"][row["hour"]] += row["n"]
            self._signin_hourly = result
        return self._signin_hourly

    # Derived figures ------------------------------------------------------------------

    def baseline(
        self, series: dict[dt.datetime, int], *, since: dt.datetime | None, trailing: bool
    ) -> tuple[float, int]:
        """(expected count per hour, days of same-hour history behind it); see the module doc."""
        start = _hour(since) if since else None
        same = [
            series.get(h, 0)
            for h in (self.hour - dt.timedelta(days=d) for d in range(1, 8))
            if start is None or h >= start
        ]
        expected = statistics.median(same) if same else 0.0
        if trailing:
            recent = [
                series.get(h, 0)
                for h in (self.hour - dt.timedelta(hours=k) for k in range(1, 25))
                if start is None or h >= start
            ]
            if recent:
                expected = max(expected, statistics.median(recent))
        return float(expected), len(same)


def tightest(rows: Iterable[tuple]) -> dict[int, list[tuple[dt.datetime, int, int]]]:
    """(integration, minute, remaining, limit) rows → per integration the lowest share left in
    each minute, oldest first."""
    lowest: dict[tuple[int, dt.datetime], tuple[int, int]] = {}
    for iid, start, remaining, limit in rows:
        key = (iid, start)
        seen = lowest.get(key)
        if seen is None or remaining * seen[1] < seen[0] * limit:
            lowest[key] = (remaining, limit)
    result: dict[int, list[tuple[dt.datetime, int, int]]] = defaultdict(list)
    for (iid, start), (remaining, limit) in sorted(lowest.items()):
        result[iid].append((start, remaining, limit))
    return dict(result)
