"""Alerts: open / acknowledged / resolved lists, one alert, its actions, and the rules."""

from __future__ import annotations

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
from monitoring import alerts as alerting
from monitoring import audit
from monitoring.models import Alert, AlertRule, AlertState, RuleKind, Silence
from monitoring.roles import Action
from monitoring.rule_forms import AlertRuleForm

TABS = [
    (AlertState.FIRING, "Open"),
    (AlertState.ACKNOWLEDGED, "Acknowledged"),
    (AlertState.RESOLVED, "Resolved"),
]
LIST_LIMIT = 100


def _state_from(request) -> str:
    state = request.GET.get("state") or AlertState.FIRING
    return state if state in AlertState.values else ""


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def alert_list(request):
    state = _state_from(request)
    if not state:
        return bad_input(request, "Choose the firing, acknowledged or resolved alerts.")
    order = "-resolved_at" if state == AlertState.RESOLVED else "-first_seen"
    alerts = list(
        Alert.objects.filter(state=state)
        .select_related("rule", "integration", "acknowledged_by")
        .order_by(order, "-id")[:LIST_LIMIT]
    )
    counts = dict(
        Alert.objects.exclude(state=AlertState.RESOLVED)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    now = timezone.now()
    silences = list(
        Silence.objects.filter(ends_at__gt=now)
        .select_related("integration", "author")
        .order_by("ends_at")[:50]
    )
    context = {
        "alerts": alerts,
        "state": state,
        "tabs": [(value, label, counts.get(value)) for value, label in TABS],
        "silences": silences,
        "limit": LIST_LIMIT,
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
    context = {
        "alert": alert,
        "facts": [f for f in facts if isinstance(f, list | tuple) and len(f) == 2],
        "endpoints": endpoints,
        "notifications": list(alert.notifications.order_by("-created")[:50]),
        "chart_range": chart_range,
        "nav": "alerts",
    }
    return render_page(request, "dashboard/alert.html", context)


def _after_action(
    request, alert: Alert, *, error: str = "", status: int = 200, silenced: str = ""
) -> HttpResponse:
    """HTMX gets the alert's card back (with the error in it, if any); a form post, the page."""
    alert.refresh_from_db()
    if is_partial(request):
        context = {"alert": alert, "error": error, "oob": True, "silenced": silenced}
        return render(request, "dashboard/_alert.html", context, status=status)
    if error:
        return render(
            request,
            "error.html",
            {"status": status, "title": "Bad request", "message": error},
            status=status,
        )
    return redirect("alert", pk=alert.pk)


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
    form = AlertRuleForm(request.POST or None, instance=rule)
    _present(form)
    if request.method == "POST":
        if form.is_valid():
            saved = form.save()
            audit.record_change(request, saved, before)
            return redirect("alert_rules")
        status = 400
    else:
        status = 200
    kinds = dict(RuleKind.choices)
    params = [
        (kinds.get(kind, kind), [(name, p.help, p.default) for name, p in spec.items()])
        for kind, spec in alerting.PARAMS.items()
    ]
    context = {"form": form, "rule": rule, "params": params, "nav": "alerts"}
    return render(request, "dashboard/rule_form.html", context, status=status)


def _present(form) -> None:
    """Labels and sizes for this page; the parameter reference is a table beside the form."""
    fields = form.fields
    fields["params"].help_text = "A JSON object; anything left out takes its default."
    fields["params"].widget.attrs.update(rows=4, spellcheck="false", **{"class": "mono"})
    fields["recipients"].widget.attrs.update(rows=2)
    fields["repeat_interval_s"].label = "Remind every (seconds)"
    fields["recovery_s"].label = "Resolve after clear for (seconds)"
