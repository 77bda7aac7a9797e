"""Dashboard fixtures: request rows recorded the way the recorder does (raw rows + buckets)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from django.db import transaction
from django.utils import timezone

from monitoring import rollup
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Integration,
    Outcome,
    Probe,
    ProbeState,
    RequestLog,
    RuleKind,
)
from monitoring.parsing import classify_status


def make_log(integration: Integration, created: dt.datetime, **fields) -> RequestLog:
    status = fields.pop("status", 200)
    outcome = fields.pop("outcome", None) or (
        classify_status(status) if status is not None else Outcome.TIMEOUT
    )
    defaults = {
        "source": "client",
        "method": "GET",
        "host": "api.example.com",
        "path": "/v1/messages/{id}",
        "latency_ms": 120.0,
    }
    return RequestLog(
        integration=integration,
        created=created,
        status=status,
        outcome=outcome,
        **{**defaults, **fields},
    )


def record(rows: Sequence[RequestLog]) -> list[RequestLog]:
    """Insert raw rows and their metric buckets together, as the recorder's writer does."""
    with transaction.atomic():
        saved = RequestLog.objects.bulk_create(rows)
        rollup.apply_rows(rows)
    return saved


def traffic(integration: Integration, now: dt.datetime, *, calls: int = 60) -> list[RequestLog]:
    """A believable last hour: mostly OK, some 401s and 500s, a timeout, rate-limit headers."""
    rows = []
    for n in range(calls):
        created = now - dt.timedelta(minutes=55) + dt.timedelta(seconds=n * 50)
        fields = {
            "latency_ms": 80.0 + (n % 10) * 20,
            "ratelimit_limit": 1000,
            "ratelimit_remaining": max(0, 1000 - n * 10),
        }
        if n % 10 == 3:
            fields.update(status=401, error_code="invalid_api_key", error_message="Invalid key")
        elif n % 15 == 7:
            fields.update(status=503, error_code="unavailable", error_message="Try later")
        elif n == 11:
            fields.update(status=None, outcome=Outcome.TIMEOUT, error_message="Timed out")
        rows.append(make_log(integration, created, **fields))
    return record(rows)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def stripe(db):
    return Integration.objects.create(
        name="Stripe", slug="stripe", environment="production", base_url="https://api.stripe.com"
    )


@pytest.fixture
def busy(integration, now):
    """The Paubox integration with an hour of mixed traffic."""
    traffic(integration, now)
    return integration


@pytest.fixture
def auth_rule(db):
    return AlertRule.objects.create(name="Failed-auth spike", kind=RuleKind.AUTH_SPIKE)


@pytest.fixture
def firing_alert(integration, auth_rule, now):
    return Alert.objects.create(
        rule=auth_rule,
        integration=integration,
        fingerprint=f"{auth_rule.pk}:{integration.pk}",
        title="Paubox · production — failed-auth spike: 12 × 401 in 5 min (baseline 0)",
        summary="12 × 401 Unauthorized: the key is missing, wrong, expired or revoked.",
        figures={"facts": [["401 + 403 in the window", "12 in 5 min"]]},
        state=AlertState.FIRING,
        first_seen=now - dt.timedelta(minutes=20),
        last_seen=now - dt.timedelta(minutes=1),
    )


@pytest.fixture
def probe(integration):
    return Probe.objects.create(
        integration=integration,
        name="Health",
        url="https://api.paubox.net/v1/health",
        state=ProbeState.UP,
    )
