"""The webhook endpoints page: the list, adding an endpoint, switching one off; access."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring.models import AuditLog, WebhookEndpoint, WebhookSecret


def test_an_admin_adds_a_signed_endpoint_and_gets_its_url(client, admin_user, integration):
    client.force_login(admin_user)
    response = client.post(
        reverse("webhook_new"),
        {"integration": integration.pk, "scheme": "standard", "replay_window_s": 300,
         "signature_encoding": "hex", "secret_env": "UPSTREAM_SECRET_PAUBOX_HOOK"},
    )  # fmt: skip
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert f"/hooks/{endpoint.token}/" in response.content.decode()
    assert WebhookSecret.objects.get().reference == "${UPSTREAM_SECRET_PAUBOX_HOOK}"
    assert AuditLog.objects.filter(action="create", target_id=str(endpoint.pk)).exists()


def test_a_signed_scheme_needs_a_variable_and_the_unsigned_one_refuses_it(
    client, admin_user, integration
):
    client.force_login(admin_user)
    base = {"integration": integration.pk, "replay_window_s": 300, "signature_encoding": "hex"}
    missing = client.post(reverse("webhook_new"), {**base, "scheme": "stripe"})
    assert missing.status_code == 400 and "name the variable" in missing.content.decode()
    extra = client.post(
        reverse("webhook_new"), {**base, "scheme": "none", "secret_env": "UPSTREAM_SECRET_X"}
    )
    assert extra.status_code == 400 and "takes no secret" in extra.content.decode()
    generic = client.post(
        reverse("webhook_new"), {**base, "scheme": "hmac_sha256", "secret_env": "UPSTREAM_SECRET_X"}
    )
    assert generic.status_code == 400  # the generic scheme needs its header name
    forbidden = client.post(
        reverse("webhook_new"), {**base, "scheme": "github", "secret_env": "SECRET_KEY"}
    )
    assert forbidden.status_code == 400
    assert not WebhookEndpoint.objects.exists()


def test_viewers_see_the_list_without_receiving_urls(client, viewer, integration):
    endpoint = WebhookEndpoint.objects.create(integration=integration, scheme="none")
    client.force_login(viewer)
    html = client.get(reverse("webhooks")).content.decode()
    assert "No webhook endpoints yet" not in html
    assert endpoint.token not in html
    assert client.post(reverse("webhook_toggle", args=[endpoint.pk])).status_code == 403


def test_an_admin_switches_an_endpoint_off(client, admin_user, integration):
    endpoint = WebhookEndpoint.objects.create(integration=integration, scheme="none")
    client.force_login(admin_user)
    assert endpoint.token in client.get(reverse("webhooks")).content.decode()
    client.post(reverse("webhook_toggle", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert endpoint.active is False


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_add_endpoints(client, request, role):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("webhook_new")).status_code == 403
