"""The webhook admin: endpoints with secrets inline, audited, secrets never shown in clear."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring.models import AuditLog, WebhookEndpoint, WebhookSample, WebhookSecret
from monitoring.webhooks import secrets as hook_secrets
from tests.monitoring.webhooks.hookkit import KEY, make_endpoint, whsec

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", KEY)


def _form(endpoint: WebhookEndpoint, secrets: list[dict], initial: int = 0) -> dict:
    data = {
        "integration": endpoint.integration_id,
        "name": endpoint.name,
        "scheme": endpoint.scheme,
        "header_name": "",
        "signature_encoding": "hex",
        "timestamp_header": "",
        "replay_window_s": "300",
        "event_types": "",
        "max_silence_s": "",
        "active": "on",
        "secrets-TOTAL_FORMS": str(len(secrets)),
        "secrets-INITIAL_FORMS": str(initial),
        "secrets-MIN_NUM_FORMS": "0",
        "secrets-MAX_NUM_FORMS": "1000",
        "samples-TOTAL_FORMS": "0",
        "samples-INITIAL_FORMS": "0",
        "samples-MIN_NUM_FORMS": "0",
        "samples-MAX_NUM_FORMS": "0",
    }
    for i, row in enumerate(secrets):
        data |= {f"secrets-{i}-{k}": v for k, v in row.items()}
        data[f"secrets-{i}-endpoint"] = str(endpoint.pk)
    return data


def test_an_admin_adds_a_secret_stored_encrypted_and_shown_by_fingerprint(client, admin_user):
    endpoint = make_endpoint("standard")
    client.force_login(admin_user)
    url = reverse("admin:monitoring_webhookendpoint_change", args=[endpoint.pk])
    page = client.get(url)
    assert page.status_code == 200 and endpoint.path.encode() in page.content
    value = whsec()
    response = client.post(
        url,
        _form(endpoint, [{"value": value, "reference": "", "not_after_0": "", "not_after_1": ""}]),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    secret = WebhookSecret.objects.get(endpoint=endpoint)
    assert secret.encrypted and value not in secret.encrypted
    assert hook_secrets.resolve(secret) == value
    WebhookSample.objects.create(endpoint=endpoint, event_type="invoice.paid", body='{"a": 1}')
    page = client.get(url)
    assert value.encode() not in page.content
    assert b"invoice.paid" in page.content  # the sample, read-only
    assert secret.fingerprint.encode() in page.content
    entry = AuditLog.objects.get(target_type="monitoring.WebhookSecret", action="create")
    assert value not in str(entry.after) and secret.encrypted not in str(entry.after)
    assert entry.after["fingerprint"] == secret.fingerprint


def test_a_reference_outside_the_policy_is_a_form_error(client, admin_user):
    endpoint = make_endpoint("github")
    client.force_login(admin_user)
    url = reverse("admin:monitoring_webhookendpoint_change", args=[endpoint.pk])
    row = {"reference": "${DATABASE_URL}", "value": "", "not_after_0": "", "not_after_1": ""}
    response = client.post(url, _form(endpoint, [row]))
    assert response.status_code == 200
    assert b"of Upstream itself" in response.content
    assert not WebhookSecret.objects.exists()


def test_rotation_in_the_admin_sets_the_old_secrets_end_and_is_audited(
    client, admin_user, monkeypatch
):
    endpoint = make_endpoint("github")
    old = hook_secrets.create(endpoint, value="old-secret")
    monkeypatch.setenv("UPSTREAM_SECRET_GH_NEW", "new-secret")
    client.force_login(admin_user)
    url = reverse("admin:monitoring_webhookendpoint_change", args=[endpoint.pk])
    rows = [
        {
            "id": str(old.pk),
            "reference": "",
            "value": "",
            "not_after_0": "2030-01-01",
            "not_after_1": "00:00:00",
        },
        {
            "reference": "${UPSTREAM_SECRET_GH_NEW}",
            "value": "",
            "not_after_0": "",
            "not_after_1": "",
        },
    ]
    response = client.post(url, _form(endpoint, rows, initial=1))
    assert response.status_code == 302, response.content.decode()[:2000]
    old.refresh_from_db()
    assert old.not_after is not None and hook_secrets.resolve(old) == "old-secret"
    new = WebhookSecret.objects.exclude(pk=old.pk).get()
    assert new.fingerprint == hook_secrets.fingerprint("new-secret")
    actions = set(
        AuditLog.objects.filter(target_type="monitoring.WebhookSecret").values_list(
            "action", flat=True
        )
    )
    assert actions == {"create", "update"}


def test_a_viewer_cannot_open_the_webhook_admin(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("admin:monitoring_webhookendpoint_changelist"))
    assert response.status_code in (302, 403)
