"""The OpenAPI document and events schema are served, and the API conforms (schemathesis)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from api.models import ApiKey
from api.openapi import DOCUMENT
from dashboard.wsgi import application
from monitoring.models import Integration

schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = application  # WSGI: no network at all


def test_the_document_and_the_events_schema_are_served(client):
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.1")
    assert {"/api/v1/events", "/otlp/v1/traces", "/api/v1/alerts"} <= document.json()[
        "paths"
    ].keys()
    events = client.get("/api/v1/schema/events.json")
    assert events.status_code == 200 and "event" in events.json()["$defs"]


@pytest.fixture
def key(db):
    Integration.objects.get_or_create(name="Stripe", slug="stripe", environment="production")
    return ApiKey.issue(name="fuzz", scopes=["ingest", "read"])[1]


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    # The WSGI handler closes the database connection after each request, as in production;
    # inside a test transaction that would close the test's own (Django's test client
    # disconnects the same receiver).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _generous_rate_limit(settings):
    # The fuzzer sends many bad keys on purpose: the lockout is tested in test_keys.
    settings.UPSTREAM = {
        **settings.UPSTREAM,
        "API_RATE_PER_S": 10**6,
        "API_RATE_BURST": 10**6,
        "SIGNIN_FAILURES_PER_USER": 10**6,
        "SIGNIN_FAILURES_PER_ADDRESS": 10**6,
    }


@pytest.mark.django_db
@schema.exclude(path="/otlp/v1/traces").parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_conforms_to_its_openapi_document(case, key):
    case.call_and_validate(app=application, headers={"Authorization": f"Bearer {key}"})
