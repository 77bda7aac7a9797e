"""The verdict's third signal: webhook signatures failing, webhooks stopped, forged deliveries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse

from dashboard.verdict import Webhooks, judge, with_webhooks
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Integration,
    ProbeState,
    RuleKind,
    WebhookEndpoint,
)
from tests.dashboard.conftest import make_log, record
from tests.dashboard.test_health_views import _queries

SINCE = dt.datetime(2026, 3, 10, 14, 2, tzinfo=dt.UTC)
SILENT = Webhooks(silent_for=dt.timedelta(minutes=42), usual="usually every 2 min")


def verdict(hooks, calls=100, call_errors=0.0, runs=10, run_errors=0.0, states=("up",)):
    figures = {
        "calls": calls,
        "probe_runs": runs,
        "probe_error_rate": run_errors,
        "probe_states": states,
    }
    plain = judge(call_error_rate=call_errors, **figures)
    return with_webhooks(plain, hooks, **figures)


def test_signatures_failing_since_a_moment_lead_the_verdict():
    v = verdict(Webhooks(deliveries=12, failed=12, failing_since=SINCE))
    assert v.key == "webhook_signatures_failing"
    assert v.label == "Webhook signatures failing"
    assert v.reason == "Webhook signatures failing since 14:02 UTC — check the rotated secret."


def test_without_an_alert_to_date_it_the_verdict_counts_instead():
    v = verdict(Webhooks(deliveries=10, failed=8))
    assert v.reason == (
        "Webhook signatures failing (8 of 10 deliveries) — check the rotated secret."
    )


def test_a_dated_drift_fails_even_behind_many_good_deliveries_in_the_window():
    v = verdict(Webhooks(deliveries=40, failed=8, failing_since=SINCE), states=["degraded"])
    assert v.key == "webhook_signatures_failing"
    assert v.reason == (
        "Webhook signatures failing since 14:02 UTC — check the rotated secret. "
        "A probe is degraded."
    )


def test_webhooks_stopped_while_probes_pass():
    v = verdict(SILENT)
    assert v.key == "webhooks_stopped"
    assert v.reason == (
        "Webhooks stopped arriving while probes pass: none for 42 min, usually every 2 min."
    )


def test_webhooks_stopped_without_probes_but_with_our_calls():
    v = verdict(SILENT, runs=0, states=[])
    assert v.reason.startswith("Webhooks stopped arriving while our calls succeed:")


def test_a_silence_while_nothing_else_happens_either_says_nothing():
    assert verdict(SILENT, calls=0, runs=0, states=[]).key == "no_data"


def test_an_outage_keeps_the_lead_and_adds_the_webhooks():
    v = verdict(SILENT, call_errors=0.9, run_errors=1.0, states=["down"])
    assert v.key == "provider_down"
    assert v.reason.endswith("Webhooks stopped arriving too: none for 42 min, usually every 2 min.")
    v = verdict(Webhooks(deliveries=5, failed=5, failing_since=SINCE), call_errors=0.6)
    assert v.key == "our_calls_failing"
    assert v.reason.endswith("Webhook signatures fail too since 14:02 UTC.")


def test_a_degraded_verdict_is_led_by_the_webhooks_and_keeps_its_reason():
    v = verdict(SILENT, call_errors=0.06)
    assert v.key == "webhooks_stopped"
    assert v.reason == (
        "Webhooks stopped arriving while we still call the provider: none for 42 min, "
        "usually every 2 min. 6.0 % of calls fail."
    )


def test_a_few_refused_deliveries_among_good_ones_are_only_a_note():
    v = verdict(Webhooks(deliveries=40, failed=3))
    assert v.key == "healthy"
    assert v.reason.endswith(
        "3 webhook deliveries failed verification among good ones: forged traffic?"
    )
    assert verdict(Webhooks(deliveries=40, failed=2)).reason == "Calls and probes succeed."
    assert verdict(None) == verdict(Webhooks())


# --- On the pages ----------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


def hooks(integration, now, n: int, status: int = 202):
    record(
        [
            make_log(
                integration,
                now - dt.timedelta(minutes=1, seconds=k),
                source="webhook",
                method="POST",
                path="/message.delivered",
                status=status,
                error_code="bad_signature" if status == 401 else "",
                latency_ms=0.0,
            )
            for k in range(n)
        ]
    )


def calls(integration, now, n: int = 10):
    record([make_log(integration, now - dt.timedelta(minutes=2, seconds=k)) for k in range(n)])


def test_the_overview_dates_failing_signatures_from_the_open_alert(signed_in, integration, now):
    WebhookEndpoint.objects.create(integration=integration, scheme="standard")
    calls(integration, now)
    hooks(integration, now, 6, status=401)
    since = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=9)
    rule = AlertRule.objects.create(name="Sigs", kind=RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    Alert.objects.create(
        rule=rule,
        integration=integration,
        fingerprint=f"{rule.pk}:{integration.pk}",
        title="Paubox — webhook signatures failing",
        figures={"since": since.isoformat(), "pattern": "secret_drift"},
        state=AlertState.FIRING,
        first_seen=now,
        last_seen=now,
    )
    body = signed_in.get(reverse("overview")).content.decode()
    card = body[body.index(f'id="card-{integration.pk}"') :][:2000]
    assert "Webhook signatures failing" in card
    assert f"since {since:%H:%M} UTC — check the rotated secret" in card
    # A forged pattern has no moment, and a clearing alert no longer speaks for now.
    Alert.objects.update(figures={"pattern": "forged"})
    body = signed_in.get(reverse("overview")).content.decode()
    assert "Webhook signatures failing (6 of 6 deliveries)" in body
    Alert.objects.update(figures={"since": since.isoformat()}, clear_since=now)
    assert "Webhook signatures failing (6 of 6 deliveries)" in (
        signed_in.get(reverse("overview")).content.decode()
    )


def test_the_integration_page_says_webhooks_stopped_while_probes_pass(signed_in, integration, now):
    integration.probes.create(name="Health", url="https://api.paubox.net/h", state=ProbeState.UP)
    WebhookEndpoint.objects.create(
        integration=integration,
        scheme="none",
        cadence_s=60.0,
        last_delivery_at=now - dt.timedelta(minutes=25),
    )
    calls(integration, now)
    body = signed_in.get(reverse("integration", args=[integration.pk])).content.decode()
    assert re.search(r'class="verdict v-webhooks_stopped">Webhooks stopped<', body)
    assert "Webhooks stopped arriving while probes pass: none for 25 min" in body


def test_the_overview_stays_within_its_queries_with_webhooks(signed_in, integration, now):
    url = reverse("overview")
    signed_in.get(url)
    without = _queries(signed_in, url)
    for n in range(5):
        other = Integration.objects.create(name=f"Hooked {n}", slug=f"hooked-{n}")
        WebhookEndpoint.objects.create(integration=other, scheme="none", cadence_s=30.0)
        hooks(other, now, 5, status=401)
    few = _queries(signed_in, url)
    for n in range(5, 15):
        other = Integration.objects.create(name=f"Hooked {n}", slug=f"hooked-{n}")
        WebhookEndpoint.objects.create(integration=other, scheme="none", cadence_s=30.0)
        hooks(other, now, 5, status=401)
    many = _queries(signed_in, url)
    # Endpoints (with their drift alerts) always, in `without` too; with some, the counts.
    assert without + 1 == few == many
