"""Alert e-mail delivery over real SMTP: digests, retry with backoff, recipients, no secrets."""

from __future__ import annotations

import datetime as dt
import pydoc

import pytest
from django.utils import timezone

from monitoring import tasks
from monitoring.alerts import lifecycle, notify
from monitoring.models import Alert, AlertRule, Notification, NotificationStatus, Probe, RuleKind
from tests.monitoring.alerts.alertkit import SmtpSink, calls, make_integration

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def paubox(db):
    return make_integration("Paubox")


@pytest.fixture
def rule(db):
    return AlertRule.objects.create(name="Auth spike", kind=RuleKind.AUTH_SPIKE)


def now() -> dt.datetime:
    return timezone.now()


def spike(integration) -> None:
    calls(integration, now(), 12, status=401)


def test_three_alerts_within_the_group_wait_arrive_as_one_digest(clock, smtp, db):
    AlertRule.objects.create(
        name="Auth spike", kind=RuleKind.AUTH_SPIKE, recipients="oncall@example.com"
    )
    paubox, stripe, twilio = (make_integration(n) for n in ("Paubox", "Stripe", "Twilio"))
    spike(paubox)
    lifecycle.evaluate()
    clock.shift(20 * SECOND)
    spike(stripe)
    spike(twilio)
    lifecycle.evaluate()
    clock.shift(11 * SECOND)  # the first one is due; the other two are still waiting
    report = notify.send_due()
    assert (report.emails, report.notifications) == (1, 3)
    assert smtp.subjects == ["[Upstream] 3 alerts: 3 firing"]
    message = smtp.messages[0]
    assert message["To"] == "oncall@example.com"
    text = SmtpSink.text(message)
    for name in ("Paubox", "Stripe", "Twilio"):
        assert f"[FIRING] {name} · production — failed-auth spike: 12 × 401" in text
        assert f"[FIRING] {name} · production" in SmtpSink.html(message)
    keys = set(Notification.objects.values_list("digest_key", flat=True))
    assert len(keys) == 1 and len(keys.pop()) == 32

    # A fourth, later on, travels alone.
    clock.shift(dt.timedelta(minutes=2))
    spike(make_integration("Sendgrid"))
    lifecycle.evaluate()
    clock.shift(31 * SECOND)
    notify.send_due()
    assert smtp.subjects[1].startswith("[FIRING] Sendgrid · production")


def test_smtp_down_then_up_delivers_exactly_once(clock, settings, paubox, rule):
    sink = SmtpSink()
    sink.configure(settings)  # configured, not started: the port refuses connections
    spike(paubox)
    assert lifecycle.evaluate().notifications == 1  # the evaluator never talks to SMTP

    clock.shift(31 * SECOND)
    report = notify.send_due()
    assert (report.emails, report.failed) == (0, 1)
    note = Notification.objects.get()
    assert (note.status, note.attempts) == (NotificationStatus.PENDING, 1)
    assert note.error.startswith("ConnectionRefusedError")
    assert note.subject.startswith("[FIRING] Paubox")
    assert note.next_attempt_at == now() + dt.timedelta(seconds=30)

    clock.shift(10 * SECOND)
    assert notify.send_due().failed == 0  # backing off: nothing attempted
    clock.shift(20 * SECOND)
    assert notify.send_due().failed == 1
    note.refresh_from_db()
    assert note.attempts == 2 and note.next_attempt_at == now() + dt.timedelta(seconds=60)

    sink.start()
    try:
        clock.shift(30 * SECOND)
        assert notify.send_due().emails == 0  # still backing off
        clock.shift(30 * SECOND)
        assert notify.send_due().emails == 1
        for _ in range(3):
            clock.shift(dt.timedelta(minutes=5))
            assert notify.send_due().emails == 0
        assert len(sink.messages) == 1
    finally:
        sink.stop()
    note.refresh_from_db()
    assert (note.status, note.attempts, note.error, note.sent_at) == (
        "sent",
        3,
        "",
        now() - 15 * 60 * SECOND,
    )


def test_delivery_gives_up_after_a_day_and_says_why(clock, settings, paubox, rule):
    SmtpSink().configure(settings)
    spike(paubox)
    lifecycle.evaluate()
    for _ in range(60):
        clock.shift(dt.timedelta(minutes=30))
        notify.send_due()
    note = Notification.objects.get()
    assert note.status == NotificationStatus.FAILED
    assert note.error.startswith("ConnectionRefusedError")
    assert 20 < note.attempts < 60


def test_a_claimed_notification_is_not_sent_twice(clock, smtp, paubox, rule):
    spike(paubox)
    lifecycle.evaluate()
    clock.shift(31 * SECOND)
    first = notify._claim("paubox-owner@example.com", now())
    assert len(first) == 1
    assert notify._claim("paubox-owner@example.com", now()) == []
    assert notify.send_due().emails == 0
    # A sender that died mid-send leaves a lease; after it expires the row is retried.
    clock.shift(notify._lease() + SECOND)
    assert notify.send_due().emails == 1


def test_the_enqueued_delivery_task_sends_what_is_due(clock, smtp, paubox, rule):
    spike(paubox)
    lifecycle.evaluate()
    due = Notification.objects.get().next_attempt_at
    clock.shift(31 * SECOND)
    assert notify.deliver(due.isoformat()).startswith("1 e-mails sent")
    assert len(smtp.messages) == 1


def test_the_evaluator_enqueues_the_sender_after_commit(
    clock, paubox, rule, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    spike(paubox)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        lifecycle.evaluate()
    assert len(callbacks) == 1
    assert OrmQ.objects.count() == 1


def test_the_queued_sender_task_names_the_delivery_function(
    clock, paubox, rule, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    spike(paubox)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.evaluate()
    queued = OrmQ.objects.get()
    assert queued.func() == "monitoring.tasks.deliver"
    assert pydoc.locate(queued.func()) is tasks.deliver
    assert queued.args() == (Notification.objects.get().next_attempt_at.isoformat(),)


def test_recipients_fall_back_from_the_rule_to_the_owner_to_the_admins(
    clock, smtp, db, admin_user, superuser
):
    admin_user.email, superuser.email = "ada@example.com", "root@example.com"
    admin_user.save()
    superuser.save()
    AlertRule.objects.create(name="Auth spike", kind=RuleKind.AUTH_SPIKE)
    spike(make_integration("Owned"))
    spike(make_integration("Orphan", owner_email=""))
    lifecycle.evaluate()
    clock.shift(31 * SECOND)
    notify.send_due()
    to = sorted((str(m["To"]), str(m["Subject"]).strip()[:17]) for m in smtp.messages)
    assert to == [
        ("ada@example.com", "[FIRING] Orphan ·"),
        ("owned-owner@example.com", "[FIRING] Owned · "),
        ("root@example.com", "[FIRING] Orphan ·"),
    ]


def test_emails_escape_html_and_never_carry_secrets(clock, smtp, db):
    acme = make_integration('Acme <b>"quoted"</b>', owner_email="acme@example.com")
    Probe.objects.create(
        integration=acme,
        name="Health",
        url="https://api.acme.test/health",
        state="down",
        last_reason="status",
        last_message="401 from https://api.acme.test/health with "
        "Authorization: Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    )
    AlertRule.objects.create(name="Probe down", kind=RuleKind.PROBE_DOWN)
    lifecycle.evaluate()
    clock.shift(31 * SECOND)
    notify.send_due()
    message = smtp.messages[0]
    raw = message.as_string()
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dc" not in raw
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dc" not in str(Alert.objects.get().figures)
    assert "[redacted]" in SmtpSink.text(message)
    assert 'Acme <b>"quoted"</b> · production — probe down: Health' in SmtpSink.text(message)
    assert "Acme &lt;b&gt;&quot;quoted&quot;&lt;/b&gt;" in SmtpSink.html(message)
    assert "<b>" not in SmtpSink.html(message)


def test_switching_alert_emails_off_records_suppressed_notifications(clock, settings, paubox, rule):
    settings.ALERT_EMAILS_ENABLED = False
    spike(paubox)
    lifecycle.evaluate()
    note = Notification.objects.get()
    assert note.status == NotificationStatus.SUPPRESSED
    assert "ALERT_EMAILS_ENABLED=0" in note.error


def test_durations_read_like_a_person_wrote_them():
    d = dt.timedelta
    assert notify.duration(d(seconds=42)) == "42 s"
    assert notify.duration(d(minutes=23, seconds=59)) == "23 min"
    assert notify.duration(d(hours=2, minutes=5)) == "2 h 5 min"
    assert notify.duration(d(hours=5)) == "5 h"
    assert notify.duration(d(days=3, hours=4, minutes=9)) == "3 d 4 h"


def test_backoff_doubles_up_to_half_an_hour():
    assert [notify.backoff(n).total_seconds() for n in (1, 2, 3, 6, 7, 20)] == [
        30, 60, 120, 960, 1800, 1800,
    ]  # fmt: skip
