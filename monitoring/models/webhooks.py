"""Webhook endpoints (where a provider delivers), their rotating secrets, dedupe and samples."""

from __future__ import annotations

import secrets as _secrets
from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from monitoring.models.core import Integration

# The receiving URL is /hooks/<token>/: for schemes that sign nothing the token is the only
# secret, so it carries 256 bits.
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh, unguessable, URL-safe endpoint token (43 characters)."""
    return _secrets.token_urlsafe(TOKEN_BYTES)


class WebhookScheme(models.TextChoices):
    """How a provider signs its deliveries; monitoring/webhooks/schemes.py has one class each."""

    STANDARD = "standard", "Standard Webhooks"
    SVIX = "svix", "Svix"
    STRIPE = "stripe", "Stripe"
    GITHUB = "github", "GitHub"
    HMAC_SHA256 = "hmac_sha256", "Generic HMAC-SHA256"
    NONE = "none", "None (secret URL only)"


class SignatureEncoding(models.TextChoices):
    HEX = "hex", "Hex"
    BASE64 = "base64", "Base64"


class WebhookEndpoint(models.Model):
    """One receiving URL of one integration: its scheme, replay window and what it expects."""

    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    name = models.CharField(max_length=100, blank=True)
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    scheme = models.CharField(max_length=20, choices=WebhookScheme.choices)
    header_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="Generic HMAC only: the header carrying the signature, e.g. X-Signature.",
    )
    signature_encoding = models.CharField(
        max_length=10, choices=SignatureEncoding.choices, default=SignatureEncoding.HEX
    )
    timestamp_header = models.CharField(
        max_length=100,
        blank=True,
        help_text="Generic HMAC only: a header with the send time (epoch seconds); when set it "
        "is signed as '<timestamp>.<body>' and checked against the replay window.",
    )
    replay_window_s = models.PositiveIntegerField(
        default=300, help_text="Deliveries signed longer ago than this are refused."
    )
    event_types = models.TextField(
        blank=True, help_text="Event types expected, one per line; blank means any."
    )
    max_silence_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="'Webhooks stopped' after this long without a delivery (blank: learned).",
    )
    # Learned typical gap between deliveries; kept by the receiver, read by the rules.
    cadence_s = models.FloatField(null=True, blank=True, editable=False)
    last_delivery_at = models.DateTimeField(null=True, blank=True, editable=False)
    sample_bodies = models.BooleanField(
        default=False,
        help_text="Keep one capped, redacted sample body per event type (off: only type and id).",
    )
    active = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["integration__name", "name", "id"]
        indexes = [
            # The "webhooks stopped" rule walks the active endpoints by integration.
            models.Index(
                fields=["integration"], name="webhook_endpoint_active", condition=Q(active=True)
            ),
        ]

    def __str__(self) -> str:
        label = self.name or self.get_scheme_display()
        return f"{self.integration.name}: {label}"

    @property
    def path(self) -> str:
        """The receiving path providers are given."""
        return f"/hooks/{self.token}/"

    def event_type_list(self) -> list[str]:
        return [line.strip() for line in self.event_types.splitlines() if line.strip()]

    def active_secrets(self, now: datetime | None = None) -> list[WebhookSecret]:
        """Secrets that may verify a delivery now (several while a rotation overlaps)."""
        now = now or timezone.now()
        return [s for s in self.secrets.all() if s.not_after is None or s.not_after > now]


class WebhookSecret(models.Model):
    """One signing secret of an endpoint: a ``${NAME}`` reference or an encrypted value.

    Never the secret in clear: monitoring/webhooks/secrets.py owns encryption, resolution
    and the fingerprint shown in the UI.
    """

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    reference = models.CharField(
        max_length=200,
        blank=True,
        help_text="${NAME} of an environment variable holding the secret.",
    )
    encrypted = models.TextField(
        blank=True, editable=False, help_text="The secret encrypted with UPSTREAM_SECRETS_KEY."
    )
    fingerprint = models.CharField(max_length=40, blank=True, editable=False)
    not_after = models.DateTimeField(
        null=True, blank=True, help_text="End of this secret's use (the old one in a rotation)."
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["endpoint", "-created", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(reference="") | ~Q(encrypted=""), name="webhook_secret_has_value"
            )
        ]

    def __str__(self) -> str:
        what = self.reference or "encrypted"
        return f"{what} ({self.fingerprint or 'no fingerprint'})"

    def is_active(self, now: datetime | None = None) -> bool:
        return self.not_after is None or self.not_after > (now or timezone.now())


class WebhookSeen(models.Model):
    """An event or delivery id already accepted, so a redelivery is answered but not re-run.

    Rows older than the endpoint's dedupe window are pruned (monitoring/webhooks/dedupe.py).
    """

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    # sha256 of the provider's id: ids are unbounded text and need no reading back.
    key = models.CharField(max_length=64)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "key"], name="webhook_seen_key"),
        ]
        indexes = [
            # Pruning deletes by age.
            models.Index(fields=["created"], name="webhook_seen_created"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}:{self.key[:12]}"


class WebhookSample(models.Model):
    """The latest capped, redacted body of one event type, kept only if the endpoint opts in."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="samples")
    event_type = models.CharField(max_length=100)
    body = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["endpoint", "event_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_type"], name="webhook_sample_per_type"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}:{self.event_type}"
