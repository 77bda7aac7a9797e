"""Metric buckets and their schema: the one owner the rollup writes and every reader imports."""

from __future__ import annotations

import functools

from django.conf import settings
from django.db import models

from monitoring.models.core import Integration, Source

TOTAL_COUNTERS = ("total", "ok", "client_errors", "server_errors", "s401", "s403", "s429")
"""The counters the overview sums per integration (monitoring.metrics.counts_by_integration,
window_totals, window_counts): the index bucket_all_endpoints holds them, so those reads
never touch the table."""


class Grain(models.TextChoices):
    MINUTE = "minute", "Minute"
    QUARTER = "15m", "Quarter-hour"
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
            # The integration-wide rows (endpoint "", ALL_ENDPOINTS below) that the overview,
            # the verdicts and every integration chart read. In bucket_key a time range of
            # one integration walks every endpoint's rows too (~20 per period, each a table
            # lookup to test its endpoint); this index holds only the "" rows, and their
            # counters, so counter reads are index-only (issue 19: the 7-day overview).
            models.Index(
                fields=["integration", "grain", "source", "start", "endpoint", *TOTAL_COUNTERS],
                condition=models.Q(endpoint=""),
                name="bucket_all_endpoints",
            ),
        ]

    def __str__(self) -> str:
        when = f"{self.start:%Y-%m-%d %H:%M}"
        return f"{self.integration_id} {self.endpoint} {self.source} {self.grain}@{when}"


# --- The bucket schema ---------------------------------------------------------------------
# What the writer (monitoring.rollup) and every reader (metrics, alerts, retention, the
# dashboard) must agree on about MetricBucket rows, kept with the table so that readers
# never import the writer.

COUNTERS = (
    "total",
    "ok",
    "client_errors",
    "server_errors",
    "timeouts",
    "connect_errors",
    "tls_errors",
    "other_errors",
    "s2xx",
    "s3xx",
    "s4xx",
    "s5xx",
    "s401",
    "s403",
    "s429",
    "retries",
    "deprecated",
)
"""MetricBucket's counter columns: each merges by addition."""

KEY_COLUMNS = ("integration_id", "grain", "start", "source", "endpoint")
"""The columns of the unique key "bucket_key" every rollup upserts on."""
VALUE_COLUMNS = (
    *COUNTERS,
    "latency_sum",
    "latency_min",
    "latency_max",
    "ratelimit_remaining_min",
    "ratelimit_limit",
    "histogram",  # monitoring.histogram's encoding
)

GRAINS = (Grain.MINUTE, Grain.QUARTER, Grain.HOUR, Grain.DAY)
GRAIN_SECONDS = {Grain.MINUTE: 60, Grain.QUARTER: 900, Grain.HOUR: 3600, Grain.DAY: 86400}


def retain_days(grain: str) -> int | None:
    """How many days buckets of a grain are kept (None: forever), from settings.UPSTREAM.

    Quarter-hour buckets live as long as the raw rows (and at least as long as minutes): a
    24-hour chart reads 96 of them instead of 1,440 minutes, and rebuild() can always
    recreate them from raw rows that are still there.
    """
    keep = settings.UPSTREAM
    if grain == Grain.MINUTE:
        return keep["RETAIN_MINUTE_DAYS"]
    if grain == Grain.QUARTER:
        return max(keep["RETAIN_RAW_DAYS"], keep["RETAIN_MINUTE_DAYS"])
    if grain == Grain.HOUR:
        return keep["RETAIN_HOUR_DAYS"]
    return None


ALL_ENDPOINTS = ""
"""Endpoint of the per-integration total row kept beside the per-endpoint rows.

Every (integration, grain, start, source) has one extra bucket with endpoint "" holding the
merge of all its endpoints, so an integration-wide chart reads one row per period instead of
one per endpoint. A real endpoint is "METHOD /path" and never empty. Anything that sums
buckets itself must pick either "" or the real endpoints, never both (monitoring.metrics
does this for you).
"""
ENDPOINT_MAX = MetricBucket._meta.get_field("endpoint").max_length


@functools.lru_cache(maxsize=4096)  # few distinct templates; the rollup asks once per raw row
def endpoint_of(method: str, path: str) -> str:
    """The bucket endpoint for a method and path template: "GET /v1/users/{id}"."""
    return f"{method.upper()} {path}"[:ENDPOINT_MAX]


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """(method, path template) of a bucket endpoint, to find its raw rows again."""
    method, _, path = endpoint.partition(" ")
    return method, path
