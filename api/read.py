"""The read API (scope ``read``): integrations, one integration's summary and scorecard,
alerts."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from api.auth import require_key
from api.problems import Problem, endpoint, json_response
from monitoring import metrics
from monitoring.models import Alert, AlertState, Environment, Integration

RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# Verdict thresholds: the share of failed calls that makes an integration degraded / down.
DEGRADED_RATE = 0.05
DOWN_RATE = 0.5
# A stored scorecard older than this is computed again on request.
SCORECARD_FRESH_FOR = timedelta(hours=2)


def _only(request: HttpRequest, *names: str) -> None:
    # A mistyped filter (?stat=firing) must not silently answer everything.
    unknown = sorted(set(request.GET) - set(names))
    if unknown:
        raise Problem(
            400,
            f"Unknown query parameter {unknown[0]!r}"
            + (f"; this endpoint takes {', '.join(names)}." if names else "."),
            errors=[{"field": name, "message": "unknown parameter"} for name in unknown],
        )


def _integration_json(integration: Integration) -> dict:
    return {
        "slug": integration.slug,
        "name": integration.name,
        "environment": integration.environment,
        "base_url": integration.base_url,
        "active": integration.active,
    }


@endpoint("GET")
@require_key("read")
def integrations(request: HttpRequest) -> HttpResponse:
    _only(request)
    found = Integration.objects.order_by("slug", "environment")
    return json_response({"integrations": [_integration_json(i) for i in found]})


def verdict(total: int, error_rate: float | None, auth_failures: int, firing: int) -> str:
    """ok / degraded / down / no_data, from the window's figures and the firing alerts."""
    if not total:
        return "degraded" if firing else "no_data"
    rate = error_rate or 0.0
    if rate >= DOWN_RATE:
        return "down"
    if rate >= DEGRADED_RATE or auth_failures or firing:
        return "degraded"
    return "ok"


def _one_integration(request: HttpRequest, slug: str) -> Integration:
    """The integration a slug (and ?environment=) names; 404/400 problems otherwise."""
    environment = request.GET.get("environment") or None
    if environment is not None and environment not in Environment.values:
        raise Problem(
            400,
            f"environment must be one of {', '.join(Environment.values)}.",
            errors=[{"field": "environment", "message": "unknown environment"}],
        )
    found = Integration.objects.filter(slug=slug)
    if environment:
        found = found.filter(environment=environment)
    matches = list(found[:2])
    if not matches:
        raise Problem(
            404, f"No integration {slug!r}" + (f" in {environment}." if environment else ".")
        )
    if len(matches) > 1:
        raise Problem(
            400,
            f"Integration {slug!r} exists in several environments; pass environment.",
            errors=[{"field": "environment", "message": "required for this slug"}],
        )
    return matches[0]


@endpoint("GET")
@require_key("read")
def summary(request: HttpRequest, slug: str) -> HttpResponse:
    _only(request, "environment", "range")
    window = request.GET.get("range", "24h")
    if window not in RANGES:
        raise Problem(
            400,
            f"range must be one of {', '.join(RANGES)}.",
            errors=[{"field": "range", "message": "unknown range"}],
        )
    integration = _one_integration(request, slug)
    end = timezone.now()
    figures = metrics.summary([integration.pk], end - RANGES[window], end)
    firing = Alert.objects.filter(integration=integration, state=AlertState.FIRING).count()
    auth_failures = figures.s401 + figures.s403
    body = {
        "integration": _integration_json(integration),
        "range": window,
        "start": (end - RANGES[window]).isoformat(),
        "end": end.isoformat(),
        "requests": figures.total,
        "errors": figures.errors,
        "error_rate": figures.error_rate,
        "latency_ms": {"p50": figures.p50, "p95": figures.p95, "p99": figures.p99},
        "status_401": figures.s401,
        "status_403": figures.s403,
        "status_429": figures.s429,
        "min_quota_remaining": figures.ratelimit_remaining_min,
        "quota_limit": figures.ratelimit_limit,
        "firing_alerts": firing,
        "verdict": verdict(figures.total, figures.error_rate, auth_failures, firing),
    }
    return json_response(body)


@endpoint("GET")
@require_key("read")
def scorecard(request: HttpRequest, slug: str) -> HttpResponse:
    """The integration's best-practice scorecard, as the dashboard's scorecard page shows it."""
    from monitoring.scorecard import latest

    _only(request, "environment")
    integration = _one_integration(request, slug)
    body = latest(integration, max_age=SCORECARD_FRESH_FOR).as_json()
    body["integration"] = _integration_json(integration)
    return json_response(body)


@endpoint("GET")
@require_key("read")
def alerts(request: HttpRequest) -> HttpResponse:
    _only(request, "state")
    state = request.GET.get("state") or None
    if state is not None and state not in AlertState.values:
        raise Problem(
            400,
            f"state must be one of {', '.join(AlertState.values)}.",
            errors=[{"field": "state", "message": "unknown state"}],
        )
    found = Alert.objects.select_related("integration", "rule").order_by("-last_seen")
    if state:
        found = found.filter(state=state)
    return json_response({"alerts": [_alert_json(a) for a in found[:500]]})


def _alert_json(alert: Alert) -> dict:
    integration = alert.integration
    return {
        "id": alert.pk,
        "rule": alert.rule.name,
        "kind": alert.rule.kind,
        "severity": alert.rule.severity,
        "state": alert.state,
        "title": alert.title,
        "integration": integration.slug if integration else None,
        "environment": integration.environment if integration else None,
        "endpoint": alert.endpoint,
        "first_seen": alert.first_seen.isoformat(),
        "last_seen": alert.last_seen.isoformat(),
    }
