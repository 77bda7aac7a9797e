"""Probes, their results and state flips."""

from __future__ import annotations

import hashlib

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from monitoring import envref
from monitoring.models.core import Integration
from monitoring.redaction import is_secret_name


class ProbeState(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    UP = "up", "Up"
    DEGRADED = "degraded", "Degraded"
    DOWN = "down", "Down"


class ProbeKind(models.TextChoices):
    HTTP = "http", "HTTP request (single or multi-step)"
    STATUSPAGE = "statuspage", "Provider status page (Atlassian Statuspage JSON)"


class FailureReason(models.TextChoices):
    TIMEOUT = "timeout", "Timeout"
    CONNECT = "connect", "Connection failed"
    TLS = "tls", "TLS error"
    STATUS = "status", "Unexpected status"
    LATENCY = "latency", "Too slow"
    BODY = "body", "Body assertion"
    JSON_PATH = "json_path", "JSON path assertion"
    HEADER = "header", "Header assertion"
    CERTIFICATE = "certificate", "Certificate expiring"
    HTTPS = "https", "Not https"
    BLOCKED = "blocked", "Blocked destination"
    ERROR = "error", "Other error"


class Probe(models.Model):
    """A scheduled synthetic check of one provider endpoint."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="probes")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ProbeKind.choices, default=ProbeKind.HTTP)
    method = models.CharField(max_length=10, default="GET")
    url = models.URLField(max_length=1000)
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Header values may reference environment variables as ${NAME}; the secret "
        "itself is never stored.",
    )
    body = models.TextField(blank=True)
    steps = models.JSONField(
        default=list,
        blank=True,
        help_text="Optional steps run in order instead of the single request above (sign in, "
        "then call); values extracted from one step feed the next as {{name}}.",
    )
    interval_s = models.PositiveIntegerField(default=60, validators=[MinValueValidator(30)])
    timeout_s = models.FloatField(default=10, validators=[MinValueValidator(0.1)])
    assertions = models.JSONField(default=dict, blank=True)
    fail_threshold = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)], help_text="Down after N failures in a row"
    )
    recover_threshold = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)], help_text="Up after M successes in a row"
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    # Current state, denormalised so pages never recompute it from results.
    state = models.CharField(max_length=10, choices=ProbeState.choices, default=ProbeState.UNKNOWN)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_ok = models.BooleanField(null=True, blank=True)
    last_reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True)
    last_message = models.CharField(max_length=500, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    cert_days_left = models.FloatField(null=True, blank=True)
    cert_checked_at = models.DateTimeField(null=True, blank=True)
    # A status-page probe's open incident, the provider's own word that something is wrong.
    incident_name = models.CharField(max_length=300, blank=True)
    incident_url = models.URLField(max_length=500, blank=True)
    incident_since = models.DateTimeField(null=True, blank=True)

    # Scheduling: the dispatcher claims due probes by moving next_run_at forward atomically.
    next_run_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["integration__name", "name"]
        indexes = [
            # The dispatcher's "what is due" query, only over enabled probes.
            models.Index(fields=["next_run_at"], name="probe_due", condition=Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return f"{self.integration.name}: {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("probe", args=[self.pk])

    def env_references(self) -> list[str]:
        """Names of environment variables the headers refer to."""
        return sorted({m for v in self.headers.values() for m in envref.names_in(str(v))})

    def header_fingerprints(self) -> dict[str, str]:
        """What the UI shows of each header: literal values, or a fingerprint of a secret."""
        import os

        shown = {}
        for name, value in self.headers.items():
            refs = envref.names_in(str(value))
            if not refs:
                shown[name] = str(value)
                continue
            try:
                envref.check(str(value))
            except envref.ForbiddenReference:
                # Not even a fingerprint of a variable probes may not send.
                shown[name] = f"{value} (refused: not an allowed variable)"
                continue
            resolved = envref.resolve(str(value), os.environ)
            missing = [r for r in refs if r not in os.environ]
            if missing:
                shown[name] = f"{value} (unset: {', '.join(missing)})"
            else:
                digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
                shown[name] = f"{value} (sha256 {digest}…)"
        return shown

    def clean(self) -> None:
        for name, value in (self.headers or {}).items():
            if is_secret_name(name) and not envref.names_in(str(value)):
                raise ValidationError(
                    {
                        "headers": f"{name}: put secrets in an environment variable and write "
                        "${VAR_NAME} here; Upstream never stores the secret itself."
                    }
                )


class ProbeResult(models.Model):
    """The outcome of one probe run."""

    probe = models.ForeignKey(Probe, on_delete=models.CASCADE, related_name="results")
    created = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    degraded = models.BooleanField(default=False)
    reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    cert_days_left = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="Slot it ran for")

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Probe history pages and the results timeline: one probe over time.
            models.Index(fields=["probe", "created"], name="proberesult_probe_time"),
            # Retention pruning.
            models.Index(fields=["created"], name="proberesult_created"),
        ]

    def __str__(self) -> str:
        verdict = "ok" if self.ok else self.reason
        return f"{self.probe_id} {verdict} at {self.created:%Y-%m-%d %H:%M:%S}"


class ProbeFlip(models.Model):
    """A probe changed state (up ↔ degraded ↔ down)."""

    probe = models.ForeignKey(Probe, on_delete=models.CASCADE, related_name="flips")
    created = models.DateTimeField(default=timezone.now)
    from_state = models.CharField(max_length=10, choices=ProbeState.choices)
    to_state = models.CharField(max_length=10, choices=ProbeState.choices)
    reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["probe", "created"], name="probeflip_probe_time")]

    def __str__(self) -> str:
        return f"{self.probe_id}: {self.from_state} → {self.to_state}"
