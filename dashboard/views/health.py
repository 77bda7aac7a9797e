"""The overview (attention first, the healthy rest compact and paged) and one integration.

Traffic, recent errors and deprecations come from monitoring.metrics; the views themselves
query only probes and open alerts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from django import forms
from django.db.models import CharField, Count, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.html import json_script
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard import charts, verdict
from dashboard.access import role_required
from dashboard.forms import RANGE_LABELS, RANGES, BadInput, RangeForm, clean_or_raise
from dashboard.templatetags import upstream as units
from dashboard.views import bad_input, render_page
from monitoring import metrics, scorecard
from monitoring.alerts import webhook_rules
from monitoring.models import (
    Alert,
    AlertState,
    Environment,
    Integration,
    Probe,
    RuleKind,
    Source,
    WebhookEndpoint,
)
from monitoring.roles import Action

# "Our calls": traffic through the instrumented client. Probes are the provider's side.
CALLS = Source.CLIENT
RECENT_ERRORS_SCANNED = 500
RECENT_ERROR_GROUPS = 10
DEPRECATIONS_SHOWN = 5
# Version drift: what the newest responses of the last day announced.
DRIFT_WINDOW = dt.timedelta(days=1)
DRIFT_SHOWN = 5
OPEN_ALERTS_SHOWN = 20
MARKER_ALERTS = 100
PAGE_SIZE = 50
"""Integrations per overview page: full cards for those needing attention, then compact rows."""
# Verdicts that put an integration in the attention group (open alerts always do), worst first.
ATTENTION = {
    "provider_down": 1,
    "provider_incident": 1,
    "our_calls_failing": 2,
    "calls_failing": 2,
    "degraded": 3,
    "webhook_signatures_failing": 2,
    "webhooks_stopped": 3,
}
# Webhooks: event types listed on the integration page.
WEBHOOK_EVENT_TYPES_SHOWN = 10
ENV_ORDER = {"production": 0, "staging": 1, "sandbox": 2}


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
    grade: str = ""  # the newest stored scorecard's letter


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


def _verdicts(
    ids: list[int],
    states: dict[int, list[str]],
    now: dt.datetime,
    incidents: dict[int, verdict.Incident] | None = None,
    scope: Iterable[int] | QuerySet | None = None,
) -> dict:
    """Each integration's verdict. ``scope``: the ids as a ``values("pk")`` queryset, which
    the ORM's queries take as a subquery (it prepared a list of a thousand ids value by
    value, ~5 ms a query); ``ids`` by default."""
    start = now - verdict.WINDOW
    calls = metrics.window_totals(ids, start, now, source=CALLS)
    runs = metrics.window_totals(ids, start, now, source=Source.PROBE)
    incidents = incidents or {}
    # Diagnoses (expired token, API access disabled …) for the integrations with failures
    # only: a healthy page costs no query for them.
    failing = [iid for iid in ids if calls[iid][1]]
    codes = metrics.recent_error_codes(failing, start, now, source=CALLS) if failing else {}
    judged = {
        iid: verdict.judge(
            calls=calls[iid][0],
            call_error_rate=calls[iid][1],
            probe_runs=runs[iid][0],
            probe_error_rate=runs[iid][1],
            probe_states=states.get(iid, []),
            incident=incidents.get(iid),
            error_codes=codes.get(iid),
        )
        for iid in ids
    }
    hooks = _webhook_signals(ids if scope is None else scope, now)
    for iid in hooks.keys() & judged.keys():  # the scope may have grown since ids were read
        judged[iid] = verdict.with_webhooks(
            judged[iid],
            hooks[iid],
            calls=calls[iid][0],
            probe_runs=runs[iid][0],
            probe_error_rate=runs[iid][1],
            probe_states=states.get(iid, []),
        )
    return judged


def _webhook_signals(
    ids: Iterable[int] | QuerySet, now: dt.datetime
) -> dict[int, verdict.Webhooks]:
    """The webhook signal of each integration (``ids``: a list, or a ``values("pk")``
    queryset) that has an endpoint: one query without any, one more with (the window's
    delivery counts)."""
    # A firing signature alert dates a drift (from the minute buckets): read alongside.
    drift = (
        Alert.objects.filter(
            integration_id=OuterRef("integration_id"),
            rule__kind=RuleKind.WEBHOOK_SIGNATURE_FAILURES,
            clear_since__isnull=True,
        )
        .exclude(state=AlertState.RESOLVED)
        .order_by("-first_seen")
        .annotate(since=KT("figures__since"))
        .values("since")[:1]
    )
    endpoints: dict[int, list[tuple]] = {}
    since: dict[int, dt.datetime] = {}
    rows = (
        WebhookEndpoint.objects.filter(integration_id__in=ids, active=True)
        .annotate(drift_since=Subquery(drift, output_field=CharField()))
        .values_list(
            "integration_id", "cadence_s", "max_silence_s", "last_delivery_at", "created",
            "drift_since",
        )
    )  # fmt: skip
    for iid, *rest, drift_since in rows:
        endpoints.setdefault(iid, []).append(rest)
        if drift_since:  # only a drift has a moment; a forged pattern does not
            with contextlib.suppress(ValueError):
                since[iid] = dt.datetime.fromisoformat(drift_since)
    if not endpoints:
        return {}
    hook_ids = sorted(endpoints)
    counts = metrics.window_counts(hook_ids, now - verdict.WINDOW, now, source=Source.WEBHOOK)
    signals = {}
    for iid in hook_ids:
        c = counts[iid]
        silent, usual = None, ""
        for cadence_s, max_silence_s, last, created in endpoints[iid]:
            limit = webhook_rules.silence_limit_s(cadence_s, max_silence_s)
            gap = now - (last or created)
            if c.total or limit is None or gap.total_seconds() <= limit:
                continue
            if silent is None or gap > silent:
                silent = gap
                usual = (
                    f"set maximum {webhook_rules.duration(limit)}"
                    if max_silence_s
                    else f"usually every {webhook_rules.duration(cadence_s)}"
                )
        signals[iid] = verdict.Webhooks(
            deliveries=c.total,
            failed=c.s401,
            failing_since=since.get(iid),
            silent_for=silent,
            usual=usual,
        )
    return signals


def _webhook_section(integration: Integration, start, end, grain: str, step) -> dict | None:
    """The integration page's webhook figures, or None (one query) without an endpoint."""
    endpoints = list(integration.webhook_endpoints.order_by("-active", "name", "pk"))
    if not endpoints:
        return None
    s = metrics.series(
        [integration.pk], start, end, source=Source.WEBHOOK, grain=grain, step=step, now=end
    )
    total = sum(p.total for p in s.points)
    verified = sum(p.s2xx for p in s.points)
    failed = sum(p.s401 for p in s.points)
    return {
        "endpoints": [
            {
                "name": ep.name or ep.get_scheme_display(),
                "scheme": ep.get_scheme_display(),
                "active": ep.active,
                "last_delivery_at": ep.last_delivery_at,
                "cadence": webhook_rules.duration(ep.cadence_s) if ep.cadence_s else "",
            }
            for ep in endpoints
        ],
        "total": total,
        "verified": verified,
        "failed": failed,
        "rejected": total - verified - failed,
        "deliveries_chart": charts.webhook_deliveries(s),
        "lag_chart": charts.webhook_lag(s),
        # A delivery's endpoint is "POST /<event type>" (monitoring.webhooks.record).
        "event_types": (
            [
                (e.endpoint.removeprefix("POST /"), e)
                for e in metrics.top_endpoints(
                    integration.pk,
                    start,
                    end,
                    by="volume",
                    limit=WEBHOOK_EVENT_TYPES_SHOWN,
                    source=Source.WEBHOOK,
                    now=end,
                )
            ]
            if total
            else []
        ),
    }


def _probe_states(
    ids: Iterable[int] | QuerySet,
) -> tuple[dict[int, list[str]], dict[int, verdict.Incident]]:
    """Each integration's probe states (``ids``: a list, or a ``values("pk")`` queryset), and
    an incident its status page reports (one query)."""
    states: dict[int, list[str]] = {}
    incidents: dict[int, verdict.Incident] = {}
    rows = Probe.objects.filter(integration_id__in=ids, enabled=True).values_list(
        "integration_id", "state", "incident_name", "incident_url"
    )
    for iid, state, incident, link in rows:
        states.setdefault(iid, []).append(state)
        if incident and iid not in incidents:
            incidents[iid] = verdict.Incident(incident, link)
    return states, incidents


def _auth_alerts(start: dt.datetime, end: dt.datetime, integration_id: int | None = None):
    qs = Alert.objects.filter(
        rule__kind=RuleKind.AUTH_SPIKE, first_seen__gte=start, first_seen__lt=end
    )
    if integration_id is not None:
        qs = qs.filter(integration_id=integration_id)
    return list(qs.order_by("-first_seen").only("first_seen", "title")[:MARKER_ALERTS])


class OverviewFilter(forms.Form):
    """The overview's filters, kept in the URL next to the range."""

    env = forms.ChoiceField(
        choices=[("", "All environments"), *Environment.choices], required=False
    )
    q = forms.CharField(max_length=100, required=False, strip=True)
    page = forms.IntegerField(min_value=1, max_value=100_000, required=False)


@dataclass
class Row:
    """A healthy integration on the overview: one compact line, its figures in words."""

    integration: Integration
    link: str
    verdict: verdict.Verdict
    stats: list[tuple[str, str]]
    spark: str  # a small sparkline's json_script element
    grade: str = ""


def _attention(verdict_: verdict.Verdict, open_alerts: int) -> int | None:
    """Rank of an integration that needs a look (lower first), None when it is fine."""
    if open_alerts:
        return 0
    return ATTENTION.get(verdict_.key)


def _row(integration, verdict_, summary, chart: dict) -> Row:
    return Row(
        integration=integration,
        link=reverse("integration", args=[integration.pk]),
        verdict=verdict_,
        stats=[
            ("Requests", units.count(summary.total)),
            ("Errors", units.pct(summary.error_rate)),
            ("p95", units.ms(summary.p95)),
        ],
        spark=json_script(chart, f"data-spark-{integration.pk}"),
    )


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def overview(request):
    try:
        window = _window(request)
        filters = clean_or_raise(OverviewFilter(request.GET))
    except BadInput as exc:
        return bad_input(request, str(exc))
    start, end = window.start, window.end
    active = Integration.objects.filter(active=True)
    installed = active.exists() if filters["env"] or filters["q"] else None
    if filters["env"]:
        active = active.filter(environment=filters["env"])
    if filters["q"]:
        active = active.filter(name__icontains=filters["q"])
    # Every integration is ranked, but only the page shown needs its model instance: (id,
    # environment) pairs here, a thousand Integration objects cost ~20 ms to build.
    listed = list(active.order_by("name", "environment").values_list("pk", "environment"))
    ids = [pk for pk, _ in listed]
    cards: list[Card] = []
    rows: list[Row] = []
    auth_chart = None
    page = pages = 1
    attention_total = 0
    if ids:
        # Verdicts, probes and alerts for every integration (a few grouped queries), so the
        # ones that need attention sort first; traffic figures only for the page shown.
        scope = active.values("pk")  # a subquery for the ORM's queries, not 1,000 values
        states, incidents = _probe_states(scope)
        verdicts = _verdicts(ids, states, end, incidents, scope)
        open_counts = dict(
            Alert.objects.filter(integration_id__in=scope)
            .exclude(state=AlertState.RESOLVED)
            .values_list("integration_id")
            .annotate(n=Count("id"))
            .values_list("integration_id", "n")
        )
        ranked = []
        for position, (pk, environment) in enumerate(listed):
            rank = _attention(verdicts[pk], open_counts.get(pk, 0))
            if rank is not None:
                attention_total += 1
                ranked.append((0, rank, position, pk))
            else:
                # The healthy rest is grouped by environment on the page.
                ranked.append((1, ENV_ORDER.get(environment, 9), position, pk))
        ranked.sort()
        pages = max(1, -(-len(ranked) // PAGE_SIZE))
        page = min(filters["page"] or 1, pages)
        shown_ranks = ranked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        page_ids = [r[3] for r in shown_ranks]
        objects = Integration.objects.in_bulk(page_ids)
        # One deleted since the list was read is left out, not an error.
        shown = [(look, objects[pk]) for look, _, _, pk in shown_ranks if pk in objects]
        summaries = metrics.summary_by_integration(page_ids, start, end, source=CALLS, now=end)
        grain, step = charts.spark_step(start, end)
        lines = metrics.counts_by_integration(
            page_ids, start, end, source=CALLS, grain=grain, step=step
        )
        for needs_look, i in shown:
            if needs_look == 0:
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
            else:
                rows.append(
                    _row(i, verdicts[i.pk], summaries[i.pk], charts.sparkline(lines[i.pk], end))
                )
        grades = scorecard.latest_grades(page_ids)
        for item in (*cards, *rows):
            item.grade = grades.get(item.integration.pk, "")
        shown_integrations = [i for _, i in shown]
        auth_chart = charts.auth_across(lines, shown_integrations, _auth_alerts(start, end))
    query = {k: v for k, v in (("range", window.key), ("env", filters["env"])) if v}
    if filters["q"]:
        query["q"] = filters["q"]
    context = {
        "cards": cards,
        "rows": rows,
        "auth_chart": auth_chart,
        "filters": filters,
        "environments": Environment.choices,
        "attention_total": attention_total,
        "integration_total": len(ids),
        "installed": bool(ids) or installed,
        "page": page,
        "pages": pages,
        "previous_url": f"?{urlencode({**query, 'page': page - 1})}" if page > 1 else "",
        "next_url": f"?{urlencode({**query, 'page': page + 1})}" if page < pages else "",
        "nav": "overview",
        **_range_context(window),
    }
    return render_page(request, "dashboard/overview.html", context)


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


def _drift(integration: Integration, now: dt.datetime) -> dict | None:
    """Versions the provider announced lately that differ from the expected one, or None."""
    expected = (integration.expected_api_version or "").strip()
    seen = metrics.announced_versions(integration.pk, now - DRIFT_WINDOW)
    if not seen:
        return None
    other = [v for v in seen if v.version != expected] if expected else []
    return {"expected": expected, "seen": seen[:DRIFT_SHOWN], "drifted": other[:DRIFT_SHOWN]}


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
    probe_runs = metrics.counts_by_integration(
        ids, start, end, source=Source.PROBE, grain=calls.grain, step=calls.step
    )[pk]
    totals = metrics.summary(ids, start, end, source=CALLS, now=end)
    probes = list(integration.probes.filter(enabled=True).order_by("name"))
    states = {pk: [p.state for p in probes]}
    reported = next((p for p in probes if p.incident_name), None)
    incidents = (
        {pk: verdict.Incident(reported.incident_name, reported.incident_url)} if reported else {}
    )
    open_alerts = list(
        Alert.objects.filter(integration=integration)
        .exclude(state=AlertState.RESOLVED)
        .select_related("rule", "integration", "acknowledged_by")
        .order_by("-first_seen")[:OPEN_ALERTS_SHOWN]
    )
    has_calls = totals.total > 0
    context = {
        "integration": integration,
        "verdict": _verdicts(ids, states, end, incidents)[pk],
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
        "errors": (
            metrics.recent_errors(
                pk, start, end, scan=RECENT_ERRORS_SCANNED, groups=RECENT_ERROR_GROUPS
            )
            if has_calls
            else []
        ),
        "errors_scanned": RECENT_ERRORS_SCANNED,
        "deprecations": metrics.deprecations(pk, start, limit=DEPRECATIONS_SHOWN),
        "drift": _drift(integration, end),
        "open_alerts": open_alerts,
        "probes": probes,
        "snippet": "" if has_calls else client_snippet(integration),
        "webhooks": _webhook_section(integration, start, end, calls.grain, calls.step),
        "step": calls.step,
        "nav": "overview",
        **_range_context(window),
    }
    return render_page(request, "dashboard/integration.html", context)
