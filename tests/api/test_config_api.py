"""GET / PUT /api/v1/config: the same configuration as code as the commands, over HTTP."""

from __future__ import annotations

import json

import pytest
import yaml

from api.models import ApiKey
from monitoring.models import ActorType, AuditLog, Channel, Integration

pytestmark = pytest.mark.django_db

DOC = {
    "version": 1,
    "integrations": [{"slug": "stripe", "environment": "production", "name": "Stripe"}],
    "channels": [
        {"name": "ops", "kind": "slack", "settings": {"url": "${UPSTREAM_SECRET_SLACK_URL}"}}
    ],
}


@pytest.fixture
def admin_key():
    return ApiKey.issue(name="terraform", scopes=["admin"])[1]


def _auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_get_returns_yaml_or_json(client, admin_key):
    Integration.objects.create(name="Stripe", slug="stripe", environment="production")
    response = client.get("/api/v1/config", **_auth(admin_key))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.content)["integrations"][0]["slug"] == "stripe"
    as_json = client.get("/api/v1/config", HTTP_ACCEPT="application/json", **_auth(admin_key))
    assert as_json.json()["integrations"][0]["slug"] == "stripe"


def test_it_needs_the_admin_scope(client):
    reader = ApiKey.issue(name="reader", scopes=["read"])[1]
    assert client.get("/api/v1/config", **_auth(reader)).status_code == 403
    assert client.get("/api/v1/config").status_code == 401


def test_put_dry_run_shows_the_diff_and_writes_nothing(client, admin_key):
    response = client.put(
        "/api/v1/config?dry_run=1", yaml.safe_dump(DOC), content_type="application/yaml",
        **_auth(admin_key),
    )  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True
    assert [(c["kind"], c["action"]) for c in body["changes"]] == [
        ("integration", "create"),
        ("channel", "create"),
    ]
    assert not Integration.objects.exists()


def test_put_applies_idempotently_and_audits_as_the_key(client, admin_key):
    put = lambda: client.put(  # noqa: E731
        "/api/v1/config", json.dumps(DOC), content_type="application/json", **_auth(admin_key)
    )
    first = put().json()
    assert len(first["changes"]) == 2
    assert Channel.objects.get().settings == {"url": "${UPSTREAM_SECRET_SLACK_URL}"}
    audit = AuditLog.objects.filter(actor="terraform")
    assert audit.count() == 2
    assert set(audit.values_list("actor_type", flat=True)) == {ActorType.API_KEY}
    second = put().json()
    assert second["changes"] == [] and second["unchanged"] == 2


def test_put_of_a_bad_document_is_a_problem_listing_every_error(client, admin_key):
    slack = {"name": "ops", "kind": "slack", "settings": {"url": "https://hooks.slack.com/x"}}
    bad = {"integrations": [{"slug": "x", "environment": "moon"}], "channels": [slack]}
    response = client.put(
        "/api/v1/config", json.dumps(bad), content_type="application/json", **_auth(admin_key)
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    messages = [e["message"] for e in response.json()["errors"]]
    assert any(m.startswith("integrations[0].environment") for m in messages)
    assert any(m.startswith("channels[0].settings") for m in messages)
    assert not Integration.objects.exists() and not Channel.objects.exists()
    broken = client.put(
        "/api/v1/config", "integrations: [", content_type="application/yaml", **_auth(admin_key)
    )
    assert broken.status_code == 400
    typo = client.put(
        "/api/v1/config?dryrun=1", "{}", content_type="application/yaml", **_auth(admin_key)
    )
    assert typo.status_code == 400
