"""A believable day of traffic for the browser tests: three integrations, three verdicts.

Paubox is healthy; Stripe's key was revoked an hour ago (probes pass, our calls get 401s);
Twilio is down (probes and calls fail). Rows go in the way the recorder writes them: raw rows
and their metric buckets together.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

from django.db import transaction

from monitoring import rollup
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Integration,
    Outcome,
    Probe,
    ProbeFlip,
    ProbeResult,
    ProbeState,
    RequestLog,
    RuleKind,
)

ENDPOINTS = [
    ("GET", "/v1/messages/{id}", 0.45),
    ("POST", "/v1/messages", 0.3),
    ("GET", "/v1/templates", 0.15),
    ("DELETE", "/v1/messages/{id}", 0.1),
]


@dataclass
class Scene:
    paubox: Integration
    stripe: Integration
    twilio: Integration
    auth_alert: Alert
    down_alert: Alert
    auth_rule: AlertRule


def _status_for(name: str, minutes_ago: float, rng: random.Random) -> tuple[int | None, str, str]:
    """(status, outcome, error code) of one call of `name` made `minutes_ago`."""
    if name == "Stripe" and minutes_ago < 60 and rng.random() < 0.7:
        return 401, Outcome.CLIENT_ERROR, "api_key_expired"
    if name == "Twilio" and minutes_ago < 40:
        roll = rng.random()
        if roll < 0.5:
            return 503, Outcome.SERVER_ERROR, "service_unavailable"
        if roll < 0.8:
            return None, Outcome.TIMEOUT, ""
    if name == "Paubox" and 300 < minutes_ago < 330 and rng.random() < 0.3:
        return 429, Outcome.CLIENT_ERROR, "rate_limited"
    roll = rng.random()
    if roll < 0.005:
        return 500, Outcome.SERVER_ERROR, "internal_error"
    if roll < 0.012:
        return 404, Outcome.CLIENT_ERROR, "not_found"
    if roll < 0.015:
        return 403, Outcome.CLIENT_ERROR, "insufficient_scope"
    return 200, Outcome.OK, ""


def _calls(integration: Integration, now: dt.datetime, rng: random.Random, per_hour: int):
    rows = []
    name = integration.name
    for minute in range(24 * 60, 0, -1):
        # A daily rhythm: busy afternoons, quiet nights.
        hour = (now - dt.timedelta(minutes=minute)).hour
        rate = per_hour / 60 * (0.6 + 0.4 * math.sin((hour - 8) / 24 * 2 * math.pi))
        count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
        if (name == "Stripe" and minute <= 60) or (name == "Twilio" and minute <= 40):
            count = max(count, 2)  # failing calls get retried
        for _ in range(count):
            created = now - dt.timedelta(minutes=minute) + dt.timedelta(seconds=rng.random() * 59)
            minutes_ago = (now - created).total_seconds() / 60
            method, path = rng.choices(
                [(m, p) for m, p, _ in ENDPOINTS], weights=[w for *_, w in ENDPOINTS]
            )[0]
            status, outcome, code = _status_for(name, minutes_ago, rng)
            base = {"Paubox": 140, "Stripe": 220, "Twilio": 310}[name]
            latency = rng.lognormvariate(math.log(base), 0.45)
            if outcome == Outcome.TIMEOUT:
                latency = 10_000.0
            remaining = max(0, 5000 - int((minute % 60) * 70 * rng.random()))
            rows.append(
                RequestLog(
                    integration=integration,
                    created=created,
                    source="client",
                    method=method,
                    scheme="https",
                    host=integration.base_url.split("//")[-1],
                    path=path,
                    query="api_key=[redacted]&page=2" if path == "/v1/templates" else "",
                    status=status,
                    outcome=outcome,
                    latency_ms=latency,
                    error_code=code,
                    error_message=code.replace("_", " ").capitalize() if code else "",
                    error_body=f'{{"error": {{"code": "{code}", "token": "[redacted]"}}}}'
                    if code
                    else "",
                    ratelimit_limit=5000,
                    ratelimit_remaining=remaining,
                    deprecated=path == "/v1/templates" and name == "Paubox",
                    sunset_at=now + dt.timedelta(days=23)
                    if path == "/v1/templates" and name == "Paubox"
                    else None,
                    deprecation_link="https://docs.paubox.net/changelog#templates-v2"
                    if path == "/v1/templates" and name == "Paubox"
                    else "",
                )
            )
    return rows


def _probe_rows(integration: Integration, probe: Probe, now: dt.datetime, down_since: float | None):
    rows, results = [], []
    # A run every 2 minutes lately; older history thinned to one every 10 (enough for charts).
    minutes = [*range(24 * 60, 120, -10), *range(120, 0, -2)]
    for minute in minutes:
        created = now - dt.timedelta(minutes=minute)
        failing = down_since is not None and minute < down_since
        status = 503 if failing else 200
        rows.append(
            RequestLog(
                integration=integration,
                created=created,
                source="probe",
                method="GET",
                host=integration.base_url.split("//")[-1],
                path="/v1/health",
                status=status,
                outcome=Outcome.SERVER_ERROR if failing else Outcome.OK,
                latency_ms=95.0 + (minute % 7) * 9,
            )
        )
        if minute <= 120:
            results.append(
                ProbeResult(
                    probe=probe,
                    created=created,
                    ok=not failing,
                    reason="status" if failing else "",
                    status=status,
                    latency_ms=95.0 + (minute % 7) * 9,
                    message="Expected 2xx, got 503" if failing else "",
                )
            )
    return rows, results


def seed(now: dt.datetime, *, per_hour: int = 120) -> Scene:
    rng = random.Random(42)
    paubox = Integration.objects.create(
        name="Paubox",
        slug="paubox",
        base_url="https://api.paubox.net",
        owner_email="ops@example.com",
    )
    stripe = Integration.objects.create(
        name="Stripe", slug="stripe", base_url="https://api.stripe.com"
    )
    twilio = Integration.objects.create(
        name="Twilio", slug="twilio", base_url="https://api.twilio.com"
    )
    rows, results = [], []
    for integration, down_since in ((paubox, None), (stripe, None), (twilio, 40)):
        rows += _calls(integration, now, rng, per_hour)
        failing = down_since is not None
        probe = Probe.objects.create(
            integration=integration,
            name="Health",
            url=f"{integration.base_url}/v1/health",
            state=ProbeState.DOWN if failing else ProbeState.UP,
            state_changed_at=now - dt.timedelta(minutes=down_since or 600),
            last_run_at=now - dt.timedelta(seconds=20),
            last_ok=not failing,
            last_latency_ms=104.0,
            last_reason="status" if failing else "",
            last_message="Expected 2xx, got 503" if failing else "",
            cert_days_left=61,
        )
        if failing:
            ProbeFlip.objects.create(
                probe=probe,
                created=now - dt.timedelta(minutes=down_since),
                from_state=ProbeState.UP,
                to_state=ProbeState.DOWN,
                reason="status",
                message="Expected 2xx, got 503",
            )
        probe_rows, probe_results = _probe_rows(integration, probe, now, down_since)
        rows += probe_rows
        results += probe_results
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows, batch_size=2000)
        rollup.apply_rows(rows)
        ProbeResult.objects.bulk_create(results)
    auth_rule = AlertRule.objects.create(name="Failed-auth spike", kind=RuleKind.AUTH_SPIKE)
    down_rule = AlertRule.objects.create(name="Probe down", kind=RuleKind.PROBE_DOWN)
    auth_alert = Alert.objects.create(
        rule=auth_rule,
        integration=stripe,
        fingerprint=f"{auth_rule.pk}:{stripe.pk}",
        title="Stripe · production — failed-auth spike: 58 × 401 in 5 min (baseline 0.4)",
        summary="58 × 401 Unauthorized: the key is missing, wrong, expired or revoked.",
        figures={"facts": [["401 + 403 in the window", "58 in 5 min"], ["Baseline", "0.4"]]},
        first_seen=now - dt.timedelta(minutes=55),
        last_seen=now - dt.timedelta(minutes=1),
    )
    down_alert = Alert.objects.create(
        rule=down_rule,
        integration=twilio,
        fingerprint=f"{down_rule.pk}:{twilio.pk}",
        title="Twilio · production — probe “Health” down: Expected 2xx, got 503",
        state=AlertState.FIRING,
        first_seen=now - dt.timedelta(minutes=38),
        last_seen=now - dt.timedelta(minutes=1),
    )
    return Scene(paubox, stripe, twilio, auth_alert, down_alert, auth_rule)
