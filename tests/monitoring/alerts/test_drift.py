"""Version drift: the expected API version against what responses announce (rule and panel)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import metrics
from monitoring.alerts import lifecycle
from monitoring.models import Alert, AlertRule, RuleKind
from tests.monitoring.alerts.alertkit import calls, make_integration


@pytest.fixture
def stripe(db):
    return make_integration("Stripe", expected_api_version="2024-06-20")


def test_announced_versions_are_read_newest_first(stripe):
    now = timezone.now()
    calls(stripe, now - dt.timedelta(minutes=5), 2, api_version="2024-06-20")
    calls(stripe, now, 3, api_version="2025-01-27")
    calls(stripe, now, 4)  # no version header: not counted
    found = metrics.announced_versions(stripe.pk, now - dt.timedelta(hours=1))
    assert [(v.version, v.responses) for v in found] == [("2025-01-27", 3), ("2024-06-20", 2)]


def test_the_drift_rule_names_the_versions_seen(stripe):
    AlertRule.objects.create(name="Drift", kind=RuleKind.VERSION_DRIFT)
    calls(stripe, timezone.now(), 3, api_version="2025-01-27")
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title == (
        "Stripe · production — API version drift: expected 2024-06-20, seen 2025-01-27"
    )
    assert alert.figures["seen"] == ["2025-01-27"]


def test_no_drift_without_an_expected_version_or_with_the_expected_one(db):
    AlertRule.objects.create(name="Drift", kind=RuleKind.VERSION_DRIFT)
    loose = make_integration("Loose")
    exact = make_integration("Exact", expected_api_version="v2")
    calls(loose, timezone.now(), 3, api_version="v9")
    calls(exact, timezone.now(), 3, api_version="v2")
    lifecycle.evaluate()
    assert not Alert.objects.exists()


def test_the_integration_page_shows_the_drift_panel(stripe, client, viewer):
    calls(stripe, timezone.now(), 3, api_version="2025-01-27")
    client.force_login(viewer)
    html = client.get(reverse("integration", args=[stripe.pk])).content.decode()
    assert "version-drift" in html
    assert 'Expected <span class="mono">2024-06-20</span>' in html
    assert "2025-01-27" in html


def test_the_panel_confirms_the_expected_version_and_hides_without_versions(stripe, client, viewer):
    client.force_login(viewer)
    url = reverse("integration", args=[stripe.pk])
    assert "version-drift" not in client.get(url).content.decode()
    calls(stripe, timezone.now(), 2, api_version="2024-06-20")
    html = client.get(url).content.decode()
    assert "as expected" in html
