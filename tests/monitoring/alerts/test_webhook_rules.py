"""The webhook rule kinds: signature failures (forged or drift), webhooks stopped, delivery lag."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.alerts import lifecycle, rules, webhook_rules
from monitoring.alerts.webhook_rules import Minute, failing_since, silence_limit_s
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Notification,
    RuleKind,
    WebhookEndpoint,
    WebhookSecret,
)
from tests.monitoring.alerts.alertkit import T0, calls, make_integration

MIN = dt.timedelta(minutes=1)


def now() -> dt.datetime:
    return timezone.now()


def deliveries(integration, n: int, *, status: int = 202, lag_ms: float = 800.0, **fields):
    """n deliveries as the receiver records them: POST /<event type>, source webhook."""
    codes = {202: "", 200: "duplicate", 401: "bad_signature", 400: "malformed"}
    fields.setdefault("error_code", codes.get(status, ""))
    calls(
        integration,
        now(),
        n,
        status=status,
        method="POST",
        path=fields.pop("path", "/invoice.paid"),
        source="webhook",
        latency_ms=lag_ms,
        **fields,
    )


def endpoint(integration, **fields) -> WebhookEndpoint:
    fields.setdefault("name", "Billing events")
    fields.setdefault("scheme", "standard")
    fields.setdefault("created", T0 - dt.timedelta(days=3))
    return WebhookEndpoint.objects.create(integration=integration, **fields)


@pytest.fixture
def paubox(db):
    return make_integration("Paubox")


def rule(kind: str, **params) -> AlertRule:
    return AlertRule.objects.create(
        name=kind, kind=kind, params=params, recovery_s=300, recipients="oncall@example.com"
    )


# --- signature failures ---------------------------------------------------------------------


def test_a_few_failures_among_good_deliveries_look_like_forged_traffic(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    deliveries(paubox, 40)
    deliveries(paubox, 2, status=401)
    assert lifecycle.evaluate().firing == 0  # under the minimum of 3
    clock.move_to(T0 + MIN)
    deliveries(paubox, 1, status=401)
    deliveries(paubox, 10)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title == (
        "Paubox · production — 3 webhook deliveries failed verification in 15 min "
        "among 50 good ones — forged traffic?"
    )
    assert alert.figures["pattern"] == "forged"
    assert "forged or replayed" in alert.summary
    assert alert.figures["rejections"] == {"bad_signature": 3}
    assert ["Refused for", "3 × bad or missing signature"] in alert.figures["facts"]


def test_everything_failing_since_a_moment_is_secret_drift_with_that_moment(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    for minute in range(6):  # verified deliveries every minute until 12:07
        clock.move_to(T0 + minute * MIN)
        deliveries(paubox, 4)
    ep = endpoint(paubox)
    WebhookSecret.objects.create(
        endpoint=ep, reference="${UPSTREAM_SECRET_OLD}", fingerprint="whsec…a1b2",
        not_after=T0 + 6 * MIN, created=T0 - dt.timedelta(days=90),
    )  # fmt: skip
    for minute in range(6, 9):  # from 12:08 on the provider signs with a secret we lack
        clock.move_to(T0 + minute * MIN)
        deliveries(paubox, 4, status=401)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title == (
        "Paubox · production — webhook signatures failing since 12:08 UTC "
        "— check the rotated secret"
    )
    assert alert.figures["pattern"] == "secret_drift"
    assert alert.figures["since"] == "2026-03-10T12:08:00+00:00"
    assert ["Failing since", "2026-03-10 12:08 UTC"] in alert.figures["facts"]
    # The secret whose end date just passed is named by its fingerprint, never its value.
    assert alert.figures["rotation"] == ["whsec…a1b2 ended 12:08 UTC"]
    assert "UPSTREAM_SECRET_OLD" not in str(alert.figures) + alert.summary
    assert Notification.objects.filter(alert=alert, kind="firing").count() == 1


def test_drift_that_began_inside_a_minute_dates_from_that_minute(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    deliveries(paubox, 3)
    deliveries(paubox, 2, status=401)  # 12:02: the secret changed mid-minute
    for minute in (1, 2):
        clock.move_to(T0 + minute * MIN)
        deliveries(paubox, 3, status=401)
    lifecycle.evaluate()
    assert Alert.objects.get().figures["since"] == "2026-03-10T12:02:00+00:00"


def test_failures_older_than_the_lookback_say_since_at_least(clock, paubox):
    history = [Minute(T0 + k * MIN, 2, 0, 2) for k in range(5)]
    drift = failing_since(history, 3)
    assert drift.since == T0 and drift.at_least
    assert failing_since([Minute(T0, 5, 3, 2)], 1) is None  # one mixed minute is not drift
    assert failing_since([Minute(T0, 3, 3, 0), Minute(T0 + MIN, 1, 0, 1)], 3) is None


def test_refusals_outside_the_replay_window_point_at_clocks(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    deliveries(paubox, 10)
    deliveries(paubox, 4, status=401, error_code="expired")
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert "outside the replay window: check the clocks" in alert.summary
    assert alert.figures["rejections"] == {"expired": 4}


def test_other_sources_401s_are_not_webhook_failures(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    calls(paubox, now(), 20, status=401)  # our own calls with a bad key: auth_spike's business
    deliveries(paubox, 5, status=400)  # malformed bodies are no signature failures either
    assert lifecycle.evaluate().firing == 0


def test_signature_alert_resolves_after_the_recovery_period(clock, paubox):
    rule(RuleKind.WEBHOOK_SIGNATURE_FAILURES, window_min=5)
    deliveries(paubox, 5, status=401)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    clock.move_to(T0 + 6 * MIN)
    deliveries(paubox, 5)  # the new secret is in: deliveries verify again
    lifecycle.evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.FIRING and alert.clear_since == now()
    clock.move_to(T0 + 12 * MIN)
    assert lifecycle.evaluate().resolved == 1
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED


# --- webhooks stopped -------------------------------------------------------------------------


def test_webhooks_stopped_fires_past_the_learned_cadence_while_our_calls_go_on(clock, paubox):
    rule(RuleKind.WEBHOOKS_STOPPED)
    ep = endpoint(paubox, cadence_s=120.0, last_delivery_at=T0 - 9 * MIN)
    calls(paubox, now(), 10)
    assert lifecycle.evaluate().firing == 0  # 9 min: under 5 × 2 min
    clock.move_to(T0 + 2 * MIN)
    calls(paubox, now(), 10)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.endpoint == f"webhook #{ep.pk}"
    assert alert.title == (
        "Paubox · production — webhooks stopped: nothing at Billing events for 11 min "
        "(usually every 2 min) while our calls go on"
    )
    assert ["Our calls meanwhile", "20 in 15 min"] in alert.figures["facts"]

    clock.move_to(T0 + 4 * MIN)
    WebhookEndpoint.objects.filter(pk=ep.pk).update(last_delivery_at=now())
    lifecycle.evaluate()
    clock.move_to(T0 + 10 * MIN)
    assert lifecycle.evaluate().resolved == 1


def test_no_alert_while_we_are_quiet_too(clock, paubox):
    rule(RuleKind.WEBHOOKS_STOPPED)
    endpoint(paubox, cadence_s=60.0, last_delivery_at=T0 - dt.timedelta(hours=2))
    calls(paubox, now(), 3)  # under min_calls
    calls(paubox, now(), 50, source="probe")  # probes are not our calls
    assert lifecycle.evaluate().firing == 0


def test_a_set_maximum_wins_and_a_new_endpoint_waits_for_a_cadence(clock, paubox):
    rule(RuleKind.WEBHOOKS_STOPPED)
    endpoint(paubox, name="Unlearned")  # neither a cadence nor a maximum: cannot judge
    endpoint(paubox, name="Nightly", max_silence_s=3600, last_delivery_at=T0 - 50 * MIN)
    endpoint(paubox, name="Hourly", max_silence_s=1800, last_delivery_at=T0 - 50 * MIN)
    calls(paubox, now(), 10)
    lifecycle.evaluate()
    [alert] = Alert.objects.all()
    assert "nothing at Hourly for 50 min (set maximum 30 min)" in alert.title


def test_deliveries_that_fail_verification_are_not_a_stop(clock, paubox):
    rule(RuleKind.WEBHOOKS_STOPPED)
    endpoint(paubox, cadence_s=60.0, last_delivery_at=T0 - 30 * MIN)  # last *verified* one
    calls(paubox, now(), 10)
    deliveries(paubox, 3, status=401)
    assert lifecycle.evaluate().firing == 0


def test_silence_limit():
    assert silence_limit_s(None, None) is None
    assert silence_limit_s(30.0, None) == 600  # the 10-minute floor
    assert silence_limit_s(600.0, None) == 3000
    assert silence_limit_s(600.0, 900) == 900


# --- delivery lag -----------------------------------------------------------------------------


def test_delivery_lag_fires_on_the_chosen_percentile_and_resolves(clock, paubox):
    rule(RuleKind.WEBHOOK_LAG, threshold_ms=30_000)
    deliveries(paubox, 19, lag_ms=900.0)
    deliveries(paubox, 1, lag_ms=240_000.0)
    assert lifecycle.evaluate().firing == 0  # p95 of 20 is the 19th: still fast
    deliveries(paubox, 5, lag_ms=240_000.0)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title.startswith("Paubox · production — webhook delivery lag p95 4 min in 15 min")
    assert alert.title.endswith("(threshold 30 s)")
    assert ["Deliveries in the window", "25 in 15 min"] in alert.figures["facts"]
    clock.move_to(T0 + 16 * MIN)
    deliveries(paubox, 10, lag_ms=500.0)
    lifecycle.evaluate()
    clock.move_to(T0 + 22 * MIN)
    assert lifecycle.evaluate().resolved == 1


def test_our_calls_latency_is_not_delivery_lag(clock, paubox):
    rule(RuleKind.WEBHOOK_LAG, threshold_ms=1000)
    calls(paubox, now(), 30, latency_ms=5000.0)
    deliveries(paubox, 10, lag_ms=100.0)
    assert lifecycle.evaluate().firing == 0


# --- parameters and the cycle's reads --------------------------------------------------------


def test_parameters_are_validated_with_messages():
    with pytest.raises(ValidationError) as exc:
        rules.validate_params(RuleKind.WEBHOOKS_STOPPED, {"cadence_factor": 1, "min_calls": "x"})
    assert exc.value.messages == [
        "min_calls must be a number, got 'x'.",
        "cadence_factor must be between 1.5 and 1000, got 1.",
    ]
    with pytest.raises(ValidationError, match="window_min must be between 1 and 180"):
        rules.validate_params(RuleKind.WEBHOOK_SIGNATURE_FAILURES, {"window_min": 600})
    assert rules.validate_params(RuleKind.WEBHOOK_LAG, None)["threshold_ms"] == 60_000
    assert "cadence_factor" in rules.params_help(RuleKind.WEBHOOKS_STOPPED)


def test_the_cycle_reads_each_webhook_figure_once_for_every_rule_and_integration(clock, db):
    for name in ("Paubox", "Stripe", "Postmark"):
        integ = make_integration(name)
        deliveries(integ, 5, status=401)
        endpoint(integ, cadence_s=60.0, last_delivery_at=T0 - dt.timedelta(hours=1))
        calls(integ, now(), 10)
    for kind in (RuleKind.WEBHOOK_SIGNATURE_FAILURES, RuleKind.WEBHOOKS_STOPPED):
        rule(kind)
        rule(kind)  # a second rule of the kind shares the cycle's reads
    rule(RuleKind.WEBHOOK_LAG)
    with CaptureQueriesContext(connection) as ctx:
        scan = lifecycle.find()
    # 2 rules + integrations, then minutes, own calls, endpoints, lag: one query each.
    assert len(ctx.captured_queries) == 6
    assert len(scan.findings) == 6  # two signature rules × three integrations
    assert all(f.rule.kind == RuleKind.WEBHOOK_SIGNATURE_FAILURES for f in scan.findings.values())


def test_the_webhook_kinds_are_registered_in_the_rule_registry():
    for cls in webhook_rules.WEBHOOK_KINDS:
        assert rules.KINDS[cls.value] is cls


def test_webhook_deliveries_do_not_set_off_the_rules_about_our_calls(clock, paubox):
    rule(RuleKind.AUTH_SPIKE)
    rule(RuleKind.LATENCY, threshold_ms=1000)
    rule(RuleKind.ERROR_RATE, include_4xx=True)
    calls(paubox, now(), 30, latency_ms=100.0)
    deliveries(paubox, 20, status=401, lag_ms=90_000.0)  # a secret drift, and slow ones
    assert lifecycle.evaluate().firing == 0
