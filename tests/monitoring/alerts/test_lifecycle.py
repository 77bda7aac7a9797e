"""The alert lifecycle end to end: rules fire, notify by real SMTP, remind, silence, resolve."""

from __future__ import annotations

import datetime as dt
import pydoc
from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from monitoring.alerts import lifecycle, notify
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
from tests.monitoring.alerts.alertkit import T0, SmtpSink, calls, history, make_integration

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
    report = lifecycle.evaluate()
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
    assert lifecycle.evaluate().opened == 0
    assert send(clock).emails == 0
    assert Alert.objects.count() == 1 and len(smtp.messages) == 1


def test_steady_401_noise_fires_nothing_but_a_real_burst_over_it_does(clock, smtp, db, rule):
    noisy = make_integration("Noisy")
    history(noisy, T0, per_hour_401=120, per_hour_calls=1200)  # 10 × 401 every 5 minutes
    for minute in range(5):
        calls(noisy, T0 - minute * MIN, 2, status=401)
    assert lifecycle.evaluate().firing == 0
    assert Alert.objects.count() == 0

    calls(noisy, now(), 25, status=401)  # 35 in the window: over 3 × the baseline of 10
    lifecycle.evaluate()
    assert Alert.objects.get().title.endswith("35 × 401 in 5 min (baseline 10)")
    send(clock)
    assert len(smtp.messages) == 1


def test_a_second_burst_while_firing_sends_nothing_new(clock, smtp, paubox, rule):
    burst(paubox)
    lifecycle.evaluate()
    send(clock)
    clock.shift(2 * MIN)
    burst(paubox, n=80)
    report = lifecycle.evaluate()
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
    lifecycle.evaluate()
    send(clock)
    clock.shift(dt.timedelta(hours=3, minutes=59))
    burst(paubox)
    lifecycle.evaluate()
    assert send(clock).emails == 0  # not yet four hours

    clock.shift(2 * MIN)
    burst(paubox)
    lifecycle.evaluate()
    send(clock)
    assert len(smtp.messages) == 2
    assert smtp.subjects[1].startswith("[REMINDER] Paubox · production — failed-auth spike")
    assert "still firing after 4 h" in smtp.subjects[1]

    alert = Alert.objects.get()
    lifecycle.acknowledge(alert, user=operator, note="rotating the key")
    for _ in range(3):
        clock.shift(dt.timedelta(hours=4, minutes=1))
        burst(paubox)
        lifecycle.evaluate()
        send(clock)
    assert len(smtp.messages) == 2
    assert Alert.objects.get().state == AlertState.ACKNOWLEDGED


def test_a_silence_records_the_alert_but_sends_nothing(clock, smtp, paubox, rule, operator):
    lifecycle.create_silence(
        user=operator, integration=paubox, ends_at=now() + dt.timedelta(hours=1), reason="rotation"
    )
    burst(paubox)
    lifecycle.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING
    note = Notification.objects.get()
    assert note.status == NotificationStatus.SUPPRESSED
    assert note.error.startswith("silenced by otto until") and "rotation" in note.error
    assert note.subject.startswith("[FIRING] Paubox · production — failed-auth spike")
    assert send(clock).emails == 0
    assert smtp.messages == []


def test_a_silence_of_another_rule_kind_does_not_mute_this_one(clock, smtp, paubox, rule, operator):
    lifecycle.create_silence(
        user=operator, rule_kind=RuleKind.ERROR_RATE, ends_at=now() + dt.timedelta(hours=1)
    )
    burst(paubox)
    lifecycle.evaluate()
    assert not lifecycle.is_silenced(Alert.objects.get(), now())
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
    lifecycle.evaluate()
    assert Notification.objects.get().error == "maintenance window 'Tuesday deploys'"
    assert send(clock).emails == 0


def test_recovery_waits_for_the_recovery_period_then_sends_one_resolved_email(
    clock, smtp, paubox, rule
):
    burst(paubox)
    lifecycle.evaluate()
    send(clock)
    clock.move_to(T0 + 6 * MIN)  # the burst has left the 5-minute window
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING and alert.clear_since == T0 + 6 * MIN
    clock.move_to(T0 + 10 * MIN)
    lifecycle.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING  # clear for 4 of the 5 minutes
    clock.move_to(T0 + 11 * MIN)
    assert lifecycle.evaluate().resolved == 1
    send(clock)
    assert len(smtp.messages) == 2
    assert smtp.subjects[1] == (
        "[RESOLVED] Paubox · production — failed-auth spike: 42 × 401 in 5 min (baseline 0) "
        "after 11 min"
    )
    clock.shift(10 * MIN)
    lifecycle.evaluate()
    assert send(clock).emails == 0


def test_a_burst_during_the_recovery_period_keeps_the_same_alert(clock, smtp, paubox, rule):
    burst(paubox)
    lifecycle.evaluate()
    clock.move_to(T0 + 6 * MIN)
    lifecycle.evaluate()
    clock.move_to(T0 + 8 * MIN)
    burst(paubox)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert (alert.state, alert.clear_since, alert.flap_count) == (AlertState.FIRING, None, 1)
    send(clock)
    assert len(smtp.messages) == 1


def test_flapping_is_detected_and_notified_once(clock, smtp, paubox, rule):
    start = T0
    for _ in range(5):
        clock.move_to(start)
        burst(paubox)
        lifecycle.evaluate()
        clock.move_to(start + 6 * MIN)
        lifecycle.evaluate()  # clear, but not for long enough to resolve
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
    lifecycle.evaluate()
    assert Alert.objects.get().state == AlertState.FIRING
    clock.move_to(start - MIN + lifecycle.FLAP_WINDOW)
    lifecycle.evaluate()
    assert Alert.objects.get().state == AlertState.RESOLVED


def test_403s_are_told_apart_from_401s(clock, smtp, paubox, rule):
    calls(paubox, now(), 7, status=403, path="/v1/admin/keys")
    lifecycle.evaluate()
    send(clock)
    subject = smtp.subjects[0]
    assert subject.endswith("failed-auth spike: 7 × 403 in 5 min (baseline 0)")
    text = SmtpSink.text(smtp.messages[0])
    assert "least privilege" in text and "GET /v1/admin/keys: 7 × 403" in text
    assert "401 Unauthorized" not in text


def test_probe_calls_count_towards_a_spike(clock, paubox, rule):
    calls(paubox, now(), 6, status=401, source="probe")
    lifecycle.evaluate()
    assert Alert.objects.get().figures["s401"] == 6


def test_a_rule_for_one_integration_leaves_the_others_alone(clock, db):
    paubox, stripe = make_integration("Paubox"), make_integration("Stripe")
    AlertRule.objects.create(name="Stripe auth", kind=RuleKind.AUTH_SPIKE, integration=stripe)
    burst(paubox)
    assert lifecycle.evaluate().firing == 0
    burst(stripe)
    lifecycle.evaluate()
    assert Alert.objects.get().integration == stripe


# --- Operators' actions --------------------------------------------------------------------


def test_acknowledging_is_for_operators_and_audited(clock, paubox, rule, viewer, operator):
    burst(paubox)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    with pytest.raises(PermissionError):
        lifecycle.acknowledge(alert, user=viewer)
    lifecycle.acknowledge(alert, user=operator, note="  on it  ")
    alert.refresh_from_db()
    assert (alert.state, alert.acknowledged_by, alert.ack_note) == (
        "acknowledged",
        operator,
        "on it",
    )
    row = AuditLog.objects.get(action=lifecycle.ACKNOWLEDGE)
    assert (row.actor, row.target_id, row.after["note"]) == ("otto", str(alert.pk), "on it")
    with pytest.raises(ValueError, match="already acknowledged"):
        lifecycle.acknowledge(alert, user=operator)
    lifecycle.resolve(alert, user=operator)
    with pytest.raises(ValueError, match="resolved; there is nothing to acknowledge"):
        lifecycle.acknowledge(alert, user=operator)
    with pytest.raises(ValueError, match="already resolved"):
        lifecycle.resolve(alert, user=operator)
    with pytest.raises(ValueError, match="too long"):
        lifecycle.acknowledge(alert, user=operator, note="x" * 501)


def test_resolving_by_hand_tells_the_recipients_and_a_lasting_condition_fires_again(
    clock, smtp, paubox, rule, operator
):
    burst(paubox)
    lifecycle.evaluate()
    send(clock)
    clock.shift(3 * MIN)
    alert = lifecycle.resolve(Alert.objects.get(), user=operator)
    assert alert.state == AlertState.RESOLVED
    assert AuditLog.objects.filter(action=lifecycle.RESOLVE, target_id=str(alert.pk)).exists()
    send(clock)
    assert smtp.subjects[1].startswith("[RESOLVED]")
    assert "Resolved by otto" in SmtpSink.text(smtp.messages[1])
    burst(paubox)
    assert lifecycle.evaluate().opened == 1
    assert Alert.objects.filter(state=AlertState.FIRING).count() == 1


def test_creating_a_silence_checks_its_input_and_is_audited(clock, paubox, operator, viewer):
    later = now() + dt.timedelta(hours=2)
    with pytest.raises(PermissionError):
        lifecycle.create_silence(user=viewer, ends_at=later)
    with pytest.raises(ValueError, match="needs an end"):
        lifecycle.create_silence(user=operator, ends_at=None)
    with pytest.raises(ValueError, match="after the start"):
        lifecycle.create_silence(user=operator, starts_at=later, ends_at=later)
    with pytest.raises(ValueError, match="already in the past"):
        lifecycle.create_silence(user=operator, starts_at=now() - 2 * MIN, ends_at=now() - MIN)
    with pytest.raises(ValueError, match="Unknown rule kind 'nope'"):
        lifecycle.create_silence(user=operator, rule_kind="nope", ends_at=later)
    with pytest.raises(ValueError, match="time zone"):
        lifecycle.create_silence(user=operator, ends_at=later.replace(tzinfo=None))
    silence = lifecycle.create_silence(
        user=operator, integration=paubox, rule_kind="auth_spike", ends_at=later, reason="planned"
    )
    assert (silence.author, silence.starts_at) == (operator, now())
    row = AuditLog.objects.get(action=lifecycle.SILENCE_CREATE)
    assert row.after["reason"] == "planned" and row.target_id == str(silence.pk)
    clock.shift(MIN)
    lifecycle.end_silence(silence, user=operator)
    assert silence.ends_at == now()
    with pytest.raises(ValueError, match="already ended"):
        lifecycle.end_silence(silence, user=operator)
    assert AuditLog.objects.filter(action=lifecycle.SILENCE_END).count() == 1


def test_silences_match_by_integration_and_rule_kind(clock, paubox, rule, operator):
    burst(paubox)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    other = make_integration("Stripe")
    hour = dt.timedelta(hours=1)
    lifecycle.create_silence(user=operator, integration=other, ends_at=now() + hour)
    lifecycle.create_silence(user=operator, rule_kind="probe_down", ends_at=now() + hour)
    assert not lifecycle.is_silenced(alert, now())
    lifecycle.create_silence(
        user=operator, starts_at=now() + hour, ends_at=now() + 2 * hour, rule_kind="auth_spike"
    )
    assert not lifecycle.is_silenced(alert, now())
    assert lifecycle.is_silenced(alert, now() + 90 * MIN)
    assert not lifecycle.is_silenced(alert, now() + 2 * hour)


def test_maintenance_windows_one_off_and_weekly_across_midnight(db):
    paubox, stripe = make_integration("Paubox"), make_integration("Stripe")
    MaintenanceWindow.objects.create(
        name="Migration", integration=paubox, starts_at=T0, ends_at=T0 + dt.timedelta(hours=1)
    )
    # Sundays 23:00 for two hours: runs into Monday, and into the next week.
    MaintenanceWindow.objects.create(
        name="Nightly", weekday=6, start_time=dt.time(23, 0), duration_minutes=120
    )
    assert lifecycle.in_maintenance(paubox, T0)
    assert not lifecycle.in_maintenance(paubox, T0 + dt.timedelta(hours=1))
    assert not lifecycle.in_maintenance(stripe, T0)
    sunday = dt.datetime(2026, 3, 15, 23, 30, tzinfo=dt.UTC)
    assert sunday.weekday() == 6
    assert lifecycle.in_maintenance(stripe, sunday)
    assert lifecycle.in_maintenance(None, sunday + dt.timedelta(hours=1))  # Monday 00:30
    assert not lifecycle.in_maintenance(stripe, sunday + dt.timedelta(hours=1, minutes=31))
    assert not lifecycle.in_maintenance(stripe, sunday - dt.timedelta(hours=1))


# --- Default rules and the commands ---------------------------------------------------------


def test_default_rules_cover_every_integration_and_are_created_once(db):
    assert lifecycle.ensure_default_rules() == 6
    assert lifecycle.ensure_default_rules() == 0
    kinds = set(AlertRule.objects.filter(integration=None).values_list("kind", flat=True))
    assert kinds == {
        "auth_spike", "error_rate", "probe_down", "cert_expiry", "deprecation", "signin_failures"
    }  # fmt: skip
    assert AuditLog.objects.filter(action="create", target_type="monitoring.AlertRule").count() == 6
    # A disabled default stays disabled.
    AlertRule.objects.filter(kind="probe_down").update(enabled=False)
    lifecycle.ensure_default_rules()
    assert not AlertRule.objects.get(kind="probe_down").enabled


def test_setup_upstream_schedules_the_evaluator_and_sender_and_adds_default_rules(db):
    out = StringIO()
    call_command("setup_upstream", stdout=out)
    call_command("setup_upstream", stdout=out)
    funcs = dict(Schedule.objects.values_list("name", "func"))
    # Whichever module hosts the entry points (monitoring.tasks does), the rows run the
    # evaluator and the sender.
    assert pydoc.locate(funcs["upstream:evaluate-alerts"])().startswith("6 rules, ")
    assert pydoc.locate(funcs["upstream:send-notifications"])().startswith("0 e-mails sent")
    assert AlertRule.objects.count() == 6
    assert "Alert rules: 0 default rules created." in out.getvalue()


def test_default_rules_fire_for_an_integration_created_later(clock, db):
    lifecycle.ensure_default_rules()
    later = make_integration("Later")
    calls(later, now(), 10, status=401)
    lifecycle.evaluate()
    assert Alert.objects.get().integration == later


def test_evaluate_alerts_command_runs_one_cycle_and_can_send(clock, paubox, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    AlertRule.objects.create(name="Spike", kind=RuleKind.AUTH_SPIKE)
    calls(paubox, now(), 10, status=401)
    out = StringIO()
    call_command("evaluate_alerts", "--send", stdout=out)
    assert "1 firing (1 new)" in out.getvalue()
    assert "0 e-mails sent" in out.getvalue()  # still inside the group wait
    assert Alert.objects.count() == 1


def test_old_task_paths_still_resolve_for_queued_tasks_and_schedule_rows():
    # django-q2 resolves a task's dotted path with pydoc.locate.
    assert pydoc.locate("monitoring.alerts.evaluate_task") is lifecycle.evaluate_task
    assert pydoc.locate("monitoring.notify.send_task") is notify.send_task
    assert pydoc.locate("monitoring.notify.deliver") is notify.deliver
