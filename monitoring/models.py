"""Upstream's data: integrations, request logs, metric buckets, probes, alerts, the audit log."""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Environment(models.TextChoices):
    PRODUCTION = "production", "Production"
    STAGING = "staging", "Staging"
    SANDBOX = "sandbox", "Sandbox"


class Source(models.TextChoices):
    CLIENT = "client", "Client"
    PROBE = "probe", "Probe"
    INGEST = "ingest", "Ingest"


class Outcome(models.TextChoices):
    OK = "ok", "OK"
    CLIENT_ERROR = "client_error", "Client error (4xx)"
    SERVER_ERROR = "server_error", "Server error (5xx)"
    TIMEOUT = "timeout", "Timeout"
    CONNECT_ERROR = "connect_error", "Connect error"
    TLS_ERROR = "tls_error", "TLS error"
    PROTOCOL_ERROR = "protocol_error", "Protocol error"
    READ_ERROR = "read_error", "Read error"
    BLOCKED = "blocked", "Refused by Upstream"
    OTHER_ERROR = "other_error", "Other error"


# Outcomes where no HTTP status came back.
TRANSPORT_OUTCOMES = frozenset(
    {
        Outcome.TIMEOUT,
        Outcome.CONNECT_ERROR,
        Outcome.TLS_ERROR,
        Outcome.PROTOCOL_ERROR,
        Outcome.READ_ERROR,
        Outcome.BLOCKED,
        Outcome.OTHER_ERROR,
    }
)


class Integration(models.Model):
    """One provider in one environment, e.g. "Paubox · production"."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100)
    environment = models.CharField(
        max_length=20, choices=Environment.choices, default=Environment.PRODUCTION
    )
    base_url = models.URLField(max_length=500, blank=True)
    owner_email = models.EmailField(blank=True)
    expected_api_version = models.CharField(max_length=64, blank=True)
    require_https = models.BooleanField(
        default=True, help_text="Plain-http calls to a non-loopback host are refused or flagged."
    )
    path_templates = models.TextField(
        blank=True,
        help_text="One explicit path template per line, e.g. /v1/users/{user_id}; these win "
        "over the automatic ones.",
    )
    redact_names = models.TextField(
        blank=True,
        help_text="Extra header, query and JSON key names to redact, comma or line separated.",
    )
    active = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "environment"]
        constraints = [
            models.UniqueConstraint(fields=["slug", "environment"], name="integration_slug_env")
        ]

    def __str__(self) -> str:
        return f"{self.name} · {self.environment}"

    def get_absolute_url(self) -> str:
        return reverse("integration", args=[self.pk])

    def explicit_templates(self) -> list[str]:
        return [line.strip() for line in self.path_templates.splitlines() if line.strip()]

    def extra_redactions(self) -> list[str]:
        return [w.strip() for w in re.split(r"[,\n]", self.redact_names) if w.strip()]


class RequestLog(models.Model):
    """One HTTP attempt, secrets already redacted. Kept briefly; charts read metric buckets."""

    created = models.DateTimeField(default=timezone.now)
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CLIENT)
    method = models.CharField(max_length=10)
    scheme = models.CharField(max_length=5, default="https")
    host = models.CharField(max_length=255)
    path = models.CharField(max_length=255, help_text="Path template, e.g. /v1/users/{id}")
    query = models.CharField(max_length=500, blank=True, help_text="Redacted query string")
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    latency_ms = models.FloatField()
    request_bytes = models.PositiveIntegerField(null=True, blank=True)
    response_bytes = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    error_body = models.TextField(blank=True, help_text="Scrubbed, capped body of a failure")
    call_id = models.CharField(max_length=32, blank=True, help_text="Ties retries of one call")
    attempt = models.PositiveSmallIntegerField(default=1)
    backoff_ms = models.FloatField(default=0, help_text="Wait before this attempt")
    ratelimit_limit = models.PositiveIntegerField(null=True, blank=True)
    ratelimit_remaining = models.PositiveIntegerField(null=True, blank=True)
    ratelimit_reset = models.DateTimeField(null=True, blank=True)
    retry_after_s = models.FloatField(null=True, blank=True)
    deprecated = models.BooleanField(default=False)
    deprecation_at = models.DateTimeField(null=True, blank=True)
    sunset_at = models.DateTimeField(null=True, blank=True)
    deprecation_link = models.CharField(max_length=500, blank=True)
    api_version = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # Request log explorer and rollups: one integration over a time range.
            models.Index(fields=["integration", "created", "id"], name="reqlog_integration_time"),
            # "Recent errors" and the explorer's failure filter: failures of one integration.
            models.Index(
                fields=["integration", "created"],
                name="reqlog_failures_time",
                condition=~Q(outcome="ok"),
            ),
            # Retention pruning and the all-integrations explorer walk by time.
            models.Index(fields=["created", "id"], name="reqlog_created"),
        ]

    def __str__(self) -> str:
        status = self.status if self.status is not None else self.outcome
        return f"{self.method} {self.host}{self.path} → {status}"


class Grain(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class MetricBucket(models.Model):
    """Counters and a latency histogram for one integration × endpoint × source × period."""

    grain = models.CharField(max_length=6, choices=Grain.choices)
    start = models.DateTimeField()
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="+")
    endpoint = models.CharField(max_length=266, help_text='Method and template: "GET /v1/x/{id}"')
    source = models.CharField(max_length=10, choices=Source.choices)
    total = models.PositiveIntegerField(default=0)
    ok = models.PositiveIntegerField(default=0)
    client_errors = models.PositiveIntegerField(default=0)
    server_errors = models.PositiveIntegerField(default=0)
    timeouts = models.PositiveIntegerField(default=0)
    connect_errors = models.PositiveIntegerField(default=0)
    tls_errors = models.PositiveIntegerField(default=0)
    other_errors = models.PositiveIntegerField(
        default=0, help_text="Protocol, read, blocked, other"
    )
    s2xx = models.PositiveIntegerField(default=0)
    s3xx = models.PositiveIntegerField(default=0)
    s4xx = models.PositiveIntegerField(default=0)
    s5xx = models.PositiveIntegerField(default=0)
    s401 = models.PositiveIntegerField(default=0)
    s403 = models.PositiveIntegerField(default=0)
    s429 = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    deprecated = models.PositiveIntegerField(
        default=0, help_text="Responses with Deprecation/Sunset"
    )
    latency_sum = models.FloatField(default=0)
    latency_min = models.FloatField(null=True, blank=True)
    latency_max = models.FloatField(null=True, blank=True)
    ratelimit_remaining_min = models.PositiveIntegerField(null=True, blank=True)
    ratelimit_limit = models.PositiveIntegerField(null=True, blank=True)
    histogram = models.BinaryField(default=b"")

    class Meta:
        constraints = [
            # Rollups upsert on this key, which is also what the query API filters by.
            models.UniqueConstraint(
                fields=["integration", "grain", "start", "source", "endpoint"],
                name="bucket_key",
            )
        ]
        indexes = [
            # Retention drops old minute/hour buckets by time across integrations.
            models.Index(fields=["grain", "start"], name="bucket_grain_start"),
        ]

    def __str__(self) -> str:
        when = f"{self.start:%Y-%m-%d %H:%M}"
        return f"{self.integration_id} {self.endpoint} {self.source} {self.grain}@{when}"


class RollupState(models.Model):
    """A named watermark for background jobs (e.g. the highest RequestLog id rolled up)."""

    name = models.CharField(max_length=50, unique=True)
    value = models.BigIntegerField(default=0)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class RecorderLoss(models.Model):
    """Rows the recorder could neither write nor spill to disk. Should stay empty."""

    created = models.DateTimeField(default=timezone.now)
    rows = models.PositiveIntegerField()
    reason = models.CharField(max_length=500)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "recorder losses"

    def __str__(self) -> str:
        return f"{self.rows} rows lost at {self.created:%Y-%m-%d %H:%M}: {self.reason}"


class ProbeState(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    UP = "up", "Up"
    DEGRADED = "degraded", "Degraded"
    DOWN = "down", "Down"


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
    method = models.CharField(max_length=10, default="GET")
    url = models.URLField(max_length=1000)
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Header values may reference environment variables as ${NAME}; the secret "
        "itself is never stored.",
    )
    body = models.TextField(blank=True)
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
        return sorted({m for v in self.headers.values() for m in _ENV_REF.findall(str(v))})

    def header_fingerprints(self) -> dict[str, str]:
        """What the UI shows of each header: literal values, or a fingerprint of a secret."""
        import os

        shown = {}
        for name, value in self.headers.items():
            refs = _ENV_REF.findall(str(value))
            if not refs:
                shown[name] = str(value)
                continue
            resolved = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), str(value))
            missing = [r for r in refs if r not in os.environ]
            if missing:
                shown[name] = f"{value} (unset: {', '.join(missing)})"
            else:
                digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
                shown[name] = f"{value} (sha256 {digest}…)"
        return shown

    def clean(self) -> None:
        secret_words = ("authorization", "token", "key", "secret", "password", "cookie")
        for name, value in (self.headers or {}).items():
            if any(w in name.lower() for w in secret_words) and not _ENV_REF.search(str(value)):
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


class AlertRule(models.Model):
    """A condition to watch; parameters depend on the kind (see monitoring.alerts)."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
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
    rule_kind = models.CharField(max_length=20, choices=RuleKind.choices, blank=True)
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


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class AuditLogQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("The audit log is append-only")

    def delete(self):
        raise PermissionError("The audit log is append-only")


class AuditLog(models.Model):
    """Who did what to which object, from where. Append-only and hash-chained (see audit.py)."""

    created = models.DateTimeField(default=timezone.now)
    seq = models.PositiveBigIntegerField(unique=True, help_text="Position in the hash chain")
    # No foreign key: deleting a user must not rewrite the record of what they did.
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor = models.CharField(max_length=150, help_text="Username, key name or 'system'")
    action = models.CharField(max_length=50)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            # Failed sign-in detection and the admin's action filter, by time.
            models.Index(fields=["action", "created"], name="auditlog_action_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.actor} {self.action} {self.target_repr}".strip()

    def save(self, *args, **kwargs):
        if self.pk is not None or not kwargs.get("force_insert", False):
            raise PermissionError("Audit rows are written only by monitoring.audit.record()")
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only")
