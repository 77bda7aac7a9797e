"""Stored scorecards: one row per integration and day, the newest read by pages and the API."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from monitoring.models.core import Integration


class Grade(models.TextChoices):
    PASS = "pass", "Pass"
    WARN = "warn", "Warn"
    FAIL = "fail", "Fail"
    UNKNOWN = "unknown", "Not enough data"


class Scorecard(models.Model):
    """An integration's graded checks at one moment (monitoring.scorecard computes them)."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="+")
    computed_at = models.DateTimeField(default=timezone.now)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    grade = models.CharField(max_length=2, help_text="A–F, or — when nothing could be graded")
    checks = models.JSONField(default=list)
    changes = models.JSONField(default=list, help_text="Checks whose grade moved in a week")

    class Meta:
        indexes = [
            # monitoring.scorecard: the newest row of an integration, and the week-old one.
            models.Index(fields=["integration", "computed_at"], name="scorecard_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.integration_id} {self.grade} at {self.computed_at:%Y-%m-%d %H:%M}"

    def report(self):
        from monitoring.scorecard import Report, Result

        results = [Result(**c) for c in self.checks]
        return Report(
            self.integration_id, self.computed_at, self.score, self.grade, results, self.changes
        )


class KeySighting(models.Model):
    """A credential an integration's calls carry, known only by its fingerprint (a keyed hash
    the caller computes): when Upstream first and last saw it, so the scorecard can say how old
    a key in use is. Kept up by the scorecard's refresh from its bounded sample."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="+")
    fingerprint = models.CharField(max_length=16)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "fingerprint"], name="keysighting_one_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"key {self.fingerprint} of {self.integration_id} since {self.first_seen:%Y-%m-%d}"
