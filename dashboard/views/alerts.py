"""Alerts: open / acknowledged / resolved lists, one alert, its actions, and the rules."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.access import role_required
from dashboard.forms import RANGES, AcknowledgeForm, SilenceForm
from dashboard.templatetags import upstream as units
from dashboard.views import bad_input, is_partial, render_page
from monitoring import audit
from monitoring.alerts import lifecycle as alerting
from monitoring.alerts import notify
from monitoring.alerts.forms import TYPED_MARKER, TypedRuleForm
from monitoring.models import Alert, AlertRule, AlertState, Silence
from monitoring.roles import Action

TABS = [
    (AlertState.FIRING, "Open"),
    (AlertState.ACKNOWLEDGED, "Acknowledged"),
    (AlertState.RESOLVED, "Resolved"),
]
LIST_LIMIT = 50  # alerts per page


def _state_from(request) -> str:
    state = request.GET.get("state") or AlertState.FIRING
    return state if state in AlertState.values else ""


def _tabs() -> list[tuple[str, str, int | None]]:
    counts = dict(
        Alert.objects.exclude(state=AlertState.RESOLVED)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    return [(value, label, counts.get(value)) for value, label in TABS]


def _silence_for(alert: Alert, silences: list[Silence]) -> Silence | None:
    """The active silence muting this alert, if any (the card shows it and can end it)."""
    for s in silences:
        if s.integration_id in (None, alert.integration_id) and s.rule_kind in (
            "",
            alert.rule.kind,
        ):
            return s
    return None


def _active_silences() -> list[Silence]:
    now = timezone.now()
    return list(
        Silence.objects.filter(starts_at__lte=now, ends_at__gt=now)
        .select_related("integration", "author")
        .order_by("ends_at")[:50]
    )


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def alert_list(request):
    state = _state_from(request)
    if not state:
        return bad_input(request, "Choose the firing, acknowledged or resolved alerts.")
    order = "-resolved_at" if state == AlertState.RESOLVED else "-first_seen"
    # Counted per state on the (state, first_seen) index; pages beyond the last show the last.
    page = Paginator(
        Alert.objects.filter(state=state)
        .select_related("rule", "integration", "acknowledged_by")
        .order_by(order, "-id"),
        LIST_LIMIT,
    ).get_page(request.GET.get("page"))
    alerts = list(page)
    now = timezone.now()
    silences = list(
        Silence.objects.filter(ends_at__gt=now)
        .select_related("integration", "author")
        .order_by("ends_at")[:50]
    )
    active = [s for s in silences if s.starts_at <= now]
    for alert in alerts:
        alert.active_silence = _silence_for(alert, active) if alert.is_open else None
    context = {
        "alerts": alerts,
        "state": state,
        "tabs": _tabs(),
        "silences": silences,
        "unheard": notify.unheard_alerts(limit=50) if state == AlertState.FIRING else [],
        "page": page,
        "nav": "alerts",
    }
    return render_page(request, "dashboard/alerts.html", context)


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def alert_detail(request, pk: int):
    alert = get_object_or_404(
        Alert.objects.select_related("rule", "integration", "acknowledged_by"), pk=pk
    )
    age = timezone.now() - alert.first_seen
    # The shortest chart range that still shows the alert's start.
    chart_range = next((k for k, span in RANGES.items() if span >= age), "30d")
    figures = alert.figures if isinstance(alert.figures, dict) else {}
    facts = figures.get("facts") or []
    endpoints = [e for e in figures.get("endpoints") or [] if isinstance(e, dict)]
    alert.active_silence = _silence_for(alert, _active_silences()) if alert.is_open else None
    notifications = list(alert.notifications.order_by("-created")[:50])
    deliveries = list(alert.deliveries.select_related("channel").order_by("-created")[:50])
    context = {
        "alert": alert,
        "facts": [f for f in facts if isinstance(f, list | tuple) and len(f) == 2],
        "endpoints": endpoints,
        "notifications": notifications,
        "deliveries": deliveries,
        "plan": notify.plan(alert),
        "inhibits": list(alert.inhibits.select_related("rule").order_by("first_seen")[:50]),
        "nothing_sent": _why_nothing_sent(alert, notifications, deliveries),
        "chart_range": chart_range,
        "nav": "alerts",
    }
    return render_page(request, "dashboard/alert.html", context)


def _why_nothing_sent(alert: Alert, notifications: list, deliveries: list) -> str:
    """Why no message went out, in words, when none did."""
    if any(n.status in ("sent", "pending") for n in notifications) or any(
        d.status in ("sent", "pending") for d in deliveries
    ):
        return ""
    held = [x.error for x in (*notifications, *deliveries) if x.error]
    if held:
        return f"Nothing was sent: {held[0]}."
    if alert.inhibited_by_id:
        outage = alert.inhibited_by_id
        return f"Nothing was sent: this alert is part of the provider-down alert #{outage}."
    return (
        "Nothing was sent: nobody is routed for this alert — no rule recipients, channels, "
        "notification preferences, integration owner or Admin with an e-mail address."
    )


def _after_action(
    request, alert: Alert, *, error: str = "", status: int = 200, silenced: str = ""
) -> HttpResponse:
    """HTMX gets the alert's card back (with the error in it, if any) and, out of band, the
    tab counts and the nav badge; a form post, the page."""
    alert.refresh_from_db()
    if is_partial(request):
        alert.active_silence = _silence_for(alert, _active_silences()) if alert.is_open else None
        context = {
            "alert": alert,
            "error": error,
            "oob": True,
            "silenced": silenced,
            "tabs": _tabs(),
            "state": _current_tab(request),
        }
        return render(request, "dashboard/_alert.html", context, status=status)
    if error:
        return render(
            request,
            "error.html",
            {"status": status, "title": "Bad request", "message": error},
            status=status,
        )
    return redirect("alert", pk=alert.pk)


def _current_tab(request) -> str:
    """The tab the page that sent this HTMX request shows (its URL's ?state=)."""
    url = request.headers.get("HX-Current-URL", "")
    state = (parse_qs(urlsplit(url).query).get("state") or [AlertState.FIRING])[0]
    return state if state in AlertState.values else AlertState.FIRING


@require_POST
@role_required(Action.OPERATE)
def alert_acknowledge(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    form = AcknowledgeForm(request.POST)
    if not form.is_valid():
        return _after_action(request, alert, error="The note is too long.", status=400)
    try:
        alerting.acknowledge(
            alert, user=request.user, note=form.cleaned_data["note"], request=request
        )
    except ValueError as exc:
        return _after_action(request, alert, error=str(exc), status=400)
    return _after_action(request, alert)


@require_POST
@role_required(Action.OPERATE)
def alert_resolve(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    try:
        alerting.resolve(alert, user=request.user, request=request)
    except ValueError as exc:
        return _after_action(request, alert, error=str(exc), status=400)
    return _after_action(request, alert)


@require_POST
@role_required(Action.OPERATE)
def alert_silence(request, pk: int):
    alert = get_object_or_404(Alert.objects.select_related("rule", "integration"), pk=pk)
    form = SilenceForm(request.POST)
    if not form.is_valid():
        return _after_action(request, alert, error="Choose how long to silence for.", status=400)
    try:
        silence = alerting.create_silence(
            user=request.user,
            integration=alert.integration,
            rule_kind=alert.rule.kind,
            ends_at=form.ends_at(),
            reason=form.cleaned_data["reason"],
            request=request,
        )
    except ValueError as exc:
        return _after_action(request, alert, error=str(exc), status=400)
    return _after_action(request, alert, silenced=f"until {units.utc_short(silence.ends_at)}")


@require_POST
@role_required(Action.OPERATE)
def silence_end(request, pk: int):
    """End a silence early: from an alert's card (HTMX gets the card back) or the silences list."""
    silence = get_object_or_404(Silence, pk=pk)
    alert_pk = request.POST.get("alert", "")
    alert = None
    if alert_pk:
        if not alert_pk.isdigit():
            return bad_input(request, "The alert must be a number.")
        alert = get_object_or_404(Alert.objects.select_related("rule", "integration"), pk=alert_pk)
    try:
        alerting.end_silence(silence, user=request.user, request=request)
    except ValueError as exc:
        if alert is not None:
            return _after_action(request, alert, error=str(exc), status=400)
        return bad_input(request, str(exc))
    if alert is not None:
        return _after_action(request, alert)
    return redirect("alerts")


@require_GET
@role_required(Action.VIEW)
def rule_list(request):
    rules = list(
        AlertRule.objects.select_related("integration")
        .annotate(open_alerts=Count("alerts", filter=~Q(alerts__state=AlertState.RESOLVED)))
        .order_by("kind", "name")
    )
    return render(request, "dashboard/rules.html", {"rules": rules, "nav": "alerts"})


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def rule_edit(request, pk: int | None = None):
    rule = get_object_or_404(AlertRule, pk=pk) if pk is not None else None
    before = audit.snapshot(rule) if rule is not None else None
    form = TypedRuleForm(request.POST or None, instance=rule)
    _present(form)
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                saved = form.save()
                audit.record_change(request, saved, before)
                form.save_route(request)
            return redirect("alert_rules")
        status = 400
    else:
        status = 200
    context = {
        "form": form,
        "rule": rule,
        "kind_groups": form.kind_groups(),
        "param_names": form.param_names(),
        "typed_marker": TYPED_MARKER,
        "nav": "alerts",
    }
    return render(request, "dashboard/rule_form.html", context, status=status)


def _present(form) -> None:
    """Labels and sizes for this page; each kind's parameters are fields of their own."""
    fields = form.fields
    fields["params"].help_text = ""
    fields["recipients"].widget.attrs.update(rows=2)
    fields["repeat_interval_s"].label = "Remind every (seconds)"
    fields["recovery_s"].label = "Resolve after clear for (seconds)"
