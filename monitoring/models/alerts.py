"""Alert rules, alerts, notifications, silences and maintenance windows."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from monitoring.models.core import Integration


class RuleKind(models.TextChoices):
    AUTH_SPIKE = "auth_spike", "Failed-auth spike (401/403)"
    SIGNIN_FAILURES = "signin_failures", "Failed sign-ins to Upstream"
    ERROR_RATE = "error_rate", "Error rate"
    LATENCY = "latency", "Latency percentile"
    PROBE_DOWN = "probe_down", "Probe down"
    RATE_LIMIT = "rate_limit", "Rate-limit headroom"
    CERT_EXPIRY = "cert_expiry", "Certificate expiry"
    DEPRECATION = "deprecation", "Deprecation seen"
    TRAFFIC_STOPPED = "traffic_stopped", "Traffic stopped"
    PROVIDER_INCIDENT = "provider_incident", "Provider reports an incident"
    VERSION_DRIFT = "version_drift", "API version drift"
    WEBHOOK_SIGNATURE_FAILURES = "webhook_signature_failures", "Webhook signature failures"
    WEBHOOKS_STOPPED = "webhooks_stopped", "Webhooks stopped"
    WEBHOOK_LAG = "webhook_lag", "Webhook delivery lag"


# Room for the longest kind value ("webhook_signature_failures") and a few more.
KIND_MAX_LENGTH = 40


class Severity(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AlertRule(models.Model):
    """A condition to watch; parameters depend on the kind (see monitoring.alerts)."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=KIND_MAX_LENGTH, choices=RuleKind.choices)
    integration = models.ForeignKey(
        Integration,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="rules",
        help_text="Empty means every integration.",
    )
    params = models.JSONField(default=dict, blank=True)
    recipients = models.TextField(
        blank=True, help_text="E-mail addresses, comma or line separated; empty means the owner."
    )
    repeat_interval_s = models.PositiveIntegerField(
        default=4 * 3600, help_text="Remind while firing and unacknowledged"
    )
    recovery_s = models.PositiveIntegerField(
        default=300, help_text="Condition clear this long before the alert resolves"
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    escalation_route = models.ForeignKey(
        "monitoring.Route",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Also told when an alert stays unacknowledged for the escalation minutes.",
    )
    escalation_minutes = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name

    def recipient_list(self) -> list[str]:
        return [r.strip() for r in re.split(r"[,\n]", self.recipients) if r.strip()]


class AlertState(models.TextChoices):
    FIRING = "firing", "Firing"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    """One incident: a rule's condition held for an integration (and endpoint) until it cleared."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    fingerprint = models.CharField(max_length=300)
    endpoint = models.CharField(max_length=266, blank=True)
    state = models.CharField(max_length=15, choices=AlertState.choices, default=AlertState.FIRING)
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    clear_since = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    ack_note = models.CharField(max_length=500, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    flap_count = models.PositiveIntegerField(default=0)
    flapping = models.BooleanField(default=False)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # Set while the integration's provider-down alert holds this one's notifications back.
    inhibited_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="inhibits"
    )

    class Meta:
        ordering = ["-first_seen"]
        constraints = [
            # Dedup: at most one open alert per fingerprint.
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=~Q(state="resolved"),
                name="alert_one_open_per_fingerprint",
            )
        ]
        indexes = [
            # Alert lists and the evaluator: open alerts, newest first.
            models.Index(fields=["state", "first_seen"], name="alert_state_time"),
            models.Index(fields=["integration", "first_seen"], name="alert_integration_time"),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("alert", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.state != AlertState.RESOLVED


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed"


class Notification(models.Model):
    """One e-mail (or its suppression) about an alert."""

    class Kind(models.TextChoices):
        FIRING = "firing", "Firing"
        REMINDER = "reminder", "Reminder"
        RESOLVED = "resolved", "Resolved"
        FLAPPING = "flapping", "Flapping"
        ESCALATION = "escalation", "Escalation"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    recipient = models.EmailField()
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    created = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    error = models.CharField(max_length=500, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    digest_key = models.CharField(max_length=64, blank=True, help_text="Sent in one e-mail")

    class Meta:
        ordering = ["-created"]
        indexes = [
            # The sender's queue: pending notifications by due time.
            models.Index(
                fields=["next_attempt_at"],
                name="notification_pending",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} → {self.recipient} ({self.status})"


class Silence(models.Model):
    """Mute notifications for an integration and/or rule kind between two times."""

    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    rule_kind = models.CharField(max_length=KIND_MAX_LENGTH, choices=RuleKind.choices, blank=True)
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-starts_at"]
        indexes = [models.Index(fields=["ends_at"], name="silence_ends")]

    def __str__(self) -> str:
        scope = self.integration or "all integrations"
        return (
            f"Silence {scope} {self.rule_kind or 'all rules'} until {self.ends_at:%Y-%m-%d %H:%M}"
        )

    def clean(self) -> None:
        if self.ends_at and self.starts_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The end must come after the start."})


class MaintenanceWindow(models.Model):
    """Planned work: one-off (starts_at–ends_at) or weekly (weekday, start time, duration)."""

    name = models.CharField(max_length=100)
    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    weekday = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="0 = Monday … 6 = Sunday, for a weekly window (UTC)"
    )
    start_time = models.TimeField(null=True, blank=True)
    duration_minutes = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        one_off = self.starts_at is not None or self.ends_at is not None
        weekly = any(v is not None for v in (self.weekday, self.start_time, self.duration_minutes))
        if one_off == weekly:
            raise ValidationError("Give either a start and end, or a weekday, time and duration.")
        if one_off and (not self.starts_at or not self.ends_at or self.ends_at <= self.starts_at):
            raise ValidationError("A one-off window needs a start before its end.")
        if weekly and (
            self.weekday is None
            or self.weekday > 6
            or self.start_time is None
            or not self.duration_minutes
        ):
            raise ValidationError("A weekly window needs a weekday (0–6), a time and a duration.")
