"""Helpers for the metrics tests: build RequestLog rows and record them the way the writer does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction

from monitoring import rollup
from monitoring.models import Outcome, RequestLog
from monitoring.parsing import classify_status


def log(
    integration_id: int,
    created: datetime,
    *,
    method: str = "GET",
    path: str = "/v1/things/{id}",
    source: str = "client",
    status: int | None = 200,
    outcome: str | None = None,
    latency_ms: float = 100.0,
    attempt: int = 1,
    deprecated: bool = False,
    ratelimit_remaining: int | None = None,
    ratelimit_limit: int | None = None,
) -> RequestLog:
    if outcome is None:
        outcome = Outcome.TIMEOUT if status is None else classify_status(status)
    return RequestLog(
        integration_id=integration_id,
        created=created,
        source=source,
        method=method,
        host="api.example.com",
        path=path,
        status=status,
        outcome=outcome,
        latency_ms=latency_ms,
        attempt=attempt,
        deprecated=deprecated,
        ratelimit_remaining=ratelimit_remaining,
        ratelimit_limit=ratelimit_limit,
    )


def record(rows: Sequence[RequestLog]) -> None:
    """Insert raw rows and roll them up in one transaction, as the recorder does."""
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows)
        rollup.apply_rows(rows)
