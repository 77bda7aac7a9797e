"""Each rule kind fires and resolves; parameters are checked; the registry agrees with RuleKind."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth import authenticate
from django.core import checks
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from django.utils import timezone

from monitoring import audit
from monitoring.alerts import lifecycle, notify, rules
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Integration,
    Notification,
    Probe,
    RuleKind,
    WebhookEndpoint,
)
from tests.monitoring.alerts.alertkit import T0, calls, history, make_integration

MIN = dt.timedelta(minutes=1)


@pytest.fixture
def paubox(db):
    return make_integration("Paubox")


def now() -> dt.datetime:
    return timezone.now()


def failed_signins(n: int, ip: str = "203.0.113.9") -> None:
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR=ip)
    for _ in range(n):
        assert authenticate(request, username="mallory", password="guess") is None


def probe(integration, **state) -> Probe:
    return Probe.objects.create(
        integration=integration, name="Health", url="https://api.example.com/health", **state
    )


# kind: (params, fire(integration), clear(integration))
SCENARIOS = {
    RuleKind.AUTH_SPIKE: ({}, lambda i: calls(i, now(), 10, status=401), lambda i: None),
    RuleKind.SIGNIN_FAILURES: ({}, lambda i: failed_signins(6), lambda i: None),
    RuleKind.ERROR_RATE: (
        {},
        lambda i: (calls(i, now(), 20), calls(i, now(), 10, status=503)),
        lambda i: calls(i, now(), 30),
    ),
    RuleKind.LATENCY: (
        {"threshold_ms": 1000},
        lambda i: calls(i, now(), 20, latency_ms=3000),
        lambda i: calls(i, now(), 20, latency_ms=90),
    ),
    RuleKind.PROBE_DOWN: (
        {},
        lambda i: probe(i, state="down", state_changed_at=now(), last_reason="status"),
        lambda i: Probe.objects.update(state="up"),
    ),
    RuleKind.RATE_LIMIT: (
        {},
        lambda i: calls(i, now(), 1, ratelimit_remaining=5, ratelimit_limit=100),
        lambda i: calls(i, now(), 1, ratelimit_remaining=95, ratelimit_limit=100),
    ),
    RuleKind.CERT_EXPIRY: (
        {"days": 14},
        lambda i: probe(i, state="up", cert_days_left=3.5),
        lambda i: Probe.objects.update(cert_days_left=88),
    ),
    RuleKind.DEPRECATION: (
        {"window_min": 10},
        lambda i: calls(i, now(), 3, deprecated=True),
        lambda i: calls(i, now(), 3),
    ),
    RuleKind.TRAFFIC_STOPPED: (
        {},
        lambda i: history(i, now(), per_hour_calls=600),
        lambda i: calls(i, now(), 5),
    ),
    RuleKind.PROVIDER_INCIDENT: (
        {},
        lambda i: probe(i, kind="statuspage", state="degraded", incident_name="API errors"),
        lambda i: Probe.objects.update(incident_name=""),
    ),
    RuleKind.VERSION_DRIFT: (
        {"window_min": 10},
        lambda i: (
            Integration.objects.filter(pk=i.pk).update(expected_api_version="2024-06-20"),
            calls(i, now(), 3, api_version="2025-01-27"),
        ),
        lambda i: calls(i, now(), 3, api_version="2024-06-20"),
    ),
    # The webhook kinds (monitoring/alerts/webhook_rules.py; more in test_webhook_rules.py).
    RuleKind.WEBHOOK_SIGNATURE_FAILURES: (
        {},
        lambda i: calls(i, now(), 5, status=401, method="POST", path="/x", source="webhook"),
        lambda i: None,
    ),
    RuleKind.WEBHOOKS_STOPPED: (
        {},
        lambda i: (
            WebhookEndpoint.objects.create(
                integration=i, scheme="none", cadence_s=60, last_delivery_at=now() - 20 * MIN
            ),
            calls(i, now(), 10),
        ),
        lambda i: WebhookEndpoint.objects.update(last_delivery_at=now()),
    ),
    RuleKind.WEBHOOK_LAG: (
        {},
        lambda i: calls(i, now(), 10, method="POST", source="webhook", latency_ms=90_000.0),
        lambda i: calls(i, now(), 10, method="POST", source="webhook", latency_ms=900.0),
    ),
}


def test_every_kind_has_a_scenario():
    assert set(SCENARIOS) == set(RuleKind.values) == set(rules.KINDS)


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_each_rule_kind_fires_then_resolves_after_the_recovery_period(clock, paubox, kind):
    params, fire, clear = SCENARIOS[kind]
    rule = AlertRule.objects.create(
        name=kind, kind=kind, params=params, recovery_s=300, recipients="oncall@example.com"
    )
    fire(paubox)
    report = lifecycle.evaluate()
    assert (report.firing, report.opened) == (1, 1), kind
    alert = Alert.objects.get()
    assert alert.rule == rule and alert.state == AlertState.FIRING
    expected_integration = None if kind == RuleKind.SIGNIN_FAILURES else paubox
    assert alert.integration == expected_integration
    assert alert.title and alert.figures["facts"]
    assert Notification.objects.filter(alert=alert, kind="firing").count() == 1

    clock.move_to(T0 + 20 * MIN)
    clear(paubox)
    lifecycle.evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.FIRING and alert.clear_since == now()
    clock.move_to(T0 + 25 * MIN)
    clear(paubox)
    assert lifecycle.evaluate().resolved == 1
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at) == (AlertState.RESOLVED, now())
    assert Notification.objects.filter(alert=alert, kind="resolved").count() == 1


def test_failed_signins_fire_overall_from_many_addresses_and_name_the_busiest(clock, db):
    AlertRule.objects.create(name="Sign-ins", kind=RuleKind.SIGNIN_FAILURES)
    for k in range(8):
        failed_signins(1, ip=f"198.51.100.{k}")
    assert lifecycle.evaluate().firing == 0  # 8: under the overall minimum, 1 per address
    failed_signins(3, ip="198.51.100.7")
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title == (
        "Upstream sign-ins — 11 failed sign-ins in 5 min (baseline 0), 4 from 198.51.100.7"
    )
    assert alert.figures["addresses"][0] == ["198.51.100.7", 4]
    assert "mallory" not in str(alert.figures)  # usernames tried may be mistyped passwords


def test_failed_signins_against_a_noisy_baseline_do_not_fire(clock, db):
    AlertRule.objects.create(name="Sign-ins", kind=RuleKind.SIGNIN_FAILURES)
    # A misconfigured bot fails 5 times every 5 minutes: 60 an hour, same hour every day.
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="192.0.2.50")
    for days_ago in range(1, 8):
        with time_machine.travel(T0 - dt.timedelta(days=days_ago), tick=False):
            for _ in range(60):
                audit.record(audit.Actions.SIGNIN_FAILED, request=request, actor="bot")
    failed_signins(12, ip="192.0.2.50")  # a busy 5 minutes, but under 3 × 5
    assert lifecycle.evaluate().firing == 0
    failed_signins(5, ip="203.0.113.66")  # a newcomer has no baseline
    lifecycle.evaluate()
    assert Alert.objects.get().figures["addresses"][1] == ["203.0.113.66", 5]


def test_error_rate_counts_5xx_and_transport_errors_not_4xx_unless_asked(clock, paubox):
    AlertRule.objects.create(name="Errors", kind=RuleKind.ERROR_RATE)
    calls(paubox, now(), 50)
    calls(paubox, now(), 10, status=404)
    assert lifecycle.evaluate().firing == 0
    calls(paubox, now(), 2, status=None, path="/v1/slow")  # timeouts
    calls(paubox, now(), 2, status=502)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title == "Paubox · production — error rate 6.2 % in 5 min (4 of 64 calls)"
    assert ["Errors", "2 5xx, 2 timeouts"] in alert.figures["facts"]
    endpoints = [e["endpoint"] for e in alert.figures["endpoints"]]
    assert endpoints == ["GET /v1/messages/{id}", "GET /v1/slow"]
    AlertRule.objects.create(
        name="All errors",
        kind=RuleKind.ERROR_RATE,
        params={"include_4xx": True, "threshold_pct": 20},
    )
    lifecycle.evaluate()
    assert Alert.objects.filter(rule__name="All errors").get().figures["errors"] == 14


def test_error_rate_needs_its_minimum_volume(clock, paubox):
    AlertRule.objects.create(name="Errors", kind=RuleKind.ERROR_RATE)
    calls(paubox, now(), 5, status=500)
    assert lifecycle.evaluate().firing == 0


def test_latency_rule_uses_the_chosen_percentile(clock, paubox):
    AlertRule.objects.create(
        name="p95", kind=RuleKind.LATENCY, params={"percentile": 95, "threshold_ms": 2000}
    )
    AlertRule.objects.create(
        name="p50", kind=RuleKind.LATENCY, params={"percentile": 50, "threshold_ms": 2000}
    )
    calls(paubox, now(), 90, latency_ms=100)
    calls(paubox, now(), 10, latency_ms=5000, path="/v1/reports")
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.rule.name == "p95"
    assert alert.title.startswith("Paubox · production — p95 latency 5,000 ms in 5 min")
    assert alert.figures["endpoints"][0]["endpoint"] == "GET /v1/reports"


def test_rate_limit_burn_rate_projects_exhaustion_before_the_headroom_runs_out(clock, paubox):
    AlertRule.objects.create(name="Quota", kind=RuleKind.RATE_LIMIT, params={"horizon_min": 15})
    for k, remaining in enumerate([300, 2000, 1900, 1800, 1700, 1600]):
        calls(paubox, T0 + (k - 5) * MIN, 1, ratelimit_remaining=remaining, ratelimit_limit=10000)
    # The quota was reset between 300 and 2000; since then 100 a minute: 16 minutes left,
    # outside the horizon.
    assert lifecycle.evaluate().firing == 0
    clock.shift(MIN)
    calls(paubox, now(), 1, ratelimit_remaining=1400, ratelimit_limit=10000)
    lifecycle.evaluate()
    title = Alert.objects.get().title
    assert title == (
        "Paubox · production — rate limit runs out in about 12 min (1,400 of 10,000 left, 120/min)"
    )


def test_rate_limit_headroom_reads_the_tightest_quota(clock, paubox):
    AlertRule.objects.create(name="Quota", kind=RuleKind.RATE_LIMIT)
    calls(paubox, now(), 1, ratelimit_remaining=900, ratelimit_limit=1000, path="/v1/a")
    calls(paubox, now(), 1, ratelimit_remaining=40, ratelimit_limit=1000, path="/v1/b")
    lifecycle.evaluate()
    assert Alert.objects.get().title == (
        "Paubox · production — rate-limit headroom 4 % (40 of 1,000 left)"
    )


def test_deprecation_fires_once_per_endpoint_with_the_sunset_date_and_countdown(clock, paubox):
    AlertRule.objects.create(name="Deprecated", kind=RuleKind.DEPRECATION)
    sunset = dt.datetime(2026, 4, 24, tzinfo=dt.UTC)
    calls(paubox, now(), 2, deprecated=True, sunset_at=sunset, path="/v1/old")
    calls(paubox, now(), 2, deprecated=True, method="POST", path="/v1/legacy")
    calls(paubox, now(), 20)
    lifecycle.evaluate()
    old = Alert.objects.get(endpoint="GET /v1/old")
    assert old.title == (
        "Paubox · production — deprecated endpoint GET /v1/old, sunset 2026-04-24 (in 44 days)"
    )
    assert Alert.objects.get(endpoint="POST /v1/legacy").title.endswith("POST /v1/legacy")
    clock.shift(10 * MIN)
    calls(paubox, now(), 1, deprecated=True, sunset_at=sunset, path="/v1/old")
    report = lifecycle.evaluate()
    assert (report.firing, report.opened) == (2, 0)
    assert Alert.objects.get(endpoint="GET /v1/old").figures["sunset_at"] == sunset.isoformat()
    clock.shift(10 * 24 * 60 * MIN)  # the countdown follows the clock in the e-mail
    _, text, _ = notify.compose(list(old.notifications.all()), now())
    assert "Countdown: 34 days to the sunset" in text
    assert "Sunset: 2026-04-24 00:00 UTC" in text


def test_traffic_stopped_needs_enough_history_and_ignores_probes(clock, db):
    young = make_integration("Young")
    history(young, T0, per_hour_calls=600, days=2)
    busy = make_integration("Busy")
    history(busy, T0, per_hour_calls=600)
    calls(busy, now(), 3, source="probe")  # the probes still run; the app is silent
    AlertRule.objects.create(name="Stopped", kind=RuleKind.TRAFFIC_STOPPED)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.integration == busy
    assert alert.title == "Busy · production — traffic stopped: no calls in 15 min (usually 150)"


def test_a_rule_with_broken_params_is_skipped_and_keeps_its_alerts(clock, paubox, caplog):
    rule = AlertRule.objects.create(name="Spike", kind=RuleKind.AUTH_SPIKE)
    calls(paubox, now(), 10, status=401)
    lifecycle.evaluate()
    AlertRule.objects.filter(pk=rule.pk).update(params={"factor": "lots"})
    clock.shift(30 * MIN)
    report = lifecycle.evaluate()
    assert report.resolved == 0
    assert Alert.objects.get().state == AlertState.FIRING
    assert "factor must be a number" in caplog.text


def test_disabling_a_rule_lets_its_alerts_resolve(clock, paubox):
    rule = AlertRule.objects.create(name="Spike", kind=RuleKind.AUTH_SPIKE, recovery_s=0)
    calls(paubox, now(), 10, status=401)
    lifecycle.evaluate()
    rule.enabled = False
    rule.save()
    clock.shift(MIN)
    assert lifecycle.evaluate().resolved == 1


# --- Parameters and the registry ----------------------------------------------------------


def test_params_are_validated_with_messages_that_say_what_to_fix():
    assert rules.validate_params("auth_spike", {}) == {
        "window_min": 5,
        "min_count": 5,
        "factor": 3.0,
    }
    assert rules.validate_params("latency", {"percentile": 99.9})["percentile"] == 99.9
    with pytest.raises(ValidationError) as exc:
        rules.validate_params(
            "auth_spike", {"window_min": 0, "factor": "x", "min_count": 2.5, "windw": 5}
        )
    assert exc.value.messages == [
        "Unknown parameter windw for auth_spike; expected: window_min, min_count, factor.",
        "window_min must be between 1 and 1440, got 0.",
        "min_count must be a whole number, got 2.5.",
        "factor must be a number, got 'x'.",
    ]
    with pytest.raises(ValidationError, match="true or false"):
        rules.validate_params("error_rate", {"include_4xx": "yes"})
    with pytest.raises(ValidationError, match="JSON object"):
        rules.validate_params("error_rate", [1])
    with pytest.raises(ValidationError, match="must be a number"):
        rules.validate_params("cert_expiry", {"days": True})


def test_params_help_and_validation_go_through_the_kind():
    assert rules.params_help("probe_down") == "no parameters"
    assert rules.params_help("cert_expiry") == (
        "days (fire when a probed certificate expires within this, default 14)"
    )
    assert rules.params_help("nope") == "no parameters"
    with pytest.raises(ValidationError, match="Unknown rule kind 'nope'"):
        rules.validate_params("nope", {})
    assert rules.KINDS["latency"].validate({}) == rules.validate_params("latency", None)


def test_a_rule_of_a_kind_that_no_longer_exists_is_skipped(clock, paubox, caplog):
    rule = AlertRule.objects.create(name="Gone", kind=RuleKind.AUTH_SPIKE)
    AlertRule.objects.filter(pk=rule.pk).update(kind="webhook_silence")
    calls(paubox, now(), 10, status=401)
    scan = lifecycle.find()
    assert (scan.skipped_rules, scan.findings) == ({rule.pk}, {})
    assert "Unknown rule kind 'webhook_silence'" in caplog.text


def test_only_kinds_about_upstream_itself_refuse_an_integration(paubox):
    refusing = {kind for kind, cls in rules.KINDS.items() if cls.scope_error(paubox)}
    assert refusing == {RuleKind.SIGNIN_FAILURES}
    assert all(not cls.scope_error(None) for cls in rules.KINDS.values())


def _kind_errors() -> list:
    return [m for m in checks.run_checks() if m.id == "upstream.E020"]


def test_the_registry_and_the_rule_kind_choices_agree():
    assert _kind_errors() == []


def test_a_system_check_fails_when_the_registry_and_the_choices_disagree(monkeypatch):
    monkeypatch.delitem(rules.KINDS, RuleKind.LATENCY)
    monkeypatch.setitem(rules.KINDS, "webhook_silence", rules.Latency)
    [error] = _kind_errors()
    assert error.level == checks.ERROR
    assert "RuleKind choices without a rule class: latency" in error.msg
    assert "rule classes without a RuleKind choice: webhook_silence" in error.msg
