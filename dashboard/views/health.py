"""The overview (a verdict card per integration) and one integration's charts and tables.

Both read only the metrics query API (monitoring.metrics) plus bounded, indexed queries:
newest failures for "recent errors", hour buckets for deprecations, open alerts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q, Sum
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.html import json_script
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard import charts, counters, verdict
from dashboard.access import role_required
from dashboard.forms import RANGE_LABELS, RANGES, BadInput, RangeForm, clean_or_raise
from dashboard.templatetags import upstream as units
from dashboard.views import bad_input, render_page
from monitoring import metrics
from monitoring.models import (
    Alert,
    AlertState,
    Grain,
    Integration,
    MetricBucket,
    Outcome,
    Probe,
    RequestLog,
    RuleKind,
    Source,
)
from monitoring.roles import Action

# "Our calls": traffic through the instrumented client. Probes are the provider's side.
CALLS = Source.CLIENT
RECENT_ERRORS_SCANNED = 500
RECENT_ERROR_GROUPS = 10
DEPRECATIONS_SHOWN = 5
OPEN_ALERTS_SHOWN = 20
MARKER_ALERTS = 100


def _window(request):
    form = RangeForm(request.GET)
    clean_or_raise(form)
    return form.window()


def _range_context(window) -> dict:
    return {"window": window, "ranges": [(k, RANGE_LABELS[k]) for k in RANGES]}


@dataclass
class Card:
    """One integration on the overview, its figures already in words: fifty of these render
    in a few milliseconds only if the template has little left to do."""

    integration: Integration
    link: str
    verdict: verdict.Verdict
    total: int
    stats: list[tuple[str, str]]
    spark: str  # the sparkline's json_script element
    open_alerts: int = 0
    probes: int = 0


def _card(integration, verdict_, summary, chart: dict, open_alerts: int, probes: int) -> Card:
    headroom = (
        summary.ratelimit_remaining_min / summary.ratelimit_limit
        if summary.ratelimit_remaining_min is not None and summary.ratelimit_limit
        else None
    )
    return Card(
        integration=integration,
        link=reverse("integration", args=[integration.pk]),
        verdict=verdict_,
        total=summary.total,
        stats=[
            ("Requests", units.count(summary.total)),
            ("Errors", units.pct(summary.error_rate)),
            ("p95", units.ms(summary.p95)),
            ("Min quota left", units.pct(headroom)),
        ],
        spark=json_script(chart, f"data-spark-{integration.pk}"),
        open_alerts=open_alerts,
        probes=probes,
    )


def _verdicts(ids: list[int], states: dict[int, list[str]], now: dt.datetime) -> dict:
    start = now - verdict.WINDOW
    calls = counters.window_totals(ids, start, now, source=CALLS)
    runs = counters.window_totals(ids, start, now, source=Source.PROBE)
    return {
        iid: verdict.judge(
            calls=calls[iid][0],
            call_error_rate=calls[iid][1],
            probe_runs=runs[iid][0],
            probe_error_rate=runs[iid][1],
            probe_states=states.get(iid, []),
        )
        for iid in ids
    }


def _probe_states(ids: list[int]) -> dict[int, list[str]]:
    states: dict[int, list[str]] = {}
    rows = Probe.objects.filter(integration_id__in=ids, enabled=True).values_list(
        "integration_id", "state"
    )
    for iid, state in rows:
        states.setdefault(iid, []).append(state)
    return states


def _auth_alerts(start: dt.datetime, end: dt.datetime, integration_id: int | None = None):
    qs = Alert.objects.filter(
        rule__kind=RuleKind.AUTH_SPIKE, first_seen__gte=start, first_seen__lt=end
    )
    if integration_id is not None:
        qs = qs.filter(integration_id=integration_id)
    return list(qs.order_by("-first_seen").only("first_seen", "title")[:MARKER_ALERTS])


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def overview(request):
    try:
        window = _window(request)
    except BadInput as exc:
        return bad_input(request, str(exc))
    start, end = window.start, window.end
    integrations = list(Integration.objects.filter(active=True).order_by("name", "environment"))
    ids = [i.pk for i in integrations]
    cards: list[Card] = []
    auth_chart = None
    if ids:
        summaries = metrics.summary_by_integration(ids, start, end, source=CALLS, now=end)
        grain, step = charts.spark_step(start, end)
        lines = counters.series_by_integration(
            ids, start, end, source=CALLS, grain=grain, step=step
        )
        states = _probe_states(ids)
        verdicts = _verdicts(ids, states, end)
        open_counts = dict(
            Alert.objects.filter(integration_id__in=ids)
            .exclude(state=AlertState.RESOLVED)
            .values_list("integration_id")
            .annotate(n=Count("id"))
            .values_list("integration_id", "n")
        )
        for i in integrations:
            cards.append(
                _card(
                    i,
                    verdicts[i.pk],
                    summaries[i.pk],
                    charts.sparkline(lines[i.pk], end),
                    open_counts.get(i.pk, 0),
                    len(states.get(i.pk, [])),
                )
            )
        auth_chart = charts.auth_across(lines, integrations, _auth_alerts(start, end))
    context = {
        "cards": cards,
        "auth_chart": auth_chart,
        "nav": "overview",
        **_range_context(window),
    }
    return render_page(request, "dashboard/overview.html", context)


@dataclass
class ErrorGroup:
    code: str
    count: int = 0
    last_seen: dt.datetime | None = None
    message: str = ""
    statuses: Counter = field(default_factory=Counter)
    endpoints: Counter = field(default_factory=Counter)
    filter_code: str = ""

    # Templates look a Counter's attributes up as keys, so they get plain lists.
    @property
    def status_list(self) -> list[str]:
        return [str(s) for s, _ in self.statuses.most_common()]

    @property
    def endpoint_list(self) -> list[str]:
        return [e for e, _ in self.endpoints.most_common(2)]


def recent_errors(integration_id: int, start: dt.datetime, end: dt.datetime) -> list[ErrorGroup]:
    """The newest failures in the window, grouped by parsed error code (bounded scan)."""
    rows = (
        RequestLog.objects.filter(
            integration_id=integration_id, created__gte=start, created__lt=end
        )
        # Same shape as the partial index reqlog_failures_time's condition.
        .filter(~Q(outcome=Outcome.OK))
        .order_by("-created")
        .values_list(
            "created", "error_code", "error_message", "status", "outcome", "method", "path"
        )[:RECENT_ERRORS_SCANNED]
    )
    groups: dict[str, ErrorGroup] = {}
    outcome_labels = dict(Outcome.choices)
    for created, code, message, status, outcome, method, path in rows:
        key = code or (f"HTTP {status}" if status else outcome_labels.get(outcome, outcome))
        group = groups.get(key)
        if group is None:
            group = groups[key] = ErrorGroup(code=key, last_seen=created, filter_code=code)
        group.count += 1
        if not group.message and message:
            group.message = message
        group.statuses[status or outcome_labels.get(outcome, outcome)] += 1
        group.endpoints[f"{method} {path}"] += 1
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.code))
    return ordered[:RECENT_ERROR_GROUPS]


@dataclass
class Deprecation:
    endpoint: str
    responses: int
    last_seen: dt.datetime
    sunset_at: dt.datetime | None = None
    deprecation_at: dt.datetime | None = None
    link: str = ""


def deprecations(integration_id: int, start: dt.datetime) -> list[Deprecation]:
    """Endpoints answered with Deprecation/Sunset headers, from hour buckets; the sunset date
    comes from one raw row inside the endpoint's latest such hour (a bounded, indexed read)."""
    found = (
        MetricBucket.objects.filter(
            integration_id=integration_id,
            grain=Grain.HOUR,
            start__gte=start - dt.timedelta(hours=1),
            deprecated__gt=0,
        )
        .exclude(endpoint="")
        .values("endpoint")
        .annotate(n=Sum("deprecated"), last=Max("start"))
        .order_by("-last")[:DEPRECATIONS_SHOWN]
    )
    out = []
    for row in found:
        method, _, path = row["endpoint"].partition(" ")
        hour = row["last"]
        raw = (
            RequestLog.objects.filter(
                integration_id=integration_id,
                created__gte=hour,
                created__lt=hour + dt.timedelta(hours=1),
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
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(out, key=lambda d: (d.sunset_at or far, d.endpoint))


SNIPPET = """from monitoring.client import MonitoredClient

with MonitoredClient(integration="{slug}", environment="{env}",
                     base_url="{base}") as client:
    response = client.get("/v1/...")  # every attempt is recorded, secrets redacted"""


def client_snippet(integration: Integration) -> str:
    return SNIPPET.format(
        slug=integration.slug,
        env=integration.environment,
        base=integration.base_url or "https://api.example.com",
    )


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def integration_detail(request, pk: int):
    integration = get_object_or_404(Integration, pk=pk)
    try:
        window = _window(request)
    except BadInput as exc:
        return bad_input(request, str(exc))
    start, end, ids = window.start, window.end, [pk]
    grain, step = charts.step_for(start, end)
    calls = metrics.series(ids, start, end, source=CALLS, grain=grain, step=step, now=end)
    probe_runs = counters.series_by_integration(
        ids, start, end, source=Source.PROBE, grain=calls.grain, step=calls.step
    )[pk]
    totals = metrics.summary(ids, start, end, source=CALLS, now=end)
    probes = list(integration.probes.filter(enabled=True).order_by("name"))
    states = {pk: [p.state for p in probes]}
    open_alerts = list(
        Alert.objects.filter(integration=integration)
        .exclude(state=AlertState.RESOLVED)
        .select_related("rule", "integration", "acknowledged_by")
        .order_by("-first_seen")[:OPEN_ALERTS_SHOWN]
    )
    has_calls = totals.total > 0
    context = {
        "integration": integration,
        "verdict": _verdicts(ids, states, end)[pk],
        "totals": totals,
        "headroom": (
            totals.ratelimit_remaining_min / totals.ratelimit_limit
            if totals.ratelimit_remaining_min is not None and totals.ratelimit_limit
            else None
        ),
        "has_calls": has_calls,
        "has_probe_runs": any(p.total for p in probe_runs.points),
        "has_ratelimit": any(p.ratelimit_limit for p in calls.points),
        "traffic_chart": charts.traffic(calls),
        "latency_chart": charts.latency(calls),
        "auth_chart": charts.auth_failures(calls, _auth_alerts(start, end, pk)),
        "ratelimit_chart": charts.rate_limit(calls),
        "probe_chart": charts.probe_outcomes(probe_runs),
        "top_endpoints": (
            metrics.top_endpoints(pk, start, end, by="volume", limit=10, source=CALLS, now=end)
            if has_calls
            else []
        ),
        "errors": recent_errors(pk, start, end) if has_calls else [],
        "errors_scanned": RECENT_ERRORS_SCANNED,
        "deprecations": deprecations(pk, start),
        "open_alerts": open_alerts,
        "probes": probes,
        "snippet": "" if has_calls else client_snippet(integration),
        "step": calls.step,
        "nav": "overview",
        **_range_context(window),
    }
    return render_page(request, "dashboard/integration.html", context)
