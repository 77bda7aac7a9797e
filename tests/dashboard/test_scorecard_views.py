"""The scorecard page and its API twin: the stored report, its evidence, access and errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from api.models import ApiKey
from monitoring import scorecard
from monitoring.models import Integration, Scorecard

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return Integration.objects.create(name="Acme", slug="acme", environment="production")


def test_the_page_lists_every_check_with_its_grade_and_evidence(client, viewer, acme):
    client.force_login(viewer)
    response = client.get(reverse("scorecard", args=[acme.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    for check in scorecard.CHECKS:
        assert f'id="check-{check.key}"' in html
        assert escape(check.guide) in html
    assert "No sandbox or staging integration of this provider exists." in html


def test_the_page_reads_a_fresh_stored_scorecard_without_recomputing(
    client, viewer, acme, django_assert_max_num_queries
):
    scorecard.refresh(acme)
    Scorecard.objects.update(grade="B")  # a marker: recomputing would overwrite it
    client.force_login(viewer)
    with django_assert_max_num_queries(8):
        response = client.get(reverse("scorecard", args=[acme.pk]))
    assert '<span class="grade grade-b"' in response.content.decode()


def test_a_stale_scorecard_is_computed_again(client, viewer, acme):
    scorecard.refresh(acme, timezone.now() - timedelta(hours=3))
    Scorecard.objects.update(grade="B")
    client.force_login(viewer)
    client.get(reverse("scorecard", args=[acme.pk]))
    assert Scorecard.objects.order_by("-computed_at").first().grade != "B"


def test_an_unknown_integration_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("scorecard", args=[999999])).status_code == 404


def _api(client, key, path):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_the_api_returns_the_same_checks_as_json(client, acme):
    key = ApiKey.issue(name="reader", scopes=["read"])[1]
    response = _api(client, key, "/api/v1/integrations/acme/scorecard")
    assert response.status_code == 200
    data = response.json()
    assert data["integration"]["slug"] == "acme"
    assert [c["key"] for c in data["checks"]] == [c.key for c in scorecard.CHECKS]
    assert {c["grade"] for c in data["checks"]} <= {"pass", "warn", "fail", "unknown"}
    assert data["grade"] in {"A", "B", "C", "D", "F", "—"}


def test_the_api_needs_the_read_scope_and_names_bad_input(client, acme):
    ingest = ApiKey.issue(name="sender", scopes=["ingest"])[1]
    assert _api(client, ingest, "/api/v1/integrations/acme/scorecard").status_code == 403
    reader = ApiKey.issue(name="reader", scopes=["read"])[1]
    missing = _api(client, reader, "/api/v1/integrations/nope/scorecard")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"
    bad = _api(client, reader, "/api/v1/integrations/acme/scorecard?environment=moon")
    assert bad.status_code == 400
    typo = _api(client, reader, "/api/v1/integrations/acme/scorecard?env=production")
    assert typo.status_code == 400


def test_the_api_asks_for_an_environment_when_the_slug_is_ambiguous(client, acme):
    Integration.objects.create(name="Acme", slug="acme", environment="sandbox")
    reader = ApiKey.issue(name="reader", scopes=["read"])[1]
    assert _api(client, reader, "/api/v1/integrations/acme/scorecard").status_code == 400
    ok = _api(client, reader, "/api/v1/integrations/acme/scorecard?environment=sandbox")
    assert ok.status_code == 200 and ok.json()["integration"]["environment"] == "sandbox"


def test_the_integration_page_shows_the_stored_grade_and_what_needs_attention(client, viewer, acme):
    client.force_login(viewer)
    page = client.get(reverse("integration", args=[acme.pk])).content.decode()
    assert "Not graded yet" in page
    scorecard.refresh(acme)
    page = client.get(reverse("integration", args=[acme.pk])).content.decode()
    assert 'id="scorecard-summary"' in page
    assert "Tested in a sandbox" in page  # a failing check, named with its evidence
    assert reverse("scorecard", args=[acme.pk]) in page


def test_the_overview_shows_each_integrations_grade_with_one_query(client, viewer, acme):
    scorecard.refresh(acme)
    grade = Scorecard.objects.get().grade
    client.force_login(viewer)
    page = client.get(reverse("overview")).content.decode()
    assert f'href="{reverse("scorecard", args=[acme.pk])}"' in page
    assert f">{grade}</a>" in page


def test_every_evidence_link_opens_the_request_log_over_the_scorecards_window(client, viewer):
    from monitoring.scorecard import Evidence

    acme = Integration.objects.create(name="Acme2", slug="acme2", environment="production")
    evidence = Evidence(acme, timezone.now())
    client.force_login(viewer)
    for query in ({}, {"status": 429}, {"outcome": "client_error"}, {"method": "GET"}):
        link = evidence.log_link(**query)
        assert "range=7d" in link
        assert client.get(link).status_code == 200, link
