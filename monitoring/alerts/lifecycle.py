"""The alert lifecycle: evaluate the rules, open, update and resolve alerts, and operators' actions.

How an evaluation cycle works (every minute, `evaluate()`):

1. Read: `find()` checks every enabled rule, through its kind (`rules.kind_of`), against one
   `snapshot.BucketData` of the cycle; it writes nothing.
2. Write, in one transaction that serialises evaluators: each firing finding updates the one
   open alert with its fingerprint or opens a new one (the kind adds what it looks up once,
   e.g. a deprecation's sunset date); an open alert whose condition is clear resolves once it
   has stayed clear for the rule's recovery period (hysteresis). Notifications are rows,
   muted by silences and maintenance windows; `monitoring.alerts.notify` sends them after
   the group wait, and the channel deliveries (`monitoring.alerts.channels`) at once.
3. Inhibition: while an integration's provider-down alert (its probes fail) is open, the
   alerts derived from the same outage (failed auth, error rate, latency, traffic stopped)
   join it (`Alert.inhibited_by`) and notify nobody; the alert page lists them.
4. Escalation: a firing alert still unacknowledged `escalation_minutes` after it opened is
   sent once to its rule's escalation route as well.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import audit
from monitoring.alerts import channels, notify, rules
from monitoring.alerts.rules import Finding
from monitoring.alerts.snapshot import BucketData
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Channel,
    Delivery,
    DeliveryStatus,
    Integration,
    JobState,
    MaintenanceWindow,
    Notification,
    NotificationStatus,
    RuleKind,
    Silence,
)
from monitoring.roles import Action, can

log = logging.getLogger(__name__)

# Audit actions of the operator actions below.
ACKNOWLEDGE = "alert.acknowledge"
RESOLVE = "alert.resolve"
SILENCE_CREATE = "silence.create"
SILENCE_END = "silence.end"

# A fingerprint that fires, clears and fires again this many times within FLAP_WINDOW is
# flapping: its recipients get one "flapping" e-mail and the alert then needs to stay clear
# for the whole window before it resolves.
FLAP_THRESHOLD = 3
FLAP_WINDOW = dt.timedelta(hours=1)
_LOCK_NAME = "alerts.evaluated"

# The alert that says "the provider is down", and the kinds an outage also sets off: while
# the first is open for an integration, the others notify nobody (Alertmanager's inhibit
# rules). Kept here rather than on the rule kinds while rules.py is another issue's file.
OUTAGE_KIND = RuleKind.PROBE_DOWN
DERIVED_KINDS = frozenset(
    {
        RuleKind.AUTH_SPIKE,
        RuleKind.ERROR_RATE,
        RuleKind.LATENCY,
        RuleKind.TRAFFIC_STOPPED,
        # A provider that is down also stops sending, or sends late: not a second page.
        RuleKind.WEBHOOKS_STOPPED,
        RuleKind.WEBHOOK_LAG,
    }
)

_EVENTS = {
    Notification.Kind.FIRING: Delivery.Event.FIRING,
    Notification.Kind.FLAPPING: Delivery.Event.FIRING,
    Notification.Kind.REMINDER: Delivery.Event.REMINDER,
    Notification.Kind.ESCALATION: Delivery.Event.ESCALATION,
    Notification.Kind.RESOLVED: Delivery.Event.RESOLVED,
}


# --- Default rules ---------------------------------------------------------------------------


def ensure_default_rules() -> int:
    """Create the default all-integration rule of each default kind that has none; idempotent.

    A kind counts as covered by any all-integrations rule of that kind, enabled or not: to
    switch a default off, disable it (deleting it brings it back on the next setup).
    """
    created = 0
    with transaction.atomic():
        for kind, cls in rules.KINDS.items():
            if cls.default_rule is None:
                continue
            if AlertRule.objects.filter(kind=kind, integration__isnull=True).exists():
                continue
            name, repeat = cls.default_rule
            rule = AlertRule.objects.create(name=name, kind=kind, repeat_interval_s=repeat)
            audit.record(
                audit.Actions.CREATE,
                actor="setup_upstream",
                target=rule,
                after=audit.snapshot(rule),
            )
            created += 1
    return created


# --- Evaluation ------------------------------------------------------------------------------


@dataclass
class Scan:
    now: dt.datetime
    findings: dict[str, Finding]
    skipped_rules: set[int]
    rules: int
    checks: int


def find(now: dt.datetime | None = None, *, data_class: type[BucketData] = BucketData) -> Scan:
    """Check every enabled rule against one snapshot of the data; write nothing."""
    now = now or timezone.now()
    # No select_related: the integrations are loaded once below, not once per rule.
    enabled = list(AlertRule.objects.filter(enabled=True))
    integrations = {i.pk: i for i in Integration.objects.filter(active=True)}
    data = data_class(now, integrations)
    findings: dict[str, Finding] = {}
    skipped: set[int] = set()
    checks = 0
    for rule in enabled:
        try:
            kind = rules.kind_of(rule)
        except ValidationError as exc:
            log.warning("Alert rule %s (%s) skipped: %s", rule.pk, rule, "; ".join(exc.messages))
            skipped.add(rule.pk)
            continue
        for subject in kind.subjects(integrations):
            checks += 1
            for finding in kind.check(subject, data):
                findings[finding.fingerprint] = finding
    return Scan(now, findings, skipped, len(enabled), checks)


@dataclass
class EvaluationReport:
    rules: int = 0
    checks: int = 0
    firing: int = 0
    opened: int = 0
    resolved: int = 0
    notifications: int = 0
    suppressed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.rules} rules, {self.checks} checks: {self.firing} firing "
            f"({self.opened} new), {self.resolved} resolved; {self.notifications} notifications "
            f"queued, {self.suppressed} suppressed"
        )


def evaluate(now: dt.datetime | None = None) -> EvaluationReport:
    """One evaluation cycle: find what fires, then update alerts and queue notifications."""
    scan = find(now)
    return _apply(scan)


def evaluate_task() -> str:
    """django-q2 entry point of the every-minute schedule."""
    return str(evaluate())


# --- Silences and maintenance ----------------------------------------------------------------


class _Mutes:
    """Silences and maintenance windows in force at one moment, loaded once per cycle."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at
        self.silences = list(
            Silence.objects.filter(starts_at__lte=at, ends_at__gt=at).select_related("author")
        )
        self.windows = [w for w in MaintenanceWindow.objects.all() if _covers(w, at)]

    def reason(self, integration_id: int | None, kind: str) -> str:
        if not getattr(settings, "ALERT_EMAILS_ENABLED", True):
            return "alert e-mails are switched off (ALERT_EMAILS_ENABLED=0)"
        for s in self.silences:
            if s.integration_id in (None, integration_id) and s.rule_kind in ("", kind):
                who = f" by {s.author.get_username()}" if s.author else ""
                why = f": {s.reason}" if s.reason else ""
                return f"silenced{who} until {s.ends_at:%Y-%m-%d %H:%M} UTC{why}"[:500]
        for w in self.windows:
            if w.integration_id in (None, integration_id):
                return f"maintenance window {w.name!r}"[:500]
        return ""


def _covers(window: MaintenanceWindow, at: dt.datetime) -> bool:
    if window.starts_at is not None and window.ends_at is not None:
        return window.starts_at <= at < window.ends_at
    if window.weekday is None or window.start_time is None or not window.duration_minutes:
        return False
    at = at.astimezone(dt.UTC)
    days_back = (at.weekday() - window.weekday) % 7
    start = dt.datetime.combine(
        at.date() - dt.timedelta(days=days_back), window.start_time.replace(tzinfo=None), dt.UTC
    )
    if start > at:
        start -= dt.timedelta(days=7)
    # A window may run past midnight or the end of the week: also try last week's occurrence.
    length = dt.timedelta(minutes=window.duration_minutes)
    return any(s <= at < s + length for s in (start, start - dt.timedelta(days=7)))


def is_silenced(alert: Alert, at: dt.datetime | None = None) -> bool:
    """Whether a silence mutes this alert's notifications at `at` (default now)."""
    at = at or timezone.now()
    return (
        Silence.objects.filter(starts_at__lte=at, ends_at__gt=at)
        .filter(Q(integration__isnull=True) | Q(integration_id=alert.integration_id))
        .filter(Q(rule_kind="") | Q(rule_kind=alert.rule.kind))
        .exists()
    )


def in_maintenance(integration: Integration | None, at: dt.datetime | None = None) -> bool:
    """Whether a maintenance window covers this integration (None: Upstream itself) at `at`."""
    at = at or timezone.now()
    windows = MaintenanceWindow.objects.filter(
        Q(integration__isnull=True) | Q(integration=integration)
    )
    return any(_covers(w, at) for w in windows)


# --- Writing alerts and notifications --------------------------------------------------------


class _Outbox:
    """Notifications decided during one transaction: recipients, mutes, and the rows."""

    def __init__(self, now: dt.datetime, mutes: _Mutes | None = None) -> None:
        self.now = now
        self.mutes = mutes or _Mutes(now)
        self.rows: list[Notification] = []
        self.deliveries: list[Delivery] = []
        self.recipients = notify.Recipients()
        # Ids of the provider-down alerts open in this cycle: only they inhibit.
        self.outages: set[int] = set()

    def queue(
        self,
        alert: Alert,
        kind: str,
        recipients: Iterable[str] | None = None,
        *,
        to: list[Channel] | None = None,
    ) -> None:
        """Queue `kind` for the alert's plan; or, given `recipients`, for those addresses and
        the channels `to` (whoever was told it fired); or, given only `to`, that route."""
        if recipients is None:
            plan = self.recipients.plan(alert, to)
            recipients, targets = plan.emails, plan.channels
        else:
            targets = list(to or [])
        recipients = list(recipients)
        if not recipients and not targets:
            log.warning("Alert %s has nobody to notify (no recipients, owner or admins)", alert.pk)
        reason = self.mutes.reason(alert.integration_id, alert.rule.kind)
        if alert.inhibited_by_id in self.outages and kind != Notification.Kind.RESOLVED:
            reason = reason or (
                f"inhibited: part of the provider-down alert #{alert.inhibited_by_id}"
            )
        for channel in targets:
            self.deliveries.append(
                Delivery(
                    channel=channel,
                    alert=alert,
                    event=_EVENTS[kind],
                    status=DeliveryStatus.SUPPRESSED if reason else DeliveryStatus.PENDING,
                    error=reason,
                    created=self.now,
                    next_attempt_at=self.now,
                )
            )
        for recipient in recipients:
            row = Notification(
                alert=alert,
                kind=kind,
                recipient=recipient,
                status=NotificationStatus.SUPPRESSED if reason else NotificationStatus.PENDING,
                error=reason,
                created=self.now,
                next_attempt_at=self.now + notify.group_wait(),
            )
            if reason:  # never sent, but the alert page still shows what was held back
                row.subject = notify.subject_of(row, self.now)
            self.rows.append(row)
        alert.last_notified_at = self.now

    def acknowledged(self, alert: Alert) -> None:
        """Tell the channels that track incidents (PagerDuty, webhooks) it is acknowledged."""
        for channel in _told_channels(alert):
            if channels.kind_of(channel).sends_acknowledged:
                self.deliveries.append(
                    Delivery(
                        channel=channel,
                        alert=alert,
                        event=Delivery.Event.ACKNOWLEDGED,
                        created=self.now,
                        next_attempt_at=self.now,
                    )
                )

    def flush(self) -> tuple[int, int]:
        """Save the rows and, after commit, wake the sender; return (pending, suppressed)."""
        Notification.objects.bulk_create(self.rows)
        Delivery.objects.bulk_create(self.deliveries)
        pending = [n for n in self.rows if n.status == NotificationStatus.PENDING]
        sending = [d for d in self.deliveries if d.status == DeliveryStatus.PENDING]
        # Channels go at once; e-mails after their group wait (one task each).
        dues = {d.next_attempt_at.isoformat() for d in sending[:1]}
        if pending:
            dues.add(min(n.next_attempt_at for n in pending).isoformat())
        for due in sorted(dues):
            transaction.on_commit(lambda due=due: notify.enqueue_delivery(due))
        total = len(self.rows) + len(self.deliveries)
        return len(pending) + len(sending), total - len(pending) - len(sending)


def _told(alert: Alert) -> list[str]:
    """Who has heard about this alert, and so should hear that it is over."""
    told = alert.notifications.filter(
        status__in=[NotificationStatus.SENT, NotificationStatus.PENDING]
    ).exclude(kind=Notification.Kind.RESOLVED)
    return sorted(set(told.values_list("recipient", flat=True)))


def _told_channels(alert: Alert) -> list[Channel]:
    """The channels that heard this alert fire (or are about to), for its later news."""
    ids = (
        alert.deliveries.filter(status__in=[DeliveryStatus.SENT, DeliveryStatus.PENDING])
        .exclude(event=Delivery.Event.RESOLVED)
        .values_list("channel_id", flat=True)
    )
    return list(Channel.objects.filter(pk__in=set(ids), enabled=True))


def _lock(now: dt.datetime) -> None:
    """Serialise evaluators (a schedule overlapping a manual run) and record the last run."""
    state = JobState.lock(_LOCK_NAME)
    state.value = int(now.timestamp())
    state.updated = now
    state.save(update_fields=["value", "updated"])


def _apply(scan: Scan) -> EvaluationReport:
    now = scan.now
    report = EvaluationReport(rules=scan.rules, checks=scan.checks, firing=len(scan.findings))
    with transaction.atomic():
        _lock(now)
        outbox = _Outbox(now)
        open_alerts = {
            a.fingerprint: a
            for a in Alert.objects.exclude(state=AlertState.RESOLVED).select_related(
                "rule", "integration"
            )
        }
        dirty: list[Alert] = []
        seen: list[int] = []  # still firing, nothing but last_seen to write
        outages = {
            a.integration_id: a
            for a in open_alerts.values()
            if a.rule.kind == OUTAGE_KIND and a.fingerprint in scan.findings
        }
        # Outages first, so an outage and its consequences opening in one cycle still join.
        ordered = sorted(scan.findings.items(), key=lambda item: item[1].rule.kind != OUTAGE_KIND)
        outbox.outages = {a.pk for a in outages.values()}
        for fp, finding in ordered:
            alert = open_alerts.pop(fp, None)
            outage = outages.get(finding.integration.pk if finding.integration else None)
            inhibitor = outage if finding.rule.kind in DERIVED_KINDS else None
            if alert is None:
                opened = _open(finding, now, outbox, inhibitor)
                if finding.rule.kind == OUTAGE_KIND and opened.integration_id:
                    outages[opened.integration_id] = opened
                    outbox.outages.add(opened.pk)
                report.opened += 1
                continue
            before = (
                alert.figures, alert.clear_since, alert.last_notified_at, alert.inhibited_by_id,
                alert.escalated_at,
            )  # fmt: skip
            alert.last_seen = now
            alert.figures = finding.figures | _kept_figures(alert)
            if inhibitor is not None and alert.inhibited_by_id != inhibitor.pk:
                alert.inhibited_by = inhibitor
            _escalate(alert, now, outbox)
            if alert.clear_since is not None:
                # Cleared, then back before the recovery period ran out: a flap, not a new alert.
                alert.clear_since = None
                alert.flap_count += 1
                if alert.flap_count >= FLAP_THRESHOLD and not alert.flapping:
                    alert.flapping = True
                    outbox.queue(alert, Notification.Kind.FLAPPING)
            if (
                alert.state == AlertState.FIRING
                and alert.last_notified_at is not None
                and now - alert.last_notified_at
                >= dt.timedelta(seconds=alert.rule.repeat_interval_s)
            ):
                outbox.queue(alert, Notification.Kind.REMINDER)
            after = (
                alert.figures, alert.clear_since, alert.last_notified_at, alert.inhibited_by_id,
                alert.escalated_at,
            )  # fmt: skip
            if after == before:
                seen.append(alert.pk)
            else:
                dirty.append(alert)
        for alert in open_alerts.values():
            if alert.rule_id in scan.skipped_rules:
                continue
            if alert.clear_since is None:
                alert.clear_since = now
            recovery = dt.timedelta(seconds=alert.rule.recovery_s)
            if alert.flapping:
                recovery = max(recovery, FLAP_WINDOW)
            if now - alert.clear_since >= recovery:
                alert.state = AlertState.RESOLVED
                alert.resolved_at = now
                report.resolved += 1
                told, told_channels = _told(alert), _told_channels(alert)
                if told or told_channels:
                    outbox.queue(alert, Notification.Kind.RESOLVED, told, to=told_channels)
            dirty.append(alert)
        # One small UPDATE per open alert: bulk_update's CASE per field and row costs more
        # in Django than it saves once a few dozen alerts are open.
        Alert.objects.filter(pk__in=seen).update(last_seen=now)
        for alert in dirty:
            Alert.objects.filter(pk=alert.pk).update(
                **{name: getattr(alert, name) for name in _CYCLE_FIELDS}
            )
        report.notifications, report.suppressed = outbox.flush()
    return report


_CYCLE_FIELDS = (
    "state", "last_seen", "figures", "clear_since", "resolved_at", "flap_count", "flapping",
    "last_notified_at", "inhibited_by", "escalated_at",
)  # fmt: skip


def _escalate(alert: Alert, now: dt.datetime, outbox: _Outbox) -> None:
    """Once, when the rule's escalation minutes pass unacknowledged: tell its escalation route."""
    rule = alert.rule
    if (
        alert.state != AlertState.FIRING
        or alert.escalated_at is not None
        or not rule.escalation_route_id
        or not rule.escalation_minutes
        or now - alert.first_seen < dt.timedelta(minutes=rule.escalation_minutes)
    ):
        return
    alert.escalated_at = now
    targets = channels.route_channels(rule.escalation_route)
    outbox.queue(alert, Notification.Kind.ESCALATION, to=targets)


def _kept_figures(alert: Alert) -> dict:
    kind = rules.KINDS.get(alert.rule.kind)
    kept = kind.kept_figures if kind is not None else ()
    return {k: alert.figures[k] for k in kept if k in alert.figures}


def _open(
    finding: Finding, now: dt.datetime, outbox: _Outbox, inhibitor: Alert | None = None
) -> Alert:
    fp = finding.fingerprint
    rules.kind_of(finding.rule).opened(finding, now)
    previous = (
        Alert.objects.filter(
            fingerprint=fp, state=AlertState.RESOLVED, resolved_at__gte=now - FLAP_WINDOW
        )
        .order_by("-resolved_at")
        .values_list("flap_count", flat=True)
        .first()
    )
    flaps = previous + 1 if previous is not None else 0
    alert = Alert.objects.create(
        rule=finding.rule,
        integration=finding.integration,
        fingerprint=fp,
        endpoint=finding.endpoint,
        state=AlertState.FIRING,
        title=finding.title[:300],
        summary=finding.summary,
        figures=finding.figures,
        first_seen=now,
        last_seen=now,
        flap_count=flaps,
        flapping=flaps >= FLAP_THRESHOLD,
        inhibited_by=inhibitor,
    )
    kind = Notification.Kind.FLAPPING if alert.flapping else Notification.Kind.FIRING
    outbox.queue(alert, kind)
    alert.save(update_fields=["last_notified_at"])
    return alert


# --- Operators' actions ----------------------------------------------------------------------


def _require(user, action: Action, what: str) -> None:
    if not can(user, action):
        raise PermissionError(f"You are not allowed to {what}.")


def _aware(value: dt.datetime | None, name: str) -> None:
    if value is not None and timezone.is_naive(value):
        raise ValueError(f"The {name} time needs a time zone.")


def acknowledge(alert: Alert, *, user, note: str = "", request=None) -> Alert:
    """Firing → acknowledged: reminders stop; the alert still resolves (and says so) by itself."""
    _require(user, Action.OPERATE, "acknowledge alerts")
    note = (note or "").strip()
    if len(note) > 500:
        raise ValueError("The note is too long (500 characters at most).")
    now = timezone.now()
    with transaction.atomic():
        changed = Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING).update(
            state=AlertState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=user, ack_note=note
        )
        if not changed:
            state = Alert.objects.filter(pk=alert.pk).values_list("state", flat=True).first()
            if state == AlertState.ACKNOWLEDGED:
                raise ValueError("This alert is already acknowledged.")
            if state == AlertState.RESOLVED:
                raise ValueError("This alert is resolved; there is nothing to acknowledge.")
            raise ValueError("This alert no longer exists.")
        alert.refresh_from_db()
        outbox = _Outbox(now)
        outbox.acknowledged(alert)
        outbox.flush()
        audit.record(
            ACKNOWLEDGE,
            request=request,
            user=user,
            target=alert,
            before={"state": AlertState.FIRING},
            after={"state": AlertState.ACKNOWLEDGED, "note": note},
        )
    return alert


def resolve(alert: Alert, *, user, request=None) -> Alert:
    """Close an open alert by hand. If its condition still holds, the next cycle opens a new one."""
    _require(user, Action.OPERATE, "resolve alerts")
    now = timezone.now()
    with transaction.atomic():
        current = Alert.objects.select_for_update().filter(pk=alert.pk).first()
        if current is None:
            raise ValueError("This alert no longer exists.")
        if current.state == AlertState.RESOLVED:
            raise ValueError("This alert is already resolved.")
        before = current.state
        current.state = AlertState.RESOLVED
        current.resolved_at = now
        current.figures = {**current.figures, "resolved_by": user.get_username()}
        outbox = _Outbox(now)
        told, told_channels = _told(current), _told_channels(current)
        if told or told_channels:
            outbox.queue(current, Notification.Kind.RESOLVED, told, to=told_channels)
        current.save(update_fields=["state", "resolved_at", "figures", "last_notified_at"])
        outbox.flush()
        audit.record(
            RESOLVE,
            request=request,
            user=user,
            target=current,
            before={"state": before},
            after={"state": AlertState.RESOLVED},
        )
    alert.refresh_from_db()
    return alert


def create_silence(
    *,
    user,
    integration: Integration | None = None,
    rule_kind: str = "",
    starts_at: dt.datetime | None = None,
    ends_at: dt.datetime | None,
    reason: str = "",
    request=None,
) -> Silence:
    """Mute notifications for an integration and/or rule kind; alerts are still recorded."""
    _require(user, Action.OPERATE, "create silences")
    now = timezone.now()
    if ends_at is None:
        raise ValueError("A silence needs an end time.")
    _aware(starts_at, "start")
    _aware(ends_at, "end")
    starts_at = starts_at or now
    if rule_kind and rule_kind not in rules.KINDS:
        raise ValueError(
            f"Unknown rule kind {rule_kind!r}; expected one of {', '.join(rules.KINDS)}."
        )
    if ends_at <= starts_at:
        raise ValueError("The end must come after the start.")
    if ends_at <= now:
        raise ValueError("The end is already in the past.")
    reason = (reason or "").strip()
    if len(reason) > 300:
        raise ValueError("The reason is too long (300 characters at most).")
    with transaction.atomic():
        silence = Silence.objects.create(
            integration=integration,
            rule_kind=rule_kind or "",
            starts_at=starts_at,
            ends_at=ends_at,
            author=user,
            reason=reason,
            created=now,
        )
        audit.record(
            SILENCE_CREATE,
            request=request,
            user=user,
            target=silence,
            after=audit.snapshot(silence),
        )
    return silence


def end_silence(silence: Silence, *, user, request=None) -> Silence:
    """End a silence now (or cancel one that has not started)."""
    _require(user, Action.OPERATE, "end silences")
    now = timezone.now()
    with transaction.atomic():
        changed = Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(ends_at=now)
        if not changed:
            raise ValueError("This silence has already ended.")
        before = {"ends_at": silence.ends_at}
        silence.refresh_from_db()
        audit.record(
            SILENCE_END, request=request, user=user, target=silence, before=before,
            after={"ends_at": silence.ends_at},
        )  # fmt: skip
    return silence
