"""Alert channels, their delivery attempts, routes to them and people's notification wishes."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from monitoring.models.alerts import Alert, Severity
from monitoring.models.core import Integration


class ChannelKind(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook (Standard Webhooks)"
    SLACK = "slack", "Slack"
    TEAMS = "teams", "Microsoft Teams"
    PAGERDUTY = "pagerduty", "PagerDuty"
    NTFY = "ntfy", "ntfy"
    APPRISE = "apprise", "Apprise URL"


class Channel(models.Model):
    """Somewhere alerts are sent; its settings depend on the kind (monitoring.alerts.channels).

    Secrets (URLs with tokens, signing secrets, routing keys) are stored only as ``${ENV}``
    references, checked by ``monitoring.envref.check`` when the channel is validated.
    """

    kind = models.CharField(max_length=12, choices=ChannelKind.choices)
    name = models.CharField(max_length=100, unique=True)
    settings = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    # Denormalised health, so the channel list and the warning need no scan of deliveries.
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    admins_warned_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        from monitoring.alerts import channels

        try:
            self.settings = channels.validate_settings(self.kind, self.settings)
        except ValueError as exc:
            raise ValidationError({"settings": str(exc)}) from None


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed"


class Delivery(models.Model):
    """One message to one channel about one alert, with every attempt's outcome."""

    class Event(models.TextChoices):
        FIRING = "firing", "Firing"
        REMINDER = "reminder", "Reminder"
        ESCALATION = "escalation", "Escalation"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=12, choices=Event.choices)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The channel sender's queue (monitoring.alerts.channels.deliver_due).
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_pending",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel.name} ({self.status})"


class Route(models.Model):
    """Send alerts that match every field set here (rule, integration, severity) to channels.

    A default route catches alerts no other route matched; a route with no scope that is not
    the default matches nothing by itself and serves as a rule's escalation route.
    """

    name = models.CharField(max_length=100)
    rule = models.ForeignKey(
        "monitoring.AlertRule", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, blank=True)
    is_default = models.BooleanField(
        default=False, help_text="Catches alerts no other route matches."
    )
    channels = models.ManyToManyField(Channel, related_name="routes", blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        scoped = self.rule_id or self.integration_id or self.severity
        if self.is_default and scoped:
            raise ValidationError("A default route matches everything: leave its scope empty.")

    def matches(self, alert: Alert) -> bool:
        # Unscoped, non-default routes exist only to be a rule's escalation route.
        if self.is_default or not (self.rule_id or self.integration_id or self.severity):
            return False
        if self.rule_id and self.rule_id != alert.rule_id:
            return False
        if self.integration_id and self.integration_id != alert.integration_id:
            return False
        return not (self.severity and self.severity != alert.rule.severity)


class NotificationPreference(models.Model):
    """What one person wants to hear about by e-mail ("notify me")."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    by_email = models.BooleanField(default=True)
    integrations = models.ManyToManyField(
        Integration, blank=True, related_name="+", help_text="None chosen means every integration."
    )
    severities = models.JSONField(
        default=list,
        blank=True,
        help_text='Severities to hear about; [] means all, e.g. ["critical"].',
    )
    # The person's own settings ride on the same row: one per user, made on first save.
    time_zone = models.CharField(
        max_length=64, blank=True, help_text="Pages show times in this zone; empty means UTC."
    )
    scorecard_digest = models.BooleanField(
        default=False, help_text="A weekly e-mail listing the scorecard checks that changed."
    )

    def __str__(self) -> str:
        return f"Notifications for {self.user}"

    def clean(self) -> None:
        if not isinstance(self.severities, list) or any(
            s not in Severity.values for s in self.severities
        ):
            raise ValidationError(
                {"severities": f"A list of severities from {', '.join(Severity.values)}."}
            )
