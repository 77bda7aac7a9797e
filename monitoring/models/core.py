"""Integrations, the raw request log and the recorder's and jobs' own state."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import connections, models, transaction
from django.db.models import F, Q
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from monitoring.models.hosts import validate_host_patterns


class Environment(models.TextChoices):
    PRODUCTION = "production", "Production"
    STAGING = "staging", "Staging"
    SANDBOX = "sandbox", "Sandbox"


class Source(models.TextChoices):
    CLIENT = "client", "Client"
    PROBE = "probe", "Probe"
    INGEST = "ingest", "Ingest"
    OTLP = "otlp", "OpenTelemetry"
    WEBHOOK = "webhook", "Webhook"


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


def validate_preset(value: str) -> None:
    """A preset name the registry knows (blank is allowed: no preset)."""
    from monitoring import presets

    if value and value not in presets.ALL:
        raise ValidationError(
            "Unknown preset %(value)s; known: %(known)s",
            params={"value": value[:40], "known": ", ".join(sorted(presets.ALL))},
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
    host_patterns = models.TextField(
        blank=True,
        validators=[validate_host_patterns],
        help_text="Hosts whose OpenTelemetry spans belong here, one per line, e.g. "
        "api.stripe.com or *.paubox.net.",
    )
    # A name from monitoring.presets (blank = none): not DB choices, so adding a provider
    # needs no migration; the field's validator and a system check keep values known.
    preset = models.CharField(
        max_length=40,
        blank=True,
        validators=[validate_preset],
        help_text="The provider preset this integration was built from (error shapes, "
        "diagnoses, templates), blank for none.",
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

    def host_pattern_list(self) -> list[str]:
        return [line.strip().lower() for line in self.host_patterns.splitlines() if line.strip()]


class RequestLog(models.Model):
    """One HTTP attempt, secrets already redacted. Kept briefly; charts read metric buckets."""

    created = models.DateTimeField(default=timezone.now)
    # No database constraint and no index of its own (migration 0018): the constraint's
    # per-row trigger cost a quarter to a third of COPY's time, so storage checks the
    # integrations once per batch and lock_out_writers below keeps a delete from leaving
    # orphans; the index was the leading column of reqlog_integration_time's. Django still
    # cascades deletes.
    integration = models.ForeignKey(
        Integration,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
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
    # Issue 13: a token budget (OpenAI's x-ratelimit-*-tokens, Anthropic's tightest of its
    # token limits) apart from the request budget above; null when the provider sends none.
    token_limit = models.PositiveIntegerField(null=True, blank=True)
    token_remaining = models.PositiveIntegerField(null=True, blank=True)
    token_reset = models.DateTimeField(null=True, blank=True)
    retry_after_s = models.FloatField(null=True, blank=True)
    deprecated = models.BooleanField(default=False)
    deprecation_at = models.DateTimeField(null=True, blank=True)
    sunset_at = models.DateTimeField(null=True, blank=True)
    deprecation_link = models.CharField(max_length=500, blank=True)
    api_version = models.CharField(max_length=64, blank=True)
    # Issue 13 (streams): the body's timing as the caller read it; null when not measured.
    first_byte_ms = models.FloatField(null=True, blank=True, help_text="To the first body byte")
    duration_ms = models.FloatField(null=True, blank=True, help_text="To the end of the body")
    # db_default: raw inserts that predate the column (benchmarks, COPY) still fit.
    streamed = models.BooleanField(
        default=False, db_default=False, help_text="An event stream (SSE, NDJSON)"
    )
    # Issue 18: what the caller's request said, computed on the caller's side
    # (upstream_client.facts): a keyed hash of its credential, never the credential; the
    # name of the version header it sent, never the value; a JWT's age.
    key_fingerprint = models.CharField(max_length=16, blank=True, db_default="", default="")
    version_header = models.CharField(max_length=64, blank=True, db_default="", default="")
    token_age_s = models.FloatField(null=True, blank=True)
    # Issue 14: how many items a bulk/batch request carried, counted on the caller's side
    # (upstream_client.bodies; the body never leaves the caller), and the diagnosis codes
    # the request earned before any answer (a batch over the preset's advised size), a
    # mark beside the outcome: a flagged 2xx is still a success.
    batch_size = models.PositiveSmallIntegerField(null=True, blank=True)
    flags = models.CharField(
        max_length=100, blank=True, db_default="", default="", help_text="e.g. batch_too_large"
    )

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

    def flag_diagnoses(self) -> list:
        """The ``Diagnosis`` of each of this row's flags (label and advice, for its badge)."""
        from monitoring.presets import DIAGNOSES

        return [DIAGNOSES[code] for code in self.flags.split(",") if code in DIAGNOSES]


@receiver(pre_delete, sender=Integration)
def lock_out_writers(sender, instance: Integration, using: str, **kwargs) -> None:
    """Lock the integration before its request-log rows are deleted (PostgreSQL).

    RequestLog.integration has no database constraint there; a batch being written holds
    KEY SHARE on its integrations (storage.insert_rows) until it commits. Django sends
    this signal inside the delete's transaction, before the cascade: the delete waits
    for such a batch, and then its cascade sees the batch's rows and removes them too.
    """
    if connections[using].vendor == "postgresql":
        table = connections[using].ops.quote_name(Integration._meta.db_table)
        with connections[using].cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [instance.pk])  # noqa: S608


class JobState(models.Model):
    """Named state of background jobs: locks, counters and done-markers, one row per name.

    Users: the alert evaluator's lock (``lock``), the probe dispatcher's generation
    (``bump``), the recorder's spool-segment markers and the demo's seeded marker (plain
    rows: their existence is the fact).
    """

    name = models.CharField(max_length=50, unique=True)
    value = models.BigIntegerField(default=0)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"

    @classmethod
    def lock(cls, name: str) -> JobState:
        """Hold this name's row locked until the surrounding transaction ends.

        The one locking idiom for jobs that must not overlap: SELECT … FOR UPDATE on
        PostgreSQL; on SQLite the transaction itself is the lock (BEGIN IMMEDIATE).
        """
        cls.objects.get_or_create(name=name)
        return cls.objects.select_for_update().get(name=name)

    @classmethod
    def bump(cls, name: str) -> int:
        """Add one to this name's counter atomically and return the new value."""
        with transaction.atomic():
            cls.objects.get_or_create(name=name)
            cls.objects.filter(name=name).update(value=F("value") + 1, updated=timezone.now())
            return cls.objects.get(name=name).value


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
