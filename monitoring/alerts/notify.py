"""Alert e-mails: recipients, template triplets, one digest per recipient, SMTP with retries.

The evaluator only writes Notification rows (pending, due after the group wait), so a slow or
dead SMTP server never holds it up. `send_due()` — run by the every-minute schedule and by the
task the evaluator enqueues after commit (`enqueue_delivery`) — claims each recipient's
pending rows atomically, sends them as one e-mail (a digest when there are several) and
records the outcome on every row: sent, or retried with exponential backoff until
GIVE_UP_AFTER, then failed. Both reach this module through monitoring.tasks' entry points,
and both then hand the due channel deliveries (webhook, Slack, …) to monitoring.alerts.channels.

Who hears about an alert (`Recipients`, `plan`): the rule's own addresses, the e-mail channels
and other channels its routes pick, and everyone whose notification preferences match; when
none of these names anyone, the integration's owner, else the Admins.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import NoReverseMatch
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring import tasks
from monitoring.models import (
    Alert,
    AlertState,
    Channel,
    Notification,
    NotificationPreference,
    NotificationStatus,
)
from monitoring.roles import Role

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30
BACKOFF_MAX_S = 30 * 60
GIVE_UP_AFTER = dt.timedelta(hours=24)

LABELS = {
    Notification.Kind.FIRING: "FIRING",
    Notification.Kind.REMINDER: "REMINDER",
    Notification.Kind.RESOLVED: "RESOLVED",
    Notification.Kind.FLAPPING: "FLAPPING",
    Notification.Kind.ESCALATION: "ESCALATION",
}


def group_wait() -> dt.timedelta:
    """How long a new notification waits for others to the same recipient (one digest)."""
    return dt.timedelta(seconds=settings.UPSTREAM.get("ALERT_GROUP_WAIT_S", 30))


def backoff(attempts: int) -> dt.timedelta:
    """Wait before retry number `attempts` (1, 2, …): 30 s doubling up to 30 min."""
    return dt.timedelta(seconds=min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


def _lease() -> dt.timedelta:
    # A claimed row is retried by another sender only if this one died mid-send.
    return dt.timedelta(seconds=3 * settings.EMAIL_TIMEOUT + 60)


# --- Recipients --------------------------------------------------------------------------------


@dataclass
class Plan:
    """Who and what will be told about one alert, and why (shown on the alert page)."""

    emails: list[str]
    channels: list[Channel]
    why: str

    @property
    def nobody(self) -> bool:
        return not self.emails and not self.channels


class Recipients:
    """Who hears about an alert (see the module docstring); one per evaluation cycle, so the
    routes, preferences and admins are each looked up once however many alerts there are."""

    def __init__(self) -> None:
        from monitoring.alerts.channels import Router

        self._admins: list[str] | None = None
        self._prefs: list[tuple[str, set[int], list[str]]] | None = None
        self.router = Router()

    def plan(self, alert: Alert, channels: list[Channel] | None = None) -> Plan:
        """Everyone routed to; with `channels` given (an escalation route), only those."""
        from monitoring.alerts.channels import kind_of

        routed = self.router(alert) if channels is None else channels
        emails, others, why = [], [], []
        listed = _valid_emails(alert.rule.recipient_list()) if channels is None else []
        if listed:
            emails += listed
            why.append("the rule's recipients")
        for channel in routed:
            kind = kind_of(channel)
            if kind.is_email:
                emails += _valid_emails(kind.addresses())
            else:
                others.append(channel)
        if routed:
            why.append("its routes' channels")
        people = self._preferred(alert) if channels is None else []
        if people:
            emails += people
            why.append("people whose notification preferences match")
        if channels is None and not emails and not others:
            owner = _valid_emails([alert.integration.owner_email] if alert.integration else [])
            if owner:
                emails, why = owner, ["the integration's owner (nothing else is routed)"]
            else:
                if self._admins is None:
                    self._admins = _admin_emails()
                emails = self._admins
                why = ["the Admins (no rule recipients, routes, preferences or owner)"]
        return Plan(sorted(set(emails)), others, "; ".join(why))

    def __call__(self, alert: Alert) -> list[str]:
        return self.plan(alert).emails

    def _preferred(self, alert: Alert) -> list[str]:
        if self._prefs is None:
            self._prefs = [
                (p.user.email, {i.pk for i in p.integrations.all()}, list(p.severities or []))
                for p in NotificationPreference.objects.filter(by_email=True, user__is_active=True)
                .exclude(user__email="")
                .select_related("user")
                .prefetch_related("integrations")
            ]
        return _valid_emails(
            email
            for email, integrations, severities in self._prefs
            if (not integrations or alert.integration_id in integrations)
            and (not severities or alert.rule.severity in severities)
        )


def plan(alert: Alert) -> Plan:
    """Who and what would be told about this alert now."""
    return Recipients().plan(alert)


def _admin_emails() -> list[str]:
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    users = users.filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN))
    return sorted(set(users.values_list("email", flat=True)))


def _valid_emails(addresses: Iterable[str]) -> list[str]:
    good = []
    for address in addresses:
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            log.warning("Skipping invalid alert recipient %r", address)
        else:
            good.append(address)
    return good


# --- Rendering ---------------------------------------------------------------------------------


def render(name: str, context: dict) -> tuple[str, str, str]:
    """Render templates/emails/<name>.subject.txt, .txt and .html: (subject, text, html)."""
    context = {"site_url": settings.SITE_URL, **context}
    text = render_to_string(f"emails/{name}.txt", context)
    html = render_to_string(f"emails/{name}.html", context)
    return _subject(name, context), text, html


def _subject(name: str, context: dict) -> str:
    # One line, whatever the template's whitespace: a newline would break the header.
    return " ".join(render_to_string(f"emails/{name}.subject.txt", context).split())[:300]


def alert_link(alert: Alert) -> str:
    try:
        path = alert.get_absolute_url()
    except NoReverseMatch:  # the dashboard's alert page is not wired yet
        path = f"/alerts/{alert.pk}/"
    return settings.SITE_URL.rstrip("/") + path


def duration(delta: dt.timedelta) -> str:
    """23 min, 2 h 5 min, 3 d 4 h, 40 s."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _item(notification: Notification, now: dt.datetime) -> dict:
    alert = notification.alert
    figures = alert.figures or {}
    facts = [list(f) for f in figures.get("facts", [])]
    sunset = parse_datetime(figures.get("sunset_at") or "")
    if sunset is not None:
        days = (sunset - now).days
        facts.append(["Countdown", f"{days} days to the sunset" if days >= 0 else "past sunset"])
    end = alert.resolved_at or now
    context = {
        "kind": notification.kind,
        "label": LABELS[notification.kind],
        "alert": alert,
        "link": alert_link(alert),
        "duration": duration(end - alert.first_seen),
        "facts": facts,
        "endpoints": figures.get("endpoints", []),
        "resolved_by": figures.get("resolved_by", ""),
    }
    context["subject"] = _subject("alert", {"i": context})
    return context


def subject_of(notification: Notification, now: dt.datetime) -> str:
    """The subject line this notification has (or would have had) on its own."""
    return _item(notification, now)["subject"]


def compose(batch: list[Notification], now: dt.datetime) -> tuple[str, str, str]:
    """One e-mail for one recipient: the alert's own, or a digest of several."""
    items = [_item(n, now) for n in batch]
    if len(items) == 1:
        return render("alert", {"i": items[0]})
    counts = Counter(item["label"].lower() for item in items)
    summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    return render("digest", {"items": items, "count": len(items), "summary": summary})


# --- Sending -----------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    emails: int = 0
    notifications: int = 0
    failed: int = 0
    gave_up: int = 0
    channel_sent: int = 0
    channel_failed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.emails} e-mails sent ({self.notifications} notifications), "
            f"{self.failed} failed attempts, {self.gave_up} given up; channels: "
            f"{self.channel_sent} sent, {self.channel_failed} failed attempts"
        )


def send_due(now: dt.datetime | None = None) -> DeliveryReport:
    """Send what is due: e-mails by recipient, then the channel deliveries; never raises."""
    from monitoring.alerts import channels

    now = now or timezone.now()
    report = _send_emails(now)
    try:
        sent = channels.deliver_due(now)
    except Exception:  # a broken channel row must not stop the e-mails' next run
        log.exception("Alert channel delivery failed")
    else:
        report.channel_sent, report.channel_failed = sent.sent, sent.failed
        report.gave_up += sent.gave_up
    return report


def _send_emails(now: dt.datetime) -> DeliveryReport:
    report = DeliveryReport()
    due = Notification.objects.filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now)
    recipients = sorted(set(due.values_list("recipient", flat=True)))
    if not recipients:
        return report
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
        down = None
    except Exception as exc:  # refused, timed out, TLS, auth: all mean "try again later"
        down = exc
    try:
        for recipient in recipients:
            batch = _claim(recipient, now)
            if not batch:
                continue
            subject, text, html = compose(batch, now)
            error = down
            if error is None:
                try:
                    _send(connection, recipient, subject, text, html)
                except Exception as exc:
                    error = exc
            if error is None:
                _sent(batch, subject, now)
                report.emails += 1
                report.notifications += len(batch)
            else:
                gave_up = _failed(batch, subject, error, now)
                report.failed += len(batch)
                report.gave_up += gave_up
    finally:
        if down is None:
            connection.close()
    return report


def _claim(recipient: str, now: dt.datetime) -> list[Notification]:
    """Take this recipient's due rows plus the fresh ones still in their group wait.

    The lease moves them out of every other sender's reach; rows waiting on a retry backoff
    are left alone until they are due.
    """
    with transaction.atomic():
        rows = list(
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=NotificationStatus.PENDING, recipient=recipient)
            .filter(Q(next_attempt_at__lte=now) | Q(attempts=0))
            .select_related(
                "alert__rule", "alert__integration", "alert__acknowledged_by", "alert__inhibited_by"
            )
            .order_by("created", "pk")
        )
        if rows:
            Notification.objects.filter(pk__in=[n.pk for n in rows]).update(
                attempts=F("attempts") + 1, next_attempt_at=now + _lease()
            )
            for n in rows:
                n.attempts += 1
    return _drop_stale(rows)


def inhibited(alert: Alert) -> bool:
    """Whether the provider-down alert this one joined is still open (so it speaks for both)."""
    outage = alert.inhibited_by if alert.inhibited_by_id else None
    return outage is not None and outage.state != AlertState.RESOLVED


def _drop_stale(rows: list[Notification]) -> list[Notification]:
    """Hold back reminders and escalations whose alert was acknowledged or resolved meanwhile.

    They were queued while it fired; sending one now would say "still unacknowledged" under
    "Acknowledged by …".
    """
    keep = []
    for n in rows:
        alert = n.alert
        late = n.kind in (Notification.Kind.REMINDER, Notification.Kind.ESCALATION)
        if inhibited(alert) and n.kind != Notification.Kind.RESOLVED:
            # Joined a provider-down alert during its group wait: that one speaks for both.
            Notification.objects.filter(pk=n.pk).update(
                status=NotificationStatus.SUPPRESSED,
                error=f"inhibited: part of the provider-down alert #{alert.inhibited_by_id}",
            )
        elif late and alert.state != AlertState.FIRING:
            if alert.state == AlertState.ACKNOWLEDGED:
                who = alert.acknowledged_by.get_username() if alert.acknowledged_by else "someone"
                why = f"not sent: acknowledged by {who} before it went out"
            else:
                why = "not sent: the alert resolved before it went out"
            Notification.objects.filter(pk=n.pk).update(
                status=NotificationStatus.SUPPRESSED, error=why
            )
        else:
            keep.append(n)
    return keep


def _send(connection, recipient: str, subject: str, text: str, html: str) -> None:
    message = EmailMultiAlternatives(
        subject, text, settings.DEFAULT_FROM_EMAIL, [recipient], connection=connection
    )
    message.attach_alternative(html, "text/html")
    if connection.send_messages([message]) != 1:
        raise RuntimeError("the mail backend accepted nothing")


def _sent(batch: list[Notification], subject: str, now: dt.datetime) -> None:
    Notification.objects.filter(pk__in=[n.pk for n in batch]).update(
        status=NotificationStatus.SENT,
        sent_at=now,
        subject=subject,
        digest_key=uuid.uuid4().hex if len(batch) > 1 else "",
        error="",
    )


def _failed(batch: list[Notification], subject: str, error: Exception, now: dt.datetime) -> int:
    message = f"{type(error).__name__}: {error}"[:500]
    log.warning(
        "Alert e-mail to %s failed (attempt %s): %s", batch[0].recipient, batch[0].attempts, message
    )
    gave_up = 0
    for n in batch:
        fields = {"subject": subject, "error": message}
        if now - n.created >= GIVE_UP_AFTER:
            fields["status"] = NotificationStatus.FAILED
            gave_up += 1
        else:
            fields["next_attempt_at"] = now + backoff(n.attempts)
        Notification.objects.filter(pk=n.pk).update(**fields)
    return gave_up


def send_test_email(addresses: list[str], message) -> object:
    """The e-mail channel's "Send test": one e-mail now, outcome as a channels.Result."""
    from monitoring.alerts.channels import Result

    if not addresses:
        return Result(False, error="the channel lists no addresses", retry=False)
    context = {"message": message, "site_url": settings.SITE_URL}
    subject = _subject("channel_test", context)
    text = render_to_string("emails/channel_test.txt", context)
    html = render_to_string("emails/channel_test.html", context)
    try:
        connection = get_connection(fail_silently=False)
        for address in addresses:
            _send(connection, address, subject, text, html)
    except Exception as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return Result(True)


def warn_admins_channel_failing(channel: Channel) -> None:
    """One e-mail to the Admins when a channel starts failing over and over."""
    admins = _admin_emails()
    if not admins:
        log.warning("Alert channel %s keeps failing and no Admin has an address", channel)
        return
    context = {"channel": channel, "site_url": settings.SITE_URL}
    subject = _subject("channel_failing", context)
    text = render_to_string("emails/channel_failing.txt", context)
    html = render_to_string("emails/channel_failing.html", context)
    try:
        connection = get_connection(fail_silently=False)
        for address in admins:
            _send(connection, address, subject, text, html)
    except Exception:
        log.exception("Could not warn the Admins that channel %s is failing", channel)


def enqueue_delivery(due_iso: str) -> None:
    """Queue `deliver` for the notifications due at `due_iso`; run after the evaluator commits."""
    from django_q.tasks import async_task

    try:
        async_task(tasks.path(tasks.deliver), due_iso)
    except Exception:
        # The every-minute sender schedule delivers it anyway; the evaluator must not fail.
        log.exception("Could not enqueue the alert e-mail sender")


def send_task() -> str:
    """django-q2 entry point of the every-minute schedule: retries and anything missed."""
    return str(send_due())


def deliver(due_iso: str | None = None) -> str:
    """Task the evaluator enqueues on commit: wait out the group wait, then send what is due.

    The wait is capped at the group wait itself, well under the task time limit.
    """
    due = parse_datetime(due_iso) if due_iso else None
    if due is not None:
        wait = (due - timezone.now()).total_seconds()
        if wait > 0:
            time.sleep(min(wait, group_wait().total_seconds()) + 0.5)
    return str(send_due())


def unheard_alerts(limit: int = 200) -> list[Alert]:
    """Open alerts whose plan names no address and no channel (the banner and the check)."""
    recipients = Recipients()
    alerts = Alert.objects.filter(state=AlertState.FIRING).select_related("rule", "integration")
    return [a for a in alerts.order_by("-first_seen")[:limit] if recipients.plan(a).nobody]
