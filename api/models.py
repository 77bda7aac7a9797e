"""API keys (only their hash is stored) and the batch ids already ingested per key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from upstream_client.ship import MAX_SPOOL_AGE_S

from monitoring.models import Integration

KEY_PREFIX = "up_"
VISIBLE_CHARS = 8
PREFIX_LENGTH = len(KEY_PREFIX) + VISIBLE_CHARS
_ALPHABET = string.ascii_letters + string.digits
# Writing last_used on every request would make each read a write.
LAST_USED_EVERY = timedelta(minutes=1)
# How long a batch id is remembered: a day longer than a client may resend its batch (the
# SDK's spool discards batches older than MAX_SPOOL_AGE_S, 7 days), so a resend always
# finds its id and is stored once. Pruned hourly with the rest (api.apps registers it).
BATCH_ID_RETAIN_DAYS = -(-int(MAX_SPOOL_AGE_S) // 86_400) + 1


class Scope(models.TextChoices):
    INGEST = "ingest", "Ingest events"
    READ = "read", "Read metrics and alerts"
    ADMIN = "admin", "Administer"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new key: ``up_`` + 8 visible characters (the prefix shown in lists) + a secret."""
    visible = "".join(secrets.choice(_ALPHABET) for _ in range(VISIBLE_CHARS))
    return f"{KEY_PREFIX}{visible}_{secrets.token_urlsafe(32)}"


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Any of: ingest, read, admin")
    integrations = models.ManyToManyField(
        Integration,
        blank=True,
        related_name="+",
        help_text="Integrations the key may write; empty means every integration.",
    )
    allow_create = models.BooleanField(
        default=False, help_text="Events for an unknown integration create it."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, **fields) -> tuple[ApiKey, str]:
        """Create a key; return it with the key text, which is never available again."""
        while True:
            key = generate_key()
            if not cls.objects.filter(prefix=key[:PREFIX_LENGTH]).exists():
                break
        obj = cls.objects.create(prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key), **fields)
        return obj, key

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_key(key))

    def usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked is None and (self.expires is None or self.expires > now)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def touch(self, now=None) -> None:
        """Record use, at most once a minute (a filtered update: no race between workers)."""
        now = now or timezone.now()
        if self.last_used is not None and now - self.last_used < LAST_USED_EVERY:
            return
        fresh = models.Q(last_used__isnull=True) | models.Q(last_used__lt=now - LAST_USED_EVERY)
        ApiKey.objects.filter(fresh, pk=self.pk).update(last_used=now)
        self.last_used = now


class IngestBatch(models.Model):
    """A batch id accepted from one key, written in the same transaction as its rows; kept
    ``BATCH_ID_RETAIN_DAYS``."""

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    batch_id = models.CharField(max_length=100)
    created = models.DateTimeField(default=timezone.now)
    accepted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The duplicate check of POST /api/v1/events.
            models.UniqueConstraint(fields=["key", "batch_id"], name="api_batch_key_id_uniq")
        ]
        indexes = [
            # Retention: the oldest ids first, in chunks (monitoring.retention, api.apps).
            models.Index(fields=["created"], name="api_batch_created"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id} ({self.accepted} events)"
