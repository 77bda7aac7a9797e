"""The configuration page: export, a dry run's diff, applying, bad input; Admins only."""

from __future__ import annotations

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from monitoring.models import AuditLog, Channel, Integration


def test_export_downloads_the_yaml(client, admin_user, integration):
    client.force_login(admin_user)
    response = client.get(reverse("configuration_export"))
    assert response["Content-Disposition"].startswith('attachment; filename="upstream-')
    doc = yaml.safe_load(response.content)
    assert doc["integrations"][0]["slug"] == integration.slug


def test_a_dry_run_shows_the_diff_and_apply_writes_it_audited(client, admin_user):
    client.force_login(admin_user)
    text = yaml.safe_dump(
        {"integrations": [{"slug": "stripe", "environment": "production", "name": "Stripe"}]}
    )
    dry = client.post(reverse("configuration"), {"text": text, "action": "dry_run"})
    assert "+ integration stripe/production" in dry.content.decode()
    assert not Integration.objects.exists()
    upload = SimpleUploadedFile("upstream.yaml", text.encode(), content_type="application/yaml")
    client.post(reverse("configuration"), {"upload": upload, "action": "apply"})
    assert Integration.objects.get().slug == "stripe"
    assert AuditLog.objects.filter(action="create", actor=admin_user.username).exists()
    again = client.post(reverse("configuration"), {"text": text, "action": "dry_run"})
    assert "No changes" in again.content.decode()


def test_a_bad_document_lists_its_errors_with_400_and_changes_nothing(client, admin_user):
    client.force_login(admin_user)
    bad = "channels:\n- {name: ops, kind: slack, settings: {url: 'https://hooks.slack.com/x'}}\n"
    response = client.post(reverse("configuration"), {"text": bad, "action": "apply"})
    assert response.status_code == 400
    assert "url carries a credential" in response.content.decode()
    assert not Channel.objects.exists()
    empty = client.post(reverse("configuration"), {"text": " ", "action": "apply"})
    assert empty.status_code == 400
    broken = client.post(reverse("configuration"), {"text": "a: [", "action": "dry_run"})
    assert broken.status_code == 400


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_see_the_configuration(client, request, role):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("configuration")).status_code == 403
    assert client.get(reverse("configuration_export")).status_code == 403
