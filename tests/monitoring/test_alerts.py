"""The alert lifecycle end to end: rules fire, notify by real SMTP, remind, silence, resolve."""

from __future__ import annotations

import datetime as dt

import pytest

from monitoring import alerts, notify
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    AuditLog,
    MaintenanceWindow,
    Notification,
    NotificationStatus,
    RuleKind,
)
from tests.monitoring.alertkit import T0, SmtpSink, calls, history, make_integration

MIN = dt.timedelta(minutes=1)


@pytest.fixture
def paubox(db):
    integration = make_integration("Paubox")
    history(integration, T0, per_hour_calls=600)  # busy, but no 401s: a quiet baseline
    return integration


@pytest.fixture
def rule(db):
    return AlertRule.objects.create(name="Auth spike", kind=RuleKind.AUTH_SPIKE, recovery_s=300)


def now() -> dt.datetime:
    from django.utils import timezone

    return timezone.now()


def send(clock) -> notify.DeliveryReport:
    """Let the group wait pass, then run the sender."""
    clock.shift(notify.group_wait() + dt.timedelta(seconds=1))
    return notify.send_due()


def burst(integration, n=42, status=401, **kw):
    calls(integration, now(), 40, status=200)
    calls(integration, now(), n, status=status, path="/v1/messages", **kw)


def test_a_burst_of_401s_after_a_quiet_baseline_fires_one_alert_and_one_email(
    clock, smtp, paubox, rule
):
    burst(paubox)
    report = alerts.evaluate()
    assert (report.opened, report.notifications) == (1, 1)
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING
    assert alert.figures["s401"] == 42

    # Nothing leaves before the group wait; then exactly one e-mail.
    assert notify.send_due().emails == 0
    assert send(clock).emails == 1
    assert smtp.subjects == [
        "[FIRING] Paubox · production — failed-auth spike: 42 × 401 in 5 min (baseline 0)"
    ]
    message = smtp.messages[0]
    assert message["To"] == "paubox-owner@example.com"
    text = SmtpSink.text(message)
    assert "GET /v1/messages: 42 × 401" in text
    assert "expired or revoked" in text
    link = notify.alert_link(alert)
    assert link.startswith("https://upstream.example.com/") and str(alert.pk) in link
    assert link in text
    assert f'href="{link}"' in SmtpSink.html(message)
    sent = Notification.objects.get()
    assert (sent.status, sent.attempts, sent.subject) == ("sent", 1, smtp.subjects[0])

    # The next cycles find the same condition: still one alert, no new e-mail.
    clock.shift(MIN)
    assert alerts.evaluate().opened == 0
    assert send(clock).emails == 0
    assert Alert.objects.count() == 1 and len(smtp.messages) == 1


def test_steady_401_noise_fires_nothing_but_a_real_burst_over_it_does(clock, smtp, db, rule):
    noisy = make_integration("Noisy")
    history(noisy, T0, per_hour_401=120, per_hour_calls=1200)  # 10 × 401 every 5 minutes
    for minute in range(5):
        calls(noisy, T0 - minute * MIN, 2, status=401)
    assert alerts.evaluate().firing == 0
    assert Alert.objects.count() == 0

    calls(noisy, now(), 25, status=401)  # 35 in the window: over 3 × the baseline of 10
    alerts.evaluate()
    assert Alert.objects.get().title.endswith("35 × 401 in 5 min (baseline 10)")
    send(clock)
    assert len(smtp.messages) == 1


def test_a_second_burst_while_firing_sends_nothing_new(clock, smtp, paubox, rule):
    burst(paubox)
    alerts.evaluate()
    send(clock)
    clock.shift(2 * MIN)
    burst(paubox, n=80)
    report = alerts.evaluate()
    assert (report.firing, report.opened, report.notifications) == (1, 0, 0)
    send(clock)
    assert len(smtp.messages) == 1
    alert = Alert.objects.get()
    assert alert.figures["s401"] == 122  # the figures follow the condition
    assert alert.last_seen == now() - notify.group_wait() - dt.timedelta(seconds=1)


def test_reminders_repeat_while_unacknowledged_and_stop_once_acknowledged(
    clock, smtp, paubox, rule, operator
):
    burst(paubox)
    alerts.evaluate()
    send(clock)
    clock.shift(dt.timedelta(hours=3, minutes=59))
    burst(paubox)
    alerts.evaluate()
    assert send(clock).emails == 0  # not yet four hours

    clock.shift(2 * MIN)
    burst(paubox)
    alerts.evaluate()
    send(clock)
    assert len(smtp.messages) == 2
    assert smtp.subjects[1].startswith("[REMINDER] Paubox · production — failed-auth spike")
    assert "still firing after 4 h" in smtp.subjects[1]

    alert = Alert.objects.get()
    alerts.acknowledge(alert, user=operator, note="rotating the key")
    for _ in range(3):
        clock.shift(dt.timedelta(hours=4, minutes=1))
        burst(paubox)
        alerts.evaluate()
        send(clock)
    assert len(smtp.messages) == 2
    assert Alert.objects.get().state == AlertState.ACKNOWLEDGED


def test_a_silence_records_the_alert_but_sends_nothing(clock, smtp, paubox, rule, operator):
    alerts.create_silence(
        user=operator, integration=paubox, ends_at=now() + dt.timedelta(hours=1), reason="rotation"
    )
    burst(paubox)
    alerts.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING
    note = Notification.objects.get()
    assert note.status == NotificationStatus.SUPPRESSED
    assert note.error.startswith("silenced by otto until") and "rotation" in note.error
    assert note.subject.startswith("[FIRING] Paubox · production — failed-auth spike")
    assert send(clock).emails == 0
    assert smtp.messages == []


def test_a_silence_of_another_rule_kind_does_not_mute_this_one(clock, smtp, paubox, rule, operator):
    alerts.create_silence(
        user=operator, rule_kind=RuleKind.ERROR_RATE, ends_at=now() + dt.timedelta(hours=1)
    )
    burst(paubox)
    alerts.evaluate()
    assert not alerts.is_silenced(Alert.objects.get(), now())
    assert send(clock).emails == 1


def test_a_weekly_maintenance_window_suppresses_notifications(clock, smtp, paubox, rule):
    MaintenanceWindow.objects.create(
        name="Tuesday deploys",
        integration=paubox,
        weekday=T0.weekday(),
        start_time=dt.time(11, 30),
        duration_minutes=60,
    )
    burst(paubox)
    alerts.evaluate()
    assert Notification.objects.get().error == "maintenance window 'Tuesday deploys'"
    assert send(clock).emails == 0


def test_recovery_waits_for_the_recovery_period_then_sends_one_resolved_email(
    clock, smtp, paubox, rule
):
    burst(paubox)
    alerts.evaluate()
    send(clock)
    clock.move_to(T0 + 6 * MIN)  # the burst has left the 5-minute window
    alerts.evaluate()
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING and alert.clear_since == T0 + 6 * MIN
    clock.move_to(T0 + 10 * MIN)
    alerts.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING  # clear for 4 of the 5 minutes
    clock.move_to(T0 + 11 * MIN)
    assert alerts.evaluate().resolved == 1
    send(clock)
    assert len(smtp.messages) == 2
    assert smtp.subjects[1] == (
        "[RESOLVED] Paubox · production — failed-auth spike: 42 × 401 in 5 min (baseline 0) "
        "after 11 min"
    )
    clock.shift(10 * MIN)
    alerts.evaluate()
    assert send(clock).emails == 0


def test_a_burst_during_the_recovery_period_keeps_the_same_alert(clock, smtp, paubox, rule):
    burst(paubox)
    alerts.evaluate()
    clock.move_to(T0 + 6 * MIN)
    alerts.evaluate()
    clock.move_to(T0 + 8 * MIN)
    burst(paubox)
    alerts.evaluate()
    alert = Alert.objects.get()
    assert (alert.state, alert.clear_since, alert.flap_count) == (AlertState.FIRING, None, 1)
    send(clock)
    assert len(smtp.messages) == 1


def test_flapping_is_detected_and_notified_once(clock, smtp, paubox, rule):
    start = T0
    for _ in range(5):
        clock.move_to(start)
        burst(paubox)
        alerts.evaluate()
        clock.move_to(start + 6 * MIN)
        alerts.evaluate()  # clear, but not for long enough to resolve
        start += 7 * MIN
    send(clock)
    alert = Alert.objects.get()
    assert alert.flapping and alert.flap_count == 4
    kinds = sorted(Notification.objects.values_list("kind", flat=True))
    assert kinds == ["firing", "flapping"]
    assert [s.split("]")[0] for s in smtp.subjects] == ["[Upstream"]  # one digest of both
    assert "[FLAPPING] Paubox" in SmtpSink.text(smtp.messages[0])

    # A flapping alert has to stay clear for the whole flap window before it resolves.
    clock.move_to(start + 30 * MIN)
    alerts.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING
    clock.move_to(start - MIN + alerts.FLAP_WINDOW)
    alerts.evaluate()
    assert Alert.objects.get().state == AlertState.RESOLVED


def test_403s_are_told_apart_from_401s(clock, smtp, paubox, rule):
    calls(paubox, now(), 7, status=403, path="/v1/admin/keys")
    alerts.evaluate()
    send(clock)
    subject = smtp.subjects[0]
    assert subject.endswith("failed-auth spike: 7 × 403 in 5 min (baseline 0)")
    text = SmtpSink.text(smtp.messages[0])
    assert "least privilege" in text and "GET /v1/admin/keys: 7 × 403" in text
    assert "401 Unauthorized" not in text


def test_probe_calls_count_towards_a_spike(clock, paubox, rule):
    calls(paubox, now(), 6, status=401, source="probe")
    alerts.evaluate()
    assert Alert.objects.get().figures["s401"] == 6


def test_a_rule_for_one_integration_leaves_the_others_alone(clock, db):
    paubox, stripe = make_integration("Paubox"), make_integration("Stripe")
    AlertRule.objects.create(name="Stripe auth", kind=RuleKind.AUTH_SPIKE, integration=stripe)
    burst(paubox)
    assert alerts.evaluate().firing == 0
    burst(stripe)
    alerts.evaluate()
    assert Alert.objects.get().integration == stripe


# --- Operators' actions --------------------------------------------------------------------


def test_acknowledging_is_for_operators_and_audited(clock, paubox, rule, viewer, operator):
    burst(paubox)
    alerts.evaluate()
    alert = Alert.objects.get()
    with pytest.raises(PermissionError):
        alerts.acknowledge(alert, user=viewer)
    alerts.acknowledge(alert, user=operator, note="  on it  ")
    alert.refresh_from_db()
    assert (alert.state, alert.acknowledged_by, alert.ack_note) == (
        "acknowledged",
        operator,
        "on it",
    )
    row = AuditLog.objects.get(action=alerts.ACKNOWLEDGE)
    assert (row.actor, row.target_id, row.after["note"]) == ("otto", str(alert.pk), "on it")
    with pytest.raises(ValueError, match="already acknowledged"):
        alerts.acknowledge(alert, user=operator)
    alerts.resolve(alert, user=operator)
    with pytest.raises(ValueError, match="resolved; there is nothing to acknowledge"):
        alerts.acknowledge(alert, user=operator)
    with pytest.raises(ValueError, match="already resolved"):
        alerts.resolve(alert, user=operator)
    with pytest.raises(ValueError, match="too long"):
        alerts.acknowledge(alert, user=operator, note="x" * 501)


def test_resolving_by_hand_tells_the_recipients_and_a_lasting_condition_fires_again(
    clock, smtp, paubox, rule, operator
):
    burst(paubox)
    alerts.evaluate()
    send(clock)
    clock.shift(3 * MIN)
    alert = alerts.resolve(Alert.objects.get(), user=operator)
    assert alert.state == AlertState.RESOLVED
    assert AuditLog.objects.filter(action=alerts.RESOLVE, target_id=str(alert.pk)).exists()
    send(clock)
    assert smtp.subjects[1].startswith("[RESOLVED]")
    assert "Resolved by otto" in SmtpSink.text(smtp.messages[1])
    burst(paubox)
    assert alerts.evaluate().opened == 1
    assert Alert.objects.filter(state=AlertState.FIRING).count() == 1


def test_creating_a_silence_checks_its_input_and_is_audited(clock, paubox, operator, viewer):
    later = now() + dt.timedelta(hours=2)
    with pytest.raises(PermissionError):
        alerts.create_silence(user=viewer, ends_at=later)
    with pytest.raises(ValueError, match="needs an end"):
        alerts.create_silence(user=operator, ends_at=None)
    with pytest.raises(ValueError, match="after the start"):
        alerts.create_silence(user=operator, starts_at=later, ends_at=later)
    with pytest.raises(ValueError, match="already in the past"):
        alerts.create_silence(user=operator, starts_at=now() - 2 * MIN, ends_at=now() - MIN)
    with pytest.raises(ValueError, match="Unknown rule kind 'nope'"):
        alerts.create_silence(user=operator, rule_kind="nope", ends_at=later)
    with pytest.raises(ValueError, match="time zone"):
        alerts.create_silence(user=operator, ends_at=later.replace(tzinfo=None))
    silence = alerts.create_silence(
        user=operator, integration=paubox, rule_kind="auth_spike", ends_at=later, reason="planned"
    )
    assert (silence.author, silence.starts_at) == (operator, now())
    row = AuditLog.objects.get(action=alerts.SILENCE_CREATE)
    assert row.after["reason"] == "planned" and row.target_id == str(silence.pk)
    clock.shift(MIN)
    alerts.end_silence(silence, user=operator)
    assert silence.ends_at == now()
    with pytest.raises(ValueError, match="already ended"):
        alerts.end_silence(silence, user=operator)
    assert AuditLog.objects.filter(action=alerts.SILENCE_END).count() == 1


def test_silences_match_by_integration_and_rule_kind(clock, paubox, rule, operator):
    burst(paubox)
    alerts.evaluate()
    alert = Alert.objects.get()
    other = make_integration("Stripe")
    hour = dt.timedelta(hours=1)
    alerts.create_silence(user=operator, integration=other, ends_at=now() + hour)
    alerts.create_silence(user=operator, rule_kind="probe_down", ends_at=now() + hour)
    assert not alerts.is_silenced(alert, now())
    alerts.create_silence(
        user=operator, starts_at=now() + hour, ends_at=now() + 2 * hour, rule_kind="auth_spike"
    )
    assert not alerts.is_silenced(alert, now())
    assert alerts.is_silenced(alert, now() + 90 * MIN)
    assert not alerts.is_silenced(alert, now() + 2 * hour)


def test_maintenance_windows_one_off_and_weekly_across_midnight(db):
    paubox, stripe = make_integration("Paubox"), make_integration("Stripe")
    MaintenanceWindow.objects.create(
        name="Migration", integration=paubox, starts_at=T0, ends_at=T0 + dt.timedelta(hours=1)
    )
    # Sundays 23:00 for two hours: runs into Monday, and into the next week.
    MaintenanceWindow.objects.create(
        name="Nightly", weekday=6, start_time=dt.time(23, 0), duration_minutes=120
    )
    assert alerts.in_maintenance(paubox, T0)
    assert not alerts.in_maintenance(paubox, T0 + dt.timedelta(hours=1))
    assert not alerts.in_maintenance(stripe, T0)
    sunday = dt.datetime(2026, 3, 15, 23, 30, tzinfo=dt.UTC)
    assert sunday.weekday() == 6
    assert alerts.in_maintenance(stripe, sunday)
    assert alerts.in_maintenance(None, sunday + dt.timedelta(hours=1))  # Monday 00:30
    assert not alerts.in_maintenance(stripe, sunday + dt.timedelta(hours=1, minutes=31))
    assert not alerts.in_maintenance(stripe, sunday - dt.timedelta(hours=1))
