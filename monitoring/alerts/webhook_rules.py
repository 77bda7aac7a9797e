"""The webhook rule kinds: signature failures, webhooks stopped, delivery lag.

Every delivery is a request-log row of source ``webhook`` (monitoring.webhooks records it), so
the metric buckets of that source say what arrived: ``s2xx`` verified (new or duplicate),
``s401`` failed verification (bad or missing signature, or outside the replay window), and
the latency histogram the delivery lag. These kinds read those buckets apart from every other
source, once per evaluation cycle and window for all integrations (the cycle's reads are
cached on its `BucketData`), plus the active endpoints for "webhooks stopped".

The kinds register in `monitoring.alerts.rules.KINDS` like every other kind.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections import Counter, defaultdict
from typing import NamedTuple

from django.db.models import Q, Sum

from monitoring.alerts.rules import Finding, Kind, Param, _num
from monitoring.alerts.snapshot import HOUR_GRAIN_FROM_MIN, BucketData
from monitoring.histogram import Histogram, merge_encoded
from monitoring.models import (
    ALL_ENDPOINTS,
    Grain,
    Integration,
    MetricBucket,
    RequestLog,
    RuleKind,
    Source,
    WebhookEndpoint,
    WebhookSecret,
)

# How far back "failing since" looks for the last verified delivery: the minute buckets
# the snapshot reads at most. A drift older than this says "since at least …".
LOOKBACK_MIN = HOUR_GRAIN_FROM_MIN
# Our own calls to the provider: what "while our calls go on" counts (not probes, not webhooks).
OWN_SOURCES = (Source.CLIENT, Source.INGEST, Source.OTLP)
# "Webhooks stopped" without a set maximum: this many learned gaps, and never under the floor.
CADENCE_FACTOR = 5.0
MIN_SILENCE_MIN = 10
# Raw rows read once when a signature alert opens, to tell bad signatures from expired ones.
REJECTIONS_SCANNED = 500


def silence_limit_s(
    cadence_s: float | None,
    max_silence_s: int | None,
    *,
    factor: float = CADENCE_FACTOR,
    floor_min: float = MIN_SILENCE_MIN,
) -> float | None:
    """How long an endpoint may stay silent before "webhooks stopped" (None: not yet known).

    A set maximum wins; else `factor` learned gaps, but at least `floor_min` minutes, so a
    provider that sends every few seconds does not count a minute's lull as stopping.
    """
    if max_silence_s:
        return float(max_silence_s)
    if cadence_s:
        return max(cadence_s * factor, floor_min * 60)
    return None


def duration(seconds: float) -> str:
    """45 s, 12 min, 3.5 h, 2 days: a gap or a lag in words."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{_num(seconds / 3600)} h"
    return f"{_num(seconds / 86400)} days"


# --- What one cycle reads ----------------------------------------------------------------------


class Minute(NamedTuple):
    """One minute of one integration's deliveries (the all-endpoint bucket)."""

    start: dt.datetime
    total: int
    verified: int  # 2xx: accepted, new or duplicate
    failed: int  # 401: bad or missing signature, or outside the replay window


class Endpoint(NamedTuple):
    pk: int
    name: str
    scheme: str
    cadence_s: float | None
    max_silence_s: int | None
    last_delivery_at: dt.datetime | None
    created: dt.datetime


_CYCLES: weakref.WeakKeyDictionary[BucketData, dict] = weakref.WeakKeyDictionary()


def _cached(data: BucketData, key: tuple, read):
    """`read()` once per evaluation cycle (one BucketData) and key, shared by every rule."""
    cache = _CYCLES.setdefault(data, {})
    if key not in cache:
        cache[key] = read()
    return cache[key]


def _ids(data: BucketData) -> list[int]:
    return list(data.integrations)


def minutes(data: BucketData) -> dict[int, list[Minute]]:
    """Per integration, its webhook minutes of the last LOOKBACK_MIN minutes, oldest first."""

    def read() -> dict[int, list[Minute]]:
        since = data.minute - dt.timedelta(minutes=LOOKBACK_MIN - 1)
        rows = (
            MetricBucket.objects.filter(
                grain=Grain.MINUTE,
                start__gte=since,
                start__lte=data.now,
                source=Source.WEBHOOK,
                endpoint=ALL_ENDPOINTS,
                integration_id__in=_ids(data),
            )
            .order_by("integration_id", "start")
            .values_list("integration_id", "start", "total", "s2xx", "s401")
        )
        found: dict[int, list[Minute]] = defaultdict(list)
        for iid, *rest in rows:
            found[iid].append(Minute(*rest))
        return dict(found)

    return _cached(data, ("minutes",), read)


def own_calls(data: BucketData, window_min: int) -> dict[int, int]:
    """Per integration, our own calls (client, ingest, OTLP) over the window."""

    def read() -> dict[int, int]:
        grain, since = data.bounds(window_min)
        rows = (
            MetricBucket.objects.filter(
                grain=grain,
                start__gte=since,
                start__lte=data.now,
                source__in=OWN_SOURCES,
                endpoint=ALL_ENDPOINTS,
                integration_id__in=_ids(data),
            )
            .order_by()
            .values("integration_id")
            .annotate(n=Sum("total"))
        )
        return {row["integration_id"]: row["n"] or 0 for row in rows}

    return _cached(data, ("own", window_min), read)


def lag(data: BucketData, window_min: int) -> dict[int, tuple[Histogram, int, float | None]]:
    """Per integration, (merged delivery-lag histogram, deliveries, longest lag) over the window."""

    def read() -> dict[int, tuple[Histogram, int, float | None]]:
        grain, since = data.bounds(window_min)
        rows = MetricBucket.objects.filter(
            grain=grain,
            start__gte=since,
            start__lte=data.now,
            source=Source.WEBHOOK,
            endpoint=ALL_ENDPOINTS,
            total__gt=0,
            integration_id__in=_ids(data),
        ).values_list("integration_id", "histogram", "total", "latency_max")
        blobs: dict[int, list] = defaultdict(list)
        totals: Counter[int] = Counter()
        highs: dict[int, float] = {}
        for iid, blob, total, high in rows.order_by().iterator(chunk_size=5000):
            blobs[iid].append(blob)
            totals[iid] += total
            if high is not None and high > highs.get(iid, -1.0):
                highs[iid] = high
        return {iid: (merge_encoded(b), totals[iid], highs.get(iid)) for iid, b in blobs.items()}

    return _cached(data, ("lag", window_min), read)


def endpoints(data: BucketData) -> dict[int, list[Endpoint]]:
    """Per integration, its active webhook endpoints; one query."""

    def read() -> dict[int, list[Endpoint]]:
        rows = (
            WebhookEndpoint.objects.filter(active=True, integration_id__in=_ids(data))
            .order_by("integration_id", "name", "pk")
            .values_list(
                "integration_id", "pk", "name", "scheme", "cadence_s", "max_silence_s",
                "last_delivery_at", "created",
            )
        )  # fmt: skip
        found: dict[int, list[Endpoint]] = defaultdict(list)
        for iid, *rest in rows:
            found[iid].append(Endpoint(*rest))
        return dict(found)

    return _cached(data, ("endpoints",), read)


# --- Signature failures ------------------------------------------------------------------------


class Drift(NamedTuple):
    since: dt.datetime
    failed: int
    at_least: bool  # everything failed as far back as the lookback reaches


def failing_since(history: list[Minute], min_failed: int = 1) -> Drift | None:
    """When every delivery started failing verification, if the newest ones all fail.

    Walks back from the newest minute while no delivery verified. The minute where verified
    deliveries stop counts as the start when it failed too (the rotation fell inside it), but
    only behind at least one minute of nothing but failures: a lone mixed minute is forged
    traffic among good deliveries, not drift.
    """
    since, failed, run = None, 0, 0
    for m in reversed(history):
        if m.verified:
            if run and m.failed:
                since, failed = m.start, failed + m.failed
            break
        if m.failed:
            since, failed, run = m.start, failed + m.failed, run + 1
    else:
        if since is not None and failed >= min_failed:
            return Drift(since, failed, at_least=True)
    if since is None or failed < min_failed:
        return None
    return Drift(since, failed, at_least=False)


class WebhookSignatureFailures(Kind):
    """Deliveries that fail verification: forged traffic, or our secret out of step."""

    value = RuleKind.WEBHOOK_SIGNATURE_FAILURES
    params = {
        "window_min": Param(15, 1, LOOKBACK_MIN, "window W in minutes"),
        "min_failures": Param(3, 1, 10**9, "fire from this many failed verifications in W"),
    }
    kept_figures = ("rejections", "rotation")

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w = p["window_min"]
        history = minutes(data).get(integ.pk)
        if not history:
            return []
        first = data.minute - dt.timedelta(minutes=w - 1)
        recent = [m for m in history if m.start >= first]
        failed = sum(m.failed for m in recent)
        if failed < p["min_failures"]:
            return []
        verified = sum(m.verified for m in recent)
        total = sum(m.total for m in recent)
        drift = failing_since(history, p["min_failures"])
        facts = [
            ["Failed verification", f"{failed:,} of {total:,} deliveries in {w} min"],
            ["Verified", f"{verified:,} in {w} min"],
        ]
        figures = {"failed": failed, "verified": verified, "total": total, "window_min": w}
        if drift is not None:
            when = f"{drift.since:%H:%M}"
            since = f"since at least {when}" if drift.at_least else f"since {when}"
            title = f"{integ} — webhook signatures failing {since} UTC — check the rotated secret"
            summary = (
                f"Every webhook delivery {since} UTC fails verification while they verified "
                "before: the provider signs with a secret Upstream does not hold. After a "
                "rotation, add the new secret to the endpoint (keep the old one with an end "
                "date until the provider has switched)."
            )
            if drift.at_least:
                summary = (
                    f"Every webhook delivery {since} UTC fails verification: the provider signs "
                    "with a secret Upstream does not hold. Check the endpoint's secret against "
                    "the provider's settings, and the one just rotated."
                )
            figures |= {"pattern": "secret_drift", "since": drift.since.isoformat()}
            facts.insert(0, ["Failing since", f"{drift.since:%Y-%m-%d %H:%M} UTC"])
        else:
            title = (
                f"{integ} — {failed:,} webhook deliveries failed verification in {w} min "
                f"among {verified:,} good ones — forged traffic?"
            )
            summary = (
                "A few deliveries fail verification while the rest verify: someone may be "
                "sending forged or replayed webhooks to the endpoint's URL. Keep the URL "
                "private; if it leaked, create a new endpoint and move the provider to it."
            )
            figures["pattern"] = "forged"
        figures["facts"] = facts
        return [Finding(self.rule, integ, title=title, summary=summary, figures=figures)]

    def opened(self, finding: Finding, now: dt.datetime) -> None:
        """Why deliveries were refused (bounded raw rows) and any secret rotated lately.

        Buckets count 401s but not whether the signature was wrong or the delivery came
        outside the replay window; the newest rejected rows say. One read each, per new alert.
        """
        since = now - dt.timedelta(minutes=self.p["window_min"])
        codes = Counter(
            RequestLog.objects.filter(
                integration_id=finding.integration.pk,
                created__gte=since,
                source=Source.WEBHOOK,
                status=401,
            )
            .order_by("-created")
            .values_list("error_code", flat=True)[:REJECTIONS_SCANNED]
        )
        figures = finding.figures
        if codes:
            figures["rejections"] = dict(codes.most_common())
            words = {"bad_signature": "bad or missing signature", "expired": "outside the window"}
            figures["facts"].append(
                [
                    "Refused for",
                    ", ".join(f"{n:,} × {words.get(c, c or 'unknown')}" for c, n in codes.items()),
                ]
            )
            if codes.get("expired", 0) > sum(codes.values()) / 2:
                finding.summary += (
                    " Most were refused as outside the replay window: check the clocks, or "
                    "whether the provider is delivering a backlog late."
                )
        horizon = now - dt.timedelta(minutes=LOOKBACK_MIN)
        rotated = (
            WebhookSecret.objects.filter(endpoint__integration_id=finding.integration.pk)
            .filter(Q(created__gte=horizon) | Q(not_after__gte=horizon, not_after__lte=now))
            .order_by("-created")
            .values_list("fingerprint", "created", "not_after")[:5]
        )
        notes = []
        for fingerprint, created, not_after in rotated:
            shown = fingerprint or "a secret"
            if not_after is not None and horizon <= not_after <= now:
                notes.append(f"{shown} ended {not_after:%H:%M} UTC")
            elif created >= horizon:
                notes.append(f"{shown} added {created:%H:%M} UTC")
        if notes:
            figures["rotation"] = notes
            figures["facts"].append(["Secrets changed lately", "; ".join(notes)])


# --- Webhooks stopped --------------------------------------------------------------------------


def _refused_lately(data: BucketData, integration_id: int, seconds: float) -> bool:
    """Whether deliveries arrived in the last `seconds` without verifying.

    The endpoint's last delivery counts verified ones only: while every delivery fails
    verification the provider has not stopped, and the signature rule is the one to speak.
    """
    since = data.now - dt.timedelta(seconds=seconds)
    return any(m.total for m in minutes(data).get(integration_id, ()) if m.start >= since)


class WebhooksStopped(Kind):
    """An endpoint hears nothing for longer than usual while we still call the provider."""

    value = RuleKind.WEBHOOKS_STOPPED
    params = {
        "window_min": Param(15, 1, 1440, "our own calls are counted over W minutes"),
        "min_calls": Param(5, 1, 10**9, "… and must be at least this many"),
        "cadence_factor": Param(CADENCE_FACTOR, 1.5, 1000, "silent for this many learned gaps"),
        "min_silence_min": Param(MIN_SILENCE_MIN, 1, 10080, "… and at least this many minutes"),
    }

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        found = endpoints(data).get(integ.pk)
        if not found:
            return []
        calls = own_calls(data, p["window_min"]).get(integ.pk, 0)
        if calls < p["min_calls"]:
            return []  # we are quiet too: nothing to compare the silence with
        findings = []
        for ep in found:
            limit = silence_limit_s(
                ep.cadence_s,
                ep.max_silence_s,
                factor=p["cadence_factor"],
                floor_min=p["min_silence_min"],
            )
            if limit is None:
                continue  # no set maximum and no cadence learned yet
            last = ep.last_delivery_at or ep.created
            silent = (data.now - last).total_seconds()
            if silent <= limit or _refused_lately(data, integ.pk, limit):
                continue
            label = ep.name or ep.scheme
            usual = (
                f"set maximum {duration(limit)}"
                if ep.max_silence_s
                else f"usually every {duration(ep.cadence_s)}"
            )
            heard = f"{ep.last_delivery_at:%Y-%m-%d %H:%M} UTC" if ep.last_delivery_at else "never"
            findings.append(
                Finding(
                    self.rule,
                    integ,
                    endpoint=f"webhook #{ep.pk}",
                    title=f"{integ} — webhooks stopped: nothing at {label} for "
                    f"{duration(silent)} ({usual}) while our calls go on",
                    summary="The provider has stopped delivering webhooks while your "
                    "application still calls it: check the webhook's status and failure log "
                    "in the provider's dashboard (many disable an endpoint after repeated "
                    "failed deliveries), and that its URL still points here.",
                    figures={
                        "endpoint_id": ep.pk,
                        "silent_s": round(silent),
                        "limit_s": round(limit),
                        "own_calls": calls,
                        "facts": [
                            ["Last delivery", heard],
                            ["Silent for", f"{duration(silent)} ({usual})"],
                            ["Our calls meanwhile", f"{calls:,} in {p['window_min']} min"],
                        ],
                    },
                )
            )
        return findings


# --- Delivery lag ------------------------------------------------------------------------------


class WebhookLag(Kind):
    """Deliveries arrive long after the provider stamped them (schemes with a timestamp)."""

    value = RuleKind.WEBHOOK_LAG
    params = {
        "window_min": Param(15, 1, 1440, "window W in minutes"),
        "percentile": Param(95.0, 1, 100, "which percentile of the delivery lag"),
        "threshold_ms": Param(60_000, 1, 86_400_000, "fire at this lag (ms)"),
        "min_volume": Param(5, 1, 10**9, "only with at least this many deliveries in W"),
    }

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w, q = p["window_min"], p["percentile"]
        hist, total, longest = lag(data, w).get(integ.pk, (Histogram(), 0, None))
        if total < p["min_volume"]:
            return []
        value = hist.percentile(q, None, longest)
        if value is None or value < p["threshold_ms"]:
            return []
        shown = duration(value / 1000)
        limit = duration(p["threshold_ms"] / 1000)
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — webhook delivery lag p{q:g} {shown} in {w} min "
                f"(threshold {limit})",
                summary="Webhooks reach Upstream long after the provider stamped them: the "
                "provider is queueing or retrying deliveries (a backlog on their side, or "
                "earlier deliveries to this endpoint failing).",
                figures={
                    "percentile": q,
                    "value_ms": round(value, 1),
                    "window_min": w,
                    "facts": [
                        [f"p{q:g} delivery lag", f"{shown} (threshold {limit})"],
                        ["Longest", duration(longest / 1000) if longest is not None else "—"],
                        ["Deliveries in the window", f"{total:,} in {w} min"],
                    ],
                },
            )
        ]


WEBHOOK_KINDS: tuple[type[Kind], ...] = (WebhookSignatureFailures, WebhooksStopped, WebhookLag)
