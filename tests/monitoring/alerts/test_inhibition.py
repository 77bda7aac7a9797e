"""Inhibition: during a provider outage, the alerts it sets off join it and notify nobody."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from monitoring.alerts import lifecycle, notify
from monitoring.models import (
    Alert,
    AlertRule,
    Notification,
    NotificationStatus,
    Probe,
    RuleKind,
)
from tests.monitoring.alerts.alertkit import calls, make_integration

GROUP_WAIT = dt.timedelta(seconds=31)


@pytest.fixture
def outage_rules(db):
    for kind in (RuleKind.PROBE_DOWN, RuleKind.AUTH_SPIKE, RuleKind.ERROR_RATE):
        AlertRule.objects.create(name=str(kind), kind=kind, recipients="oncall@example.com")


def outage(integration) -> None:
    """Probes and our calls failing together: 5xx and the 401s a broken auth tier gives."""
    Probe.objects.create(
        integration=integration,
        name="Health",
        url="https://api.example.com/health",
        state="down",
        state_changed_at=timezone.now(),
        last_reason="status",
    )
    now = timezone.now()
    calls(integration, now, 20)
    calls(integration, now, 12, status=503)
    calls(integration, now, 12, status=401)


def sent(smtp) -> list[str]:
    return smtp.subjects


def simulate(clock, smtp) -> list[str]:
    paubox = make_integration("Paubox")
    outage(paubox)
    lifecycle.evaluate()
    clock.shift(GROUP_WAIT)
    notify.send_due()
    return list(smtp.subjects)


def test_an_outage_sends_one_notification_and_its_alert_lists_what_it_suppressed(
    clock, smtp, outage_rules
):
    subjects = simulate(clock, smtp)
    assert len(subjects) == 1
    assert subjects[0].startswith("[FIRING] Paubox · production — probe down")
    outage_alert = Alert.objects.get(rule__kind=RuleKind.PROBE_DOWN)
    joined = Alert.objects.filter(inhibited_by=outage_alert)
    assert sorted(joined.values_list("rule__kind", flat=True)) == ["auth_spike", "error_rate"]
    held = Notification.objects.filter(alert__in=joined)
    assert {n.status for n in held} == {NotificationStatus.SUPPRESSED}
    assert all(f"provider-down alert #{outage_alert.pk}" in n.error for n in held)


def test_without_inhibition_the_same_outage_sends_three(clock, smtp, outage_rules, monkeypatch):
    monkeypatch.setattr(lifecycle, "DERIVED_KINDS", frozenset())
    subjects = simulate(clock, smtp)
    # One recipient, so the three arrive as one digest: count the notifications instead.
    assert subjects == ["[Upstream] 3 alerts: 3 firing"]
    assert Notification.objects.filter(status=NotificationStatus.SENT).count() == 3


def test_an_alert_already_open_joins_the_outage_and_its_reminders_stop(clock, smtp, db):
    AlertRule.objects.create(
        name="auth", kind=RuleKind.AUTH_SPIKE, recipients="oncall@example.com",
        repeat_interval_s=600,
    )  # fmt: skip
    AlertRule.objects.create(name="down", kind=RuleKind.PROBE_DOWN, recipients="oncall@example.com")
    paubox = make_integration("Paubox")
    calls(paubox, timezone.now(), 12, status=401)
    lifecycle.evaluate()  # the 401s come first: that alert notifies
    clock.shift(dt.timedelta(minutes=11))
    outage(paubox)
    lifecycle.evaluate()
    auth = Alert.objects.get(rule__kind=RuleKind.AUTH_SPIKE)
    assert auth.inhibited_by == Alert.objects.get(rule__kind=RuleKind.PROBE_DOWN)
    reminder = Notification.objects.get(alert=auth, kind=Notification.Kind.REMINDER)
    assert reminder.status == NotificationStatus.SUPPRESSED
