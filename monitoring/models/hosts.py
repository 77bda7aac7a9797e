"""Hosts that OpenTelemetry spans named but no integration claims, counted for Admins."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

# A host pattern: a host name (letters, digits, dots, dashes), optionally "*." in front.
_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def validate_host_patterns(value: str) -> None:
    """One host pattern per line: ``api.stripe.com`` or ``*.paubox.net`` (no scheme, port)."""
    bad = [
        line.strip()
        for line in value.splitlines()
        if line.strip() and not _PATTERN.match(line.strip().lower())
    ]
    if bad:
        raise ValidationError(
            "Not a host pattern (use api.example.com or *.example.com): %(bad)s",
            params={"bad": ", ".join(bad[:5])},
        )


class UnmappedHost(models.Model):
    """A host seen in CLIENT spans that no integration's host patterns claim.

    One row per host, counted instead of kept per span: the Admin list offers "create
    integration for this host", after which new spans for it become attempts.
    """

    host = models.CharField(max_length=255, unique=True)
    spans = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    #: The ``service.name`` of the last sender, to tell who calls this host.
    service = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.host} ({self.spans} spans)"

    @classmethod
    def count(cls, host: str, spans: int, service: str = "") -> None:
        """Add ``spans`` sightings of ``host`` (created on first sight)."""
        now = timezone.now()
        host, service = host[:255], service[:200]
        updated = cls.objects.filter(host=host).update(
            spans=F("spans") + spans, last_seen=now, service=service
        )
        if updated:
            return
        try:
            with transaction.atomic():
                cls.objects.create(
                    host=host, spans=spans, first_seen=now, last_seen=now, service=service
                )
        except IntegrityError:  # another request created it meanwhile
            cls.objects.filter(host=host).update(
                spans=F("spans") + spans, last_seen=now, service=service
            )
