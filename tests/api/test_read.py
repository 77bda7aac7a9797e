"""The read API: integrations, one integration's summary from the metrics, alerts."""

from __future__ import annotations

import pytest
from django.utils import timezone

from api.models import ApiKey
from api.read import verdict
from monitoring import attempts, storage
from monitoring.models import Alert, AlertRule, Integration, RuleKind

pytestmark = pytest.mark.django_db


@pytest.fixture
def key():
    return ApiKey.issue(name="reader", scopes=["read"])[1]


@pytest.fixture
def paubox():
    return Integration.objects.create(name="Paubox", slug="paubox", environment="production")


def _get(client, key, path):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")


def _calls(integration, statuses):
    rows = [
        attempts.to_row(
            attempts.from_fields(
                integration=integration,
                method="POST",
                url="https://api.paubox.net/v1/messages",
                status=status,
                latency_ms=100.0 + i,
                created=timezone.now(),
            )
        )
        for i, status in enumerate(statuses)
    ]
    storage.insert_rows(rows)


def test_it_lists_integrations(client, key, paubox):
    data = _get(client, key, "/api/v1/integrations").json()
    assert data["integrations"] == [
        {
            "slug": "paubox",
            "name": "Paubox",
            "environment": "production",
            "base_url": "",
            "active": True,
        }
    ]


def test_the_summary_reads_the_metrics(client, key, paubox):
    _calls(paubox, [200] * 7 + [401, 403, 503])
    response = _get(client, key, "/api/v1/integrations/paubox/summary?range=24h")
    assert response.status_code == 200
    data = response.json()
    assert data["requests"] == 10 and data["status_401"] == 1 and data["status_403"] == 1
    assert data["error_rate"] == pytest.approx(0.3)
    assert data["latency_ms"]["p50"] is not None
    assert data["verdict"] == "degraded"


def test_summary_errors_are_problems(client, key, paubox):
    assert _get(client, key, "/api/v1/integrations/nope/summary").status_code == 404
    bad = _get(client, key, "/api/v1/integrations/paubox/summary?range=9y")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/problem+json"
    assert _get(client, key, "/api/v1/integrations?x=1").status_code == 400


def test_it_lists_firing_alerts(client, key, paubox):
    rule = AlertRule.objects.create(name="Errors", kind=RuleKind.ERROR_RATE, integration=paubox)
    Alert.objects.create(rule=rule, integration=paubox, fingerprint="f1", title="Paubox failing")
    Alert.objects.create(
        rule=rule, integration=paubox, fingerprint="f2", title="Old", state="resolved"
    )
    data = _get(client, key, "/api/v1/alerts?state=firing").json()
    assert [a["title"] for a in data["alerts"]] == ["Paubox failing"]
    assert data["alerts"][0]["integration"] == "paubox"
    assert _get(client, key, "/api/v1/alerts?state=sleeping").status_code == 400


def test_the_verdict():
    assert verdict(0, None, 0, 0) == "no_data"
    assert verdict(100, 0.0, 0, 0) == "ok"
    assert verdict(100, 0.1, 0, 0) == "degraded"
    assert verdict(100, 0.0, 2, 0) == "degraded"
    assert verdict(100, 0.6, 0, 0) == "down"
