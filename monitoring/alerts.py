"""Alert rules: what each kind checks, the evaluator, the alert lifecycle and operators' actions.

How an evaluation cycle works (every minute, `evaluate()`):

1. Read: one grouped query per distinct window over the metric buckets' all-endpoint rows
   (all integrations at once; latency and rate-limit windows add one each), one for the
   hour buckets behind the baselines, one for probe state, two for failed sign-ins in the
   audit log. Rules are then checked in Python against that snapshot, so the cost grows with
   the number of windows, not of rules. Per-endpoint rows are read only for a rule that
   fires (its top endpoints) and for deprecations; a new deprecation alert makes the one
   raw-log read, for the sunset date, which buckets do not keep.
2. Write, in one transaction that serialises evaluators: each firing finding updates the one
   open alert with its fingerprint or opens a new one; an open alert whose condition is
   clear resolves once it has stayed clear for the rule's recovery period (hysteresis).
   Notifications are rows; `monitoring.notify` sends them after the group wait.

Baselines (failed-auth spikes, failed sign-ins, traffic stopped) come from hour buckets:
the *same hour of day on each of the previous 7 days*, median taken, and — for the spike
detectors only — also the median of the previous 24 hours, whichever is higher, scaled
to the rule's window. The median ignores a past burst or outage; the 24-hour term lets a
new steady level of background 401s stop counting as a spike within a day. Hours before
the integration was created are left out rather than counted as zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from monitoring import audit, notify
from monitoring.histogram import Histogram, merge_encoded
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    AuditLog,
    Grain,
    Integration,
    MaintenanceWindow,
    MetricBucket,
    Notification,
    NotificationStatus,
    Probe,
    ProbeState,
    RequestLog,
    RollupState,
    RuleKind,
    Silence,
    Source,
)
from monitoring.redaction import Redactor
from monitoring.roles import Action, Role, can
from monitoring.rollup import ALL_ENDPOINTS

log = logging.getLogger(__name__)

# Audit actions of the operator actions below.
ACKNOWLEDGE = "alert.acknowledge"
RESOLVE = "alert.resolve"
SILENCE_CREATE = "silence.create"
SILENCE_END = "silence.end"

# A fingerprint that fires, clears and fires again this many times within FLAP_WINDOW is
# flapping: its recipients get one "flapping" e-mail and the alert then needs to stay clear
# for the whole window before it resolves.
FLAP_THRESHOLD = 3
FLAP_WINDOW = dt.timedelta(hours=1)
# Windows longer than this read hour buckets (minute buckets are kept only a few days).
_HOUR_GRAIN_FROM_MIN = 180
_LOCK_NAME = "alerts.evaluated"


# --- Rule parameters -------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    default: int | float | bool
    low: float | None = None
    high: float | None = None
    help: str = ""


_WINDOW = Param(5, 1, 1440, "window W in minutes")

PARAMS: dict[str, dict[str, Param]] = {
    RuleKind.AUTH_SPIKE: {
        "window_min": _WINDOW,
        "min_count": Param(5, 1, 10**9, "fire only from this many 401 + 403 in W"),
        "factor": Param(3.0, 1, 10**6, "… and at least this many times the baseline"),
    },
    RuleKind.SIGNIN_FAILURES: {
        "window_min": _WINDOW,
        "min_count": Param(10, 1, 10**9, "failed sign-ins in W, all addresses together"),
        "per_ip_min": Param(5, 1, 10**9, "failed sign-ins in W from one address"),
        "factor": Param(3.0, 1, 10**6, "… and at least this many times the baseline"),
    },
    RuleKind.ERROR_RATE: {
        "window_min": _WINDOW,
        "threshold_pct": Param(5.0, 0.01, 100, "fire at this error rate (%)"),
        "min_volume": Param(20, 1, 10**9, "only with at least this many calls in W"),
        "include_4xx": Param(False, help="count 4xx answers as errors too"),
    },
    RuleKind.LATENCY: {
        "window_min": _WINDOW,
        "percentile": Param(95.0, 1, 100, "which percentile (50, 95, 99.9 …)"),
        "threshold_ms": Param(2000, 1, 600_000, "fire at this latency (ms)"),
        "min_volume": Param(10, 1, 10**9, "only with at least this many calls in W"),
    },
    RuleKind.PROBE_DOWN: {},
    RuleKind.RATE_LIMIT: {
        "window_min": Param(15, 2, _HOUR_GRAIN_FROM_MIN, "window W in minutes"),
        "headroom_pct": Param(10.0, 0, 100, "fire when remaining / limit falls to this (%)"),
        "horizon_min": Param(15, 1, 1440, "… or the burn rate empties it within this (min)"),
    },
    RuleKind.CERT_EXPIRY: {
        "days": Param(14, 0, 365, "fire when a probed certificate expires within this"),
    },
    RuleKind.DEPRECATION: {
        "window_min": Param(1440, 1, 1440, "look-back in minutes; clears after W without"),
    },
    RuleKind.TRAFFIC_STOPPED: {
        "window_min": Param(15, 1, 1440, "window W in minutes"),
        "min_expected": Param(20, 1, 10**9, "fire only if the baseline expects this many"),
        "min_history_days": Param(3, 1, 7, "days of history needed before it can fire"),
    },
}


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def params_help(kind: str) -> str:
    """One line describing a kind's parameters and defaults, for forms and errors."""
    spec = PARAMS.get(kind, {})
    if not spec:
        return "no parameters"
    return "; ".join(f"{name} ({p.help}, default {p.default})" for name, p in spec.items())


def validate_params(kind: str, params: object) -> dict:
    """Return the rule's parameters with defaults filled in; raise ValidationError if invalid."""
    if kind not in PARAMS:
        raise ValidationError(f"Unknown rule kind {kind!r}.")
    if params in (None, ""):
        params = {}
    if not isinstance(params, dict):
        raise ValidationError('Parameters must be a JSON object, e.g. {"window_min": 5}.')
    spec = PARAMS[kind]
    errors = []
    unknown = sorted(set(params) - set(spec))
    if unknown:
        expected = ", ".join(spec) or "none"
        errors.append(f"Unknown parameter {', '.join(unknown)} for {kind}; expected: {expected}.")
    clean = {}
    for name, p in spec.items():
        value = params.get(name, p.default)
        if isinstance(p.default, bool):
            if not isinstance(value, bool):
                errors.append(f"{name} must be true or false, got {value!r}.")
                continue
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{name} must be a number, got {value!r}.")
            continue
        elif isinstance(p.default, int):
            if value != int(value):
                errors.append(f"{name} must be a whole number, got {value!r}.")
                continue
            value = int(value)
        if not isinstance(value, bool) and not (p.low <= value <= p.high):
            errors.append(
                f"{name} must be between {_plain(p.low)} and {_plain(p.high)}, got {value!r}."
            )
            continue
        clean[name] = value
    if errors:
        raise ValidationError(errors)
    return clean


# --- Default rules ---------------------------------------------------------------------------

# (kind, name, repeat interval): a fresh install watches every integration for these.
DEFAULT_RULES: list[tuple[str, str, int]] = [
    (RuleKind.AUTH_SPIKE, "Failed-auth spike", 4 * 3600),
    (RuleKind.ERROR_RATE, "Error rate", 4 * 3600),
    (RuleKind.PROBE_DOWN, "Probe down", 4 * 3600),
    (RuleKind.CERT_EXPIRY, "Certificate expiring", 24 * 3600),
    (RuleKind.DEPRECATION, "Deprecated endpoint", 7 * 24 * 3600),
    (RuleKind.SIGNIN_FAILURES, "Failed sign-ins to Upstream", 4 * 3600),
]


def ensure_default_rules() -> int:
    """Create the default all-integration rule of each default kind that has none; idempotent.

    A kind counts as covered by any all-integrations rule of that kind, enabled or not: to
    switch a default off, disable it (deleting it brings it back on the next setup).
    """
    created = 0
    with transaction.atomic():
        for kind, name, repeat in DEFAULT_RULES:
            if AlertRule.objects.filter(kind=kind, integration__isnull=True).exists():
                continue
            rule = AlertRule.objects.create(name=name, kind=kind, repeat_interval_s=repeat)
            audit.record(
                audit.Actions.CREATE,
                actor="setup_upstream",
                target=rule,
                after=audit.snapshot(rule),
            )
            created += 1
    return created


# --- Reading the data --------------------------------------------------------------------------

_COUNTERS = (
    "total", "ok", "client_errors", "server_errors", "timeouts", "connect_errors",
    "tls_errors", "other_errors", "s401", "s403", "s429", "deprecated", "latency_sum",
)  # fmt: skip


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


def _counts(row: dict) -> Counts:
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
        if minutes > _HOUR_GRAIN_FROM_MIN:
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
        return buckets.order_by()

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
            self._windows[minutes] = {row["integration_id"]: _counts(row) for row in rows}
        return self._windows[minutes]

    def endpoints(self, minutes: int, integration_id: int) -> dict[str, Counts]:
        """Per-endpoint counters of one integration; read only when a finding needs them."""
        key = (minutes, integration_id)
        if key not in self._endpoints:
            rows = (
                self._buckets(minutes)
                .filter(integration_id=integration_id)
                .exclude(endpoint=ALL_ENDPOINTS)
                .values("endpoint")
                .annotate(**_SUMS)
            )
            self._endpoints[key] = {row["endpoint"]: _counts(row) for row in rows}
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
            self._ratelimit[minutes] = _tightest(rows)
        return self._ratelimit[minutes]

    def hourly(self) -> dict[int, dict[dt.datetime, tuple[int, int]]]:
        """Per integration and baseline hour: (401 + 403, calls other than probes)."""
        if self._hourly is None:
            rows = (
                self._for_all(MetricBucket.objects.order_by())
                .filter(grain=Grain.HOUR, start__in=self.baseline_hours(), endpoint=ALL_ENDPOINTS)
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
                .annotate(n=Count("id"))
            )
            self._signins[minutes] = {row["ip"] or "": row["n"] for row in rows}
        return self._signins[minutes]

    def signin_hourly(self) -> dict[str, dict[dt.datetime, int]]:
        """Failed sign-ins per client address ("" = all) and baseline hour."""
        if self._signin_hourly is None:
            hours = self.baseline_hours()
            rows = (
                AuditLog.objects.filter(
                    action=audit.Actions.SIGNIN_FAILED,
                    created__gte=hours[0],
                    created__lt=self.hour,
                )
                .order_by()
                .annotate(hour=TruncHour("created"))
                .values("hour", "ip")
                .annotate(n=Count("id"))
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


def _tightest(rows: Iterable[tuple]) -> dict[int, list[tuple[dt.datetime, int, int]]]:
    tightest: dict[tuple[int, dt.datetime], tuple[int, int]] = {}
    for iid, start, remaining, limit in rows:
        key = (iid, start)
        seen = tightest.get(key)
        if seen is None or remaining * seen[1] < seen[0] * limit:
            tightest[key] = (remaining, limit)
    result: dict[int, list[tuple[dt.datetime, int, int]]] = defaultdict(list)
    for (iid, start), (remaining, limit) in sorted(tightest.items()):
        result[iid].append((start, remaining, limit))
    return dict(result)


# --- Rule kinds ------------------------------------------------------------------------------


@dataclass
class Finding:
    """A rule's condition holds for one subject (integration, maybe endpoint)."""

    rule: AlertRule
    integration: Integration | None
    title: str
    summary: str = ""
    figures: dict = field(default_factory=dict)
    endpoint: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            self.rule.pk, self.integration.pk if self.integration else None, self.endpoint
        )


def fingerprint(rule_id: int, integration_id: int | None, endpoint: str = "") -> str:
    key = f"{rule_id}:{integration_id or '-'}"
    return f"{key}:{endpoint}" if endpoint else key


def _num(x: float) -> str:
    """3, 0.4, 1,250: whole numbers plain, small fractions with one decimal."""
    if abs(x - round(x)) < 0.05 or abs(x) >= 10:
        return f"{round(x):,}"
    return f"{x:.1f}"


def _auth_counts(s401: int, s403: int) -> str:
    parts = [f"{s401:,} × 401"] if s401 else []
    if s403:
        parts.append(f"{s403:,} × 403")
    return ", ".join(parts)


def _top(endpoints: dict[str, Counts], key: Callable[[Counts], float], detail, limit=5) -> list:
    ranked = sorted(endpoints.items(), key=lambda kv: (-key(kv[1]), kv[0]))
    return [{"endpoint": ep, "detail": detail(c)} for ep, c in ranked[:limit] if key(c) > 0]


def _auth_spike(rule, p, integ, data: BucketData) -> list[Finding]:
    w = p["window_min"]
    c = data.window(w).get(integ.pk)
    if c is None:
        return []
    count = c.s401 + c.s403
    if count < p["min_count"]:
        return []
    auth = {h: v[0] for h, v in data.hourly().get(integ.pk, {}).items()}
    per_hour, days = data.baseline(auth, since=integ.created, trailing=True)
    baseline = per_hour * w / 60
    if count < p["factor"] * baseline:
        return []
    advice = []
    if c.s401:
        advice.append(
            f"{c.s401:,} × 401 Unauthorized: the key is missing, wrong, expired or revoked."
        )
    if c.s403:
        advice.append(
            f"{c.s403:,} × 403 Forbidden: the key works but lacks a scope or permission for "
            "these calls (least privilege)."
        )
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — failed-auth spike: {_auth_counts(c.s401, c.s403)} in {w} min "
            f"(baseline {_num(baseline)})",
            summary="\n".join(advice),
            figures={
                "s401": c.s401,
                "s403": c.s403,
                "count": count,
                "window_min": w,
                "baseline": round(baseline, 2),
                "baseline_days": days,
                "facts": [
                    ["401 + 403 in the window", f"{count:,} in {w} min"],
                    ["Baseline for the window", f"{_num(baseline)} (median of {days} days)"],
                    ["Calls in the window", f"{c.total:,}"],
                ],
                "endpoints": _top(
                    data.endpoints(w, integ.pk),
                    lambda e: e.s401 + e.s403,
                    lambda e: _auth_counts(e.s401, e.s403),
                ),
            },
        )
    ]


def _signin_failures(rule, p, _subject, data: BucketData) -> list[Finding]:
    w = p["window_min"]
    per_ip = data.signins(w)
    total = sum(per_ip.values())
    if not total:
        return []
    hourly = data.signin_hourly()
    per_hour, _days = data.baseline(hourly.get("*", {}), since=None, trailing=True)
    baseline = per_hour * w / 60
    overall = total >= p["min_count"] and total >= p["factor"] * baseline
    hot = []
    for ip, n in per_ip.items():
        ip_hour, _ = data.baseline(hourly.get(ip, {}), since=None, trailing=True)
        if n >= p["per_ip_min"] and n >= p["factor"] * ip_hour * w / 60:
            hot.append((n, ip))
    if not overall and not hot:
        return []
    top = sorted(((n, ip) for ip, n in per_ip.items()), key=lambda t: (-t[0], t[1]))
    busiest_n, busiest_ip = top[0]
    title = f"Upstream sign-ins — {total:,} failed sign-ins in {w} min (baseline {_num(baseline)})"
    if busiest_n > 1:
        title += f", {busiest_n:,} from {busiest_ip or 'an unknown address'}"
    return [
        Finding(
            rule,
            None,
            title=title,
            summary="Someone is guessing passwords, or a user is locked out. The audit log "
            "lists every attempt with its address and user agent.",
            figures={
                "count": total,
                "window_min": w,
                "baseline": round(baseline, 2),
                "addresses": [[ip or "unknown", n] for n, ip in top[:10]],
                "facts": [
                    ["Failed sign-ins in the window", f"{total:,} in {w} min"],
                    ["Baseline for the window", _num(baseline)],
                    ["Addresses", ", ".join(f"{ip or 'unknown'} ({n})" for n, ip in top[:5])],
                ],
            },
        )
    ]


def _error_rate(rule, p, integ, data: BucketData) -> list[Finding]:
    w = p["window_min"]
    c = data.window(w).get(integ.pk)
    if c is None or c.total < p["min_volume"]:
        return []
    errors = c.errors(p["include_4xx"])
    rate = 100 * errors / c.total
    if rate < p["threshold_pct"]:
        return []
    breakdown = [
        ("5xx", c.server_errors), ("timeouts", c.timeouts), ("connect errors", c.connect_errors),
        ("TLS errors", c.tls_errors), ("other transport errors", c.other_errors),
    ]  # fmt: skip
    if p["include_4xx"]:
        breakdown.append(("4xx", c.client_errors))
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — error rate {rate:.1f} % in {w} min ({errors:,} of {c.total:,} calls)",
            figures={
                "rate_pct": round(rate, 2),
                "errors": errors,
                "total": c.total,
                "window_min": w,
                "facts": [
                    ["Error rate", f"{rate:.1f} % (threshold {p['threshold_pct']:g} %)"],
                    ["Errors", ", ".join(f"{n:,} {label}" for label, n in breakdown if n)],
                    ["Calls in the window", f"{c.total:,} in {w} min"],
                ],
                "endpoints": _top(
                    data.endpoints(w, integ.pk),
                    lambda e: e.errors(p["include_4xx"]),
                    lambda e: f"{e.errors(p['include_4xx']):,} errors of {e.total:,} calls",
                ),
            },
        )
    ]


def _latency(rule, p, integ, data: BucketData) -> list[Finding]:
    w, q = p["window_min"], p["percentile"]
    c = data.window(w).get(integ.pk)
    if c is None or c.total < p["min_volume"]:
        return []
    hist, low, high = data.latency(w, integ.pk)
    value = hist.percentile(q, low, high)
    if value is None or value < p["threshold_ms"]:
        return []
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — p{q:g} latency {value:,.0f} ms in {w} min "
            f"(threshold {p['threshold_ms']:,} ms)",
            figures={
                "percentile": q,
                "value_ms": round(value, 1),
                "window_min": w,
                "facts": [
                    [f"p{q:g} latency", f"{value:,.0f} ms (threshold {p['threshold_ms']:,} ms)"],
                    ["Slowest call", f"{high:,.0f} ms" if high is not None else "—"],
                    ["Calls in the window", f"{c.total:,} in {w} min"],
                ],
                "endpoints": _top(
                    data.endpoints(w, integ.pk),
                    lambda e: e.latency_sum / e.total if e.total else 0,
                    lambda e: f"average {e.latency_sum / e.total:,.0f} ms over {e.total:,} calls",
                ),
            },
        )
    ]


def _probe_down(rule, p, integ, data: BucketData) -> list[Finding]:
    down = [pr for pr in data.probes().get(integ.pk, []) if pr.state == ProbeState.DOWN]
    if not down:
        return []
    redactor = Redactor(integ.extra_redactions())
    names = ", ".join(pr.name for pr in down[:3]) + (
        f" +{len(down) - 3} more" if len(down) > 3 else ""
    )
    facts = []
    for pr in down:
        since = f" since {pr.since:%Y-%m-%d %H:%M} UTC" if pr.since else ""
        why = " — ".join(x for x in (pr.reason, redactor.text(pr.message)[:200]) if x)
        facts.append([pr.name, f"down{since}" + (f": {why}" if why else "")])
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — probe down: {names}",
            summary="Upstream's own synthetic checks fail too: if your calls fail as well, the "
            "provider is the likely cause.",
            figures={"probes": [pr.name for pr in down], "facts": facts},
        )
    ]


def _rate_limit(rule, p, integ, data: BucketData) -> list[Finding]:
    series = data.ratelimit(p["window_min"]).get(integ.pk)
    if not series:
        return []
    _, remaining, limit = series[-1]
    headroom = 100 * remaining / limit
    left = f"{remaining:,} of {limit:,} left"
    if headroom <= p["headroom_pct"]:
        title = f"{integ} — rate-limit headroom {headroom:.0f} % ({left})"
        facts = [["Headroom", f"{headroom:.1f} % (threshold {p['headroom_pct']:g} %)"]]
    else:
        # Burn rate over the stretch since the quota last went up (a reset).
        run = [series[-1]]
        for point in reversed(series[:-1]):
            if point[1] < run[-1][1]:
                break
            run.append(point)
        first, last = run[-1], run[0]
        minutes = (last[0] - first[0]).total_seconds() / 60
        burn = (first[1] - last[1]) / minutes if minutes else 0
        if burn <= 0 or remaining / burn > p["horizon_min"]:
            return []
        eta = remaining / burn
        title = f"{integ} — rate limit runs out in about {eta:.0f} min ({left}, {burn:,.0f}/min)"
        facts = [["Projected exhaustion", f"in {eta:.0f} min at {burn:,.1f} calls/min"]]
    facts.append(["Remaining", left])
    return [
        Finding(
            rule,
            integ,
            title=title,
            summary="Slow down, batch calls or ask the provider for a higher quota before "
            "calls start failing with 429.",
            figures={"remaining": remaining, "limit": limit, "facts": facts},
        )
    ]


def _cert_expiry(rule, p, integ, data: BucketData) -> list[Finding]:
    probed = [pr for pr in data.probes().get(integ.pk, []) if pr.cert_days_left is not None]
    if not probed:
        return []
    worst = min(probed, key=lambda pr: pr.cert_days_left)
    days = worst.cert_days_left
    if days > p["days"]:
        return []
    when = "has expired" if days <= 0 else f"expires in {int(days)} days"
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — TLS certificate {when} (probe {worst.name})",
            figures={
                "days_left": round(days, 1),
                "facts": [[pr.name, f"{pr.cert_days_left:.0f} days left"] for pr in probed[:10]],
            },
        )
    ]


def _deprecation(rule, p, integ, data: BucketData) -> list[Finding]:
    w = p["window_min"]
    c = data.window(w).get(integ.pk)
    if c is None or not c.deprecated:
        return []
    return [
        Finding(
            rule,
            integ,
            endpoint=endpoint,
            title=f"{integ} — deprecated endpoint {endpoint}",
            summary="The provider marks this endpoint deprecated (Deprecation or Sunset header). "
            "Move to its successor before the sunset date.",
            figures={
                "deprecated_calls": c.deprecated,
                "facts": [["Deprecated responses", f"{c.deprecated:,} of {c.total:,} calls"]],
            },
        )
        for endpoint, c in sorted(data.endpoints(w, integ.pk).items())
        if c.deprecated
    ]


def _traffic_stopped(rule, p, integ, data: BucketData) -> list[Finding]:
    w = p["window_min"]
    c = data.window(w).get(integ.pk)
    if c is not None and c.calls:
        return []
    calls = {h: v[1] for h, v in data.hourly().get(integ.pk, {}).items()}
    per_hour, days = data.baseline(calls, since=integ.created, trailing=False)
    expected = per_hour * w / 60
    if days < p["min_history_days"] or expected < p["min_expected"]:
        return []
    return [
        Finding(
            rule,
            integ,
            title=f"{integ} — traffic stopped: no calls in {w} min (usually {_num(expected)})",
            summary="Your application has stopped calling this provider (probes are not "
            "counted). A deploy, a crashed worker or a feature flag?",
            figures={
                "expected": round(expected, 1),
                "window_min": w,
                "baseline_days": days,
                "facts": [
                    ["Expected calls in the window", f"{_num(expected)} (median of {days} days)"]
                ],
            },
        )
    ]


CHECKS: dict[str, Callable[..., list[Finding]]] = {
    RuleKind.AUTH_SPIKE: _auth_spike,
    RuleKind.SIGNIN_FAILURES: _signin_failures,
    RuleKind.ERROR_RATE: _error_rate,
    RuleKind.LATENCY: _latency,
    RuleKind.PROBE_DOWN: _probe_down,
    RuleKind.RATE_LIMIT: _rate_limit,
    RuleKind.CERT_EXPIRY: _cert_expiry,
    RuleKind.DEPRECATION: _deprecation,
    RuleKind.TRAFFIC_STOPPED: _traffic_stopped,
}


def _add_sunset(finding: Finding, now: dt.datetime, window_min: int) -> None:
    """Look up the sunset date of a newly deprecated endpoint (buckets only count the header).

    One indexed raw-log read per *new* deprecation alert, never per cycle.
    """
    method, _, path = finding.endpoint.partition(" ")
    row = (
        RequestLog.objects.filter(
            integration=finding.integration,
            created__gte=now - dt.timedelta(minutes=window_min),
            method=method,
            path=path,
        )
        .filter(Q(deprecated=True) | Q(sunset_at__isnull=False))
        .order_by("-created")
        .values("sunset_at", "deprecation_at", "deprecation_link")
        .first()
    )
    if not row:
        return
    figures = finding.figures
    if row["sunset_at"]:
        figures["sunset_at"] = row["sunset_at"].isoformat()
        days = (row["sunset_at"] - now).days
        countdown = f"in {days} days" if days >= 0 else f"{-days} days ago"
        finding.title += f", sunset {row['sunset_at']:%Y-%m-%d} ({countdown})"
        figures["facts"].append(["Sunset", f"{row['sunset_at']:%Y-%m-%d %H:%M} UTC"])
    if row["deprecation_at"]:
        figures["facts"].append(["Deprecated since", f"{row['deprecation_at']:%Y-%m-%d}"])
    if row["deprecation_link"]:
        figures["facts"].append(["Details", row["deprecation_link"][:300]])


# --- Evaluation ------------------------------------------------------------------------------


@dataclass
class Scan:
    now: dt.datetime
    findings: dict[str, Finding]
    skipped_rules: set[int]
    rules: int
    checks: int


def find(now: dt.datetime | None = None, *, data_class: type[BucketData] = BucketData) -> Scan:
    """Check every enabled rule against one snapshot of the data; write nothing."""
    now = now or timezone.now()
    # No select_related: the integrations are loaded once below, not once per rule.
    rules = list(AlertRule.objects.filter(enabled=True))
    integrations = {i.pk: i for i in Integration.objects.filter(active=True)}
    data = data_class(now, integrations)
    findings: dict[str, Finding] = {}
    skipped: set[int] = set()
    checks = 0
    for rule in rules:
        try:
            p = validate_params(rule.kind, rule.params)
        except ValidationError as exc:
            log.warning("Alert rule %s (%s) skipped: %s", rule.pk, rule, "; ".join(exc.messages))
            skipped.add(rule.pk)
            continue
        if rule.kind == RuleKind.SIGNIN_FAILURES:
            subjects: list[Integration | None] = [None]
        elif rule.integration_id is not None:
            subjects = (
                [integrations[rule.integration_id]] if rule.integration_id in integrations else []
            )
        else:
            subjects = list(integrations.values())
        check = CHECKS[rule.kind]
        for subject in subjects:
            checks += 1
            for finding in check(rule, p, subject, data):
                findings[finding.fingerprint] = finding
    return Scan(now, findings, skipped, len(rules), checks)


@dataclass
class EvaluationReport:
    rules: int = 0
    checks: int = 0
    firing: int = 0
    opened: int = 0
    resolved: int = 0
    notifications: int = 0
    suppressed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.rules} rules, {self.checks} checks: {self.firing} firing "
            f"({self.opened} new), {self.resolved} resolved; {self.notifications} notifications "
            f"queued, {self.suppressed} suppressed"
        )


def evaluate(now: dt.datetime | None = None) -> EvaluationReport:
    """One evaluation cycle: find what fires, then update alerts and queue notifications."""
    scan = find(now)
    return _apply(scan)


def evaluate_task() -> str:
    """django-q2 entry point of the every-minute schedule."""
    return str(evaluate())


class _Mutes:
    """Silences and maintenance windows in force at one moment, loaded once per cycle."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at
        self.silences = list(
            Silence.objects.filter(starts_at__lte=at, ends_at__gt=at).select_related("author")
        )
        self.windows = [w for w in MaintenanceWindow.objects.all() if _covers(w, at)]

    def reason(self, integration_id: int | None, kind: str) -> str:
        if not getattr(settings, "ALERT_EMAILS_ENABLED", True):
            return "alert e-mails are switched off (ALERT_EMAILS_ENABLED=0)"
        for s in self.silences:
            if s.integration_id in (None, integration_id) and s.rule_kind in ("", kind):
                who = f" by {s.author.get_username()}" if s.author else ""
                why = f": {s.reason}" if s.reason else ""
                return f"silenced{who} until {s.ends_at:%Y-%m-%d %H:%M} UTC{why}"[:500]
        for w in self.windows:
            if w.integration_id in (None, integration_id):
                return f"maintenance window {w.name!r}"[:500]
        return ""


def _covers(window: MaintenanceWindow, at: dt.datetime) -> bool:
    if window.starts_at is not None and window.ends_at is not None:
        return window.starts_at <= at < window.ends_at
    if window.weekday is None or window.start_time is None or not window.duration_minutes:
        return False
    at = at.astimezone(dt.UTC)
    days_back = (at.weekday() - window.weekday) % 7
    start = dt.datetime.combine(
        at.date() - dt.timedelta(days=days_back), window.start_time.replace(tzinfo=None), dt.UTC
    )
    if start > at:
        start -= dt.timedelta(days=7)
    # A window may run past midnight or the end of the week: also try last week's occurrence.
    length = dt.timedelta(minutes=window.duration_minutes)
    return any(s <= at < s + length for s in (start, start - dt.timedelta(days=7)))


def _admin_emails() -> list[str]:
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    users = users.filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN))
    return sorted(set(users.values_list("email", flat=True)))


def _valid_emails(addresses: Iterable[str]) -> list[str]:
    good = []
    for address in addresses:
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            log.warning("Skipping invalid alert recipient %r", address)
        else:
            good.append(address)
    return good


class _Outbox:
    """Notifications decided during one transaction: recipients, mutes, and the rows."""

    def __init__(self, now: dt.datetime, mutes: _Mutes | None = None) -> None:
        self.now = now
        self.mutes = mutes or _Mutes(now)
        self.rows: list[Notification] = []
        self._admins: list[str] | None = None

    def recipients(self, alert: Alert) -> list[str]:
        listed = _valid_emails(alert.rule.recipient_list())
        if listed:
            return listed
        owner = _valid_emails([alert.integration.owner_email] if alert.integration else [])
        if owner:
            return owner
        if self._admins is None:
            self._admins = _admin_emails()
        return self._admins

    def queue(self, alert: Alert, kind: str, recipients: Iterable[str] | None = None) -> None:
        if recipients is None:
            recipients = self.recipients(alert)
        recipients = list(recipients)
        if not recipients:
            log.warning("Alert %s has nobody to notify (no recipients, owner or admins)", alert.pk)
        reason = self.mutes.reason(alert.integration_id, alert.rule.kind)
        for recipient in recipients:
            row = Notification(
                alert=alert,
                kind=kind,
                recipient=recipient,
                status=NotificationStatus.SUPPRESSED if reason else NotificationStatus.PENDING,
                error=reason,
                created=self.now,
                next_attempt_at=self.now + notify.group_wait(),
            )
            if reason:  # never sent, but the alert page still shows what was held back
                row.subject = notify.subject_of(row, self.now)
            self.rows.append(row)
        alert.last_notified_at = self.now

    def flush(self) -> tuple[int, int]:
        """Save the rows and, after commit, wake the sender; return (pending, suppressed)."""
        Notification.objects.bulk_create(self.rows)
        pending = [n for n in self.rows if n.status == NotificationStatus.PENDING]
        if pending:
            due = min(n.next_attempt_at for n in pending).isoformat()
            transaction.on_commit(lambda: _enqueue_delivery(due))
        return len(pending), len(self.rows) - len(pending)


def _enqueue_delivery(due_iso: str) -> None:
    from django_q.tasks import async_task

    try:
        async_task("monitoring.notify.deliver", due_iso)
    except Exception:
        # The every-minute sender schedule delivers it anyway; the evaluator must not fail.
        log.exception("Could not enqueue the alert e-mail sender")


def _told(alert: Alert) -> list[str]:
    """Who has heard about this alert, and so should hear that it is over."""
    told = alert.notifications.filter(
        status__in=[NotificationStatus.SENT, NotificationStatus.PENDING]
    ).exclude(kind=Notification.Kind.RESOLVED)
    return sorted(set(told.values_list("recipient", flat=True)))


def _lock(now: dt.datetime) -> None:
    """Serialise evaluators (a schedule overlapping a manual run) and record the last run."""
    RollupState.objects.get_or_create(name=_LOCK_NAME)
    state = RollupState.objects.select_for_update().get(name=_LOCK_NAME)
    state.value = int(now.timestamp())
    state.updated = now
    state.save(update_fields=["value", "updated"])


def _apply(scan: Scan) -> EvaluationReport:
    now = scan.now
    report = EvaluationReport(rules=scan.rules, checks=scan.checks, firing=len(scan.findings))
    with transaction.atomic():
        _lock(now)
        outbox = _Outbox(now)
        open_alerts = {
            a.fingerprint: a
            for a in Alert.objects.exclude(state=AlertState.RESOLVED).select_related(
                "rule", "integration"
            )
        }
        dirty: list[Alert] = []
        seen: list[int] = []  # still firing, nothing but last_seen to write
        for fp, finding in scan.findings.items():
            alert = open_alerts.pop(fp, None)
            if alert is None:
                _open(finding, now, outbox)
                report.opened += 1
                continue
            before = (alert.figures, alert.clear_since, alert.last_notified_at)
            alert.last_seen = now
            alert.figures = finding.figures | _kept_figures(alert)
            if alert.clear_since is not None:
                # Cleared, then back before the recovery period ran out: a flap, not a new alert.
                alert.clear_since = None
                alert.flap_count += 1
                if alert.flap_count >= FLAP_THRESHOLD and not alert.flapping:
                    alert.flapping = True
                    outbox.queue(alert, Notification.Kind.FLAPPING)
            if (
                alert.state == AlertState.FIRING
                and alert.last_notified_at is not None
                and now - alert.last_notified_at
                >= dt.timedelta(seconds=alert.rule.repeat_interval_s)
            ):
                outbox.queue(alert, Notification.Kind.REMINDER)
            if (alert.figures, alert.clear_since, alert.last_notified_at) == before:
                seen.append(alert.pk)
            else:
                dirty.append(alert)
        for alert in open_alerts.values():
            if alert.rule_id in scan.skipped_rules:
                continue
            if alert.clear_since is None:
                alert.clear_since = now
            recovery = dt.timedelta(seconds=alert.rule.recovery_s)
            if alert.flapping:
                recovery = max(recovery, FLAP_WINDOW)
            if now - alert.clear_since >= recovery:
                alert.state = AlertState.RESOLVED
                alert.resolved_at = now
                report.resolved += 1
                told = _told(alert)
                if told:
                    outbox.queue(alert, Notification.Kind.RESOLVED, told)
            dirty.append(alert)
        # One small UPDATE per open alert: bulk_update's CASE per field and row costs more
        # in Django than it saves once a few dozen alerts are open.
        Alert.objects.filter(pk__in=seen).update(last_seen=now)
        for alert in dirty:
            Alert.objects.filter(pk=alert.pk).update(
                **{name: getattr(alert, name) for name in _CYCLE_FIELDS}
            )
        report.notifications, report.suppressed = outbox.flush()
    return report


_CYCLE_FIELDS = (
    "state", "last_seen", "figures", "clear_since", "resolved_at", "flap_count", "flapping",
    "last_notified_at",
)  # fmt: skip


def _kept_figures(alert: Alert) -> dict:
    # Looked up once when the alert opened; the per-cycle figures do not carry it.
    return {k: alert.figures[k] for k in ("sunset_at",) if k in alert.figures}


def _open(finding: Finding, now: dt.datetime, outbox: _Outbox) -> Alert:
    fp = finding.fingerprint
    if finding.rule.kind == RuleKind.DEPRECATION:
        p = validate_params(finding.rule.kind, finding.rule.params)
        _add_sunset(finding, now, p["window_min"])
    previous = (
        Alert.objects.filter(
            fingerprint=fp, state=AlertState.RESOLVED, resolved_at__gte=now - FLAP_WINDOW
        )
        .order_by("-resolved_at")
        .values_list("flap_count", flat=True)
        .first()
    )
    flaps = previous + 1 if previous is not None else 0
    alert = Alert.objects.create(
        rule=finding.rule,
        integration=finding.integration,
        fingerprint=fp,
        endpoint=finding.endpoint,
        state=AlertState.FIRING,
        title=finding.title[:300],
        summary=finding.summary,
        figures=finding.figures,
        first_seen=now,
        last_seen=now,
        flap_count=flaps,
        flapping=flaps >= FLAP_THRESHOLD,
    )
    kind = Notification.Kind.FLAPPING if alert.flapping else Notification.Kind.FIRING
    outbox.queue(alert, kind)
    alert.save(update_fields=["last_notified_at"])
    return alert


# --- Operators' actions ----------------------------------------------------------------------


def _require(user, action: Action, what: str) -> None:
    if not can(user, action):
        raise PermissionError(f"You are not allowed to {what}.")


def _aware(value: dt.datetime | None, name: str) -> None:
    if value is not None and timezone.is_naive(value):
        raise ValueError(f"The {name} time needs a time zone.")


def acknowledge(alert: Alert, *, user, note: str = "", request=None) -> Alert:
    """Firing → acknowledged: reminders stop; the alert still resolves (and says so) by itself."""
    _require(user, Action.OPERATE, "acknowledge alerts")
    note = (note or "").strip()
    if len(note) > 500:
        raise ValueError("The note is too long (500 characters at most).")
    now = timezone.now()
    with transaction.atomic():
        changed = Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING).update(
            state=AlertState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=user, ack_note=note
        )
        if not changed:
            state = Alert.objects.filter(pk=alert.pk).values_list("state", flat=True).first()
            if state == AlertState.ACKNOWLEDGED:
                raise ValueError("This alert is already acknowledged.")
            if state == AlertState.RESOLVED:
                raise ValueError("This alert is resolved; there is nothing to acknowledge.")
            raise ValueError("This alert no longer exists.")
        alert.refresh_from_db()
        audit.record(
            ACKNOWLEDGE,
            request=request,
            user=user,
            target=alert,
            before={"state": AlertState.FIRING},
            after={"state": AlertState.ACKNOWLEDGED, "note": note},
        )
    return alert


def resolve(alert: Alert, *, user, request=None) -> Alert:
    """Close an open alert by hand. If its condition still holds, the next cycle opens a new one."""
    _require(user, Action.OPERATE, "resolve alerts")
    now = timezone.now()
    with transaction.atomic():
        current = Alert.objects.select_for_update().filter(pk=alert.pk).first()
        if current is None:
            raise ValueError("This alert no longer exists.")
        if current.state == AlertState.RESOLVED:
            raise ValueError("This alert is already resolved.")
        before = current.state
        current.state = AlertState.RESOLVED
        current.resolved_at = now
        current.figures = {**current.figures, "resolved_by": user.get_username()}
        outbox = _Outbox(now)
        told = _told(current)
        if told:
            outbox.queue(current, Notification.Kind.RESOLVED, told)
        current.save(update_fields=["state", "resolved_at", "figures", "last_notified_at"])
        outbox.flush()
        audit.record(
            RESOLVE,
            request=request,
            user=user,
            target=current,
            before={"state": before},
            after={"state": AlertState.RESOLVED},
        )
    alert.refresh_from_db()
    return alert


def create_silence(
    *,
    user,
    integration: Integration | None = None,
    rule_kind: str = "",
    starts_at: dt.datetime | None = None,
    ends_at: dt.datetime | None,
    reason: str = "",
    request=None,
) -> Silence:
    """Mute notifications for an integration and/or rule kind; alerts are still recorded."""
    _require(user, Action.OPERATE, "create silences")
    now = timezone.now()
    if ends_at is None:
        raise ValueError("A silence needs an end time.")
    _aware(starts_at, "start")
    _aware(ends_at, "end")
    starts_at = starts_at or now
    if rule_kind and rule_kind not in RuleKind.values:
        raise ValueError(
            f"Unknown rule kind {rule_kind!r}; expected one of {', '.join(RuleKind.values)}."
        )
    if ends_at <= starts_at:
        raise ValueError("The end must come after the start.")
    if ends_at <= now:
        raise ValueError("The end is already in the past.")
    reason = (reason or "").strip()
    if len(reason) > 300:
        raise ValueError("The reason is too long (300 characters at most).")
    with transaction.atomic():
        silence = Silence.objects.create(
            integration=integration,
            rule_kind=rule_kind or "",
            starts_at=starts_at,
            ends_at=ends_at,
            author=user,
            reason=reason,
            created=now,
        )
        audit.record(
            SILENCE_CREATE,
            request=request,
            user=user,
            target=silence,
            after=audit.snapshot(silence),
        )
    return silence


def end_silence(silence: Silence, *, user, request=None) -> Silence:
    """End a silence now (or cancel one that has not started)."""
    _require(user, Action.OPERATE, "end silences")
    now = timezone.now()
    with transaction.atomic():
        changed = Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(ends_at=now)
        if not changed:
            raise ValueError("This silence has already ended.")
        before = {"ends_at": silence.ends_at}
        silence.refresh_from_db()
        audit.record(
            SILENCE_END, request=request, user=user, target=silence, before=before,
            after={"ends_at": silence.ends_at},
        )  # fmt: skip
    return silence


def is_silenced(alert: Alert, at: dt.datetime | None = None) -> bool:
    """Whether a silence mutes this alert's notifications at `at` (default now)."""
    at = at or timezone.now()
    return (
        Silence.objects.filter(starts_at__lte=at, ends_at__gt=at)
        .filter(Q(integration__isnull=True) | Q(integration_id=alert.integration_id))
        .filter(Q(rule_kind="") | Q(rule_kind=alert.rule.kind))
        .exists()
    )


def in_maintenance(integration: Integration | None, at: dt.datetime | None = None) -> bool:
    """Whether a maintenance window covers this integration (None: Upstream itself) at `at`."""
    at = at or timezone.now()
    windows = MaintenanceWindow.objects.filter(
        Q(integration__isnull=True) | Q(integration=integration)
    )
    return any(_covers(w, at) for w in windows)
