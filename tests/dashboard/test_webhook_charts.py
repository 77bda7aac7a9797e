"""The integration page's webhook section: deliveries by result, lag percentiles, event types."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.urls import reverse

from dashboard import charts
from monitoring import metrics
from monitoring.models import WebhookEndpoint, WebhookSecret
from tests.dashboard.conftest import make_log, record, traffic
from tests.dashboard.test_health_views import MAX_QUERIES, _queries, chart

CODES = {202: "", 200: "duplicate", 401: "bad_signature", 400: "malformed", 413: "too_large"}


def deliveries(integration, now, spec: list[tuple[str, int, float]], *, minutes_ago: int = 30):
    """Rows as the receiver records them: one per (event type, status, lag ms)."""
    rows = [
        make_log(
            integration,
            now - dt.timedelta(minutes=minutes_ago, seconds=-k),
            source="webhook",
            method="POST",
            host="api.paubox.net",
            path=f"/{event}",
            status=status,
            error_code=CODES[status],
            latency_ms=lag,
        )
        for k, (event, status, lag) in enumerate(spec)
    ]
    return record(rows)


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def hook(integration, now):
    ep = WebhookEndpoint.objects.create(
        integration=integration,
        name="Message events",
        scheme="standard",
        cadence_s=120.0,
        last_delivery_at=now - dt.timedelta(minutes=3),
    )
    WebhookSecret.objects.create(
        endpoint=ep, reference="${UPSTREAM_SECRET_PAUBOX_HOOKS}", fingerprint="whsec…9f3e"
    )
    return ep


def hour_of_deliveries(integration, now):
    spec = (
        [("message.delivered", 202, 400.0 + k * 10) for k in range(12)]
        + [("message.bounced", 202, 1500.0)] * 3
        + [("message.delivered", 200, 300.0)]  # a redelivery, answered as a duplicate
        + [("message.delivered", 401, 0.0)] * 2
        + [("unknown", 400, 0.0)]
    )
    return deliveries(integration, now, spec)


def test_the_integration_page_charts_deliveries_by_result_and_lag(signed_in, busy, hook, now):
    hour_of_deliveries(busy, now)
    response = signed_in.get(reverse("integration", args=[busy.pk]) + "?range=1h")
    assert response.status_code == 200
    by_result = chart(response, "webhook-deliveries")
    assert by_result["kind"] == "bars" and by_result["unit"] == "deliveries"
    totals = {s["key"]: sum(s["data"]) for s in by_result["series"]}
    assert totals == {"verified": 16, "failed": 2, "rejected": 1}
    lag = chart(response, "webhook-lag")
    assert lag["y_title"] == "delivery lag"
    p95 = [v for v in lag["series"][1]["data"] if v is not None]
    assert p95 and 1400 <= max(p95) <= 1600
    # Our own calls' charts are not mixed with the deliveries.
    assert sum(chart(response, "auth")["series"][0]["data"]) == 6


def test_the_page_lists_event_types_and_endpoints_without_secrets(signed_in, busy, hook, now):
    hour_of_deliveries(busy, now)
    body = html.unescape(signed_in.get(reverse("integration", args=[busy.pk])).content.decode())
    section = body[body.index('id="webhooks"') :]
    events = section[section.index("webhook-events") : section.index("webhook-endpoints")]
    assert events.index("message.delivered") < events.index("message.bounced")
    assert "POST /" not in events
    assert "Message events" in section and "Standard Webhooks" in section
    assert "2 min" in section  # the learned cadence
    assert hook.token not in body  # the receiving URL is a secret for unsigned schemes
    assert "UPSTREAM_SECRET_PAUBOX_HOOKS" not in body


def test_an_endpoint_without_deliveries_says_so(signed_in, integration, hook):
    body = signed_in.get(reverse("integration", args=[integration.pk])).content.decode()
    assert "No webhook deliveries in the last 24 h" in body
    assert "data-webhook-deliveries" not in body
    assert "Message events" in body


def test_an_integration_without_endpoints_has_no_webhook_section(signed_in, busy):
    body = signed_in.get(reverse("integration", args=[busy.pk])).content.decode()
    assert 'id="webhooks"' not in body


def test_webhook_queries_do_not_grow_with_deliveries(signed_in, busy, hook, now):
    url = reverse("integration", args=[busy.pk])
    signed_in.get(url)
    hour_of_deliveries(busy, now)
    before = _queries(signed_in, url)
    for minutes_ago in (5, 12, 40):
        deliveries(busy, now, [("message.opened", 202, 200.0)] * 20, minutes_ago=minutes_ago)
    traffic(busy, now - dt.timedelta(minutes=1), calls=100)
    after = _queries(signed_in, url)
    assert before == after
    assert after <= MAX_QUERIES["integration"]


def test_webhooks_cost_one_query_on_a_page_without_endpoints(signed_in, busy, integration, now):
    url = reverse("integration", args=[busy.pk])
    signed_in.get(url)
    without = _queries(signed_in, url)
    WebhookEndpoint.objects.create(integration=busy, scheme="none")
    hour_of_deliveries(busy, now)
    with_hooks = _queries(signed_in, url)
    # The endpoints (page and verdict), the verdict's window counts, the series, event types.
    assert without < with_hooks <= MAX_QUERIES["integration"]


def test_payloads_from_a_series():
    start = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    points = [
        metrics.Point(start=start, total=5, s2xx=3, s401=1),
        metrics.Point(start=start + dt.timedelta(minutes=1)),
    ]
    s = metrics.Series("minute", dt.timedelta(minutes=1), points)
    payload = charts.webhook_deliveries(s)
    assert [x["data"] for x in payload["series"]] == [[3, 0], [1, 0], [1, 0]]
    assert payload["y_title"] == "deliveries / min"
    assert charts.webhook_lag(s)["series"][1]["data"] == [None, None]
