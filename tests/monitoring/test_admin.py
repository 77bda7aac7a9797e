"""The admin: configuration is audited, records are read-only, even for superusers."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring import audit
from monitoring.models import AuditLog, Integration, RequestLog


@pytest.fixture
def audit_row(db):
    return audit.record("test.event", actor="system", target_repr="x")


def test_audit_log_is_read_only_for_a_superuser(client, superuser, audit_row):
    client.force_login(superuser)
    changelist = reverse("admin:monitoring_auditlog_changelist")
    assert client.get(changelist).status_code == 200
    assert client.get(reverse("admin:monitoring_auditlog_add")).status_code == 403
    change = reverse("admin:monitoring_auditlog_change", args=[audit_row.pk])
    response = client.get(change)
    assert response.status_code == 200  # a view-only page
    assert b'name="_save"' not in response.content
    posted = client.post(change, {"actor": "mallory"})
    assert posted.status_code == 403
    delete = reverse("admin:monitoring_auditlog_delete", args=[audit_row.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = client.post(
        changelist, {"action": "delete_selected", "_selected_action": [audit_row.pk], "post": "yes"}
    )
    assert bulk.status_code in {200, 302}
    assert AuditLog.objects.filter(pk=audit_row.pk, actor="system").exists()


def test_request_log_admin_is_read_only_and_filterable(client, superuser, integration):
    RequestLog.objects.create(
        integration=integration, method="GET", host="api.paubox.net", path="/v1/x",
        status=401, outcome="client_error", latency_ms=12.5,
    )  # fmt: skip
    client.force_login(superuser)
    url = reverse("admin:monitoring_requestlog_changelist")
    response = client.get(url, {"outcome__exact": "client_error", "source__exact": "client"})
    assert response.status_code == 200
    assert b"/v1/x" in response.content
    assert client.get(reverse("admin:monitoring_requestlog_add")).status_code == 403


def test_creating_editing_and_deleting_an_integration_in_the_admin_is_audited(client, superuser):
    client.force_login(superuser)
    form = {
        "name": "Stripe", "slug": "stripe", "environment": "production",
        "base_url": "https://api.stripe.com", "owner_email": "", "expected_api_version": "",
        "require_https": "on", "path_templates": "", "redact_names": "", "active": "on",
        "created_0": "2026-11-01", "created_1": "10:00:00",
    }  # fmt: skip
    response = client.post(reverse("admin:monitoring_integration_add"), form)
    assert response.status_code == 302, response.content[:2000]
    stripe = Integration.objects.get(slug="stripe")
    form["owner_email"] = "payments@example.com"
    client.post(reverse("admin:monitoring_integration_change", args=[stripe.pk]), form)
    client.post(reverse("admin:monitoring_integration_delete", args=[stripe.pk]), {"post": "yes"})
    rows = list(AuditLog.objects.order_by("seq").filter(target_type="monitoring.Integration"))
    assert [r.action for r in rows] == ["create", "update", "delete"]
    assert rows[1].before == {"owner_email": ""}
    assert rows[1].after == {"owner_email": "payments@example.com"}
    assert all(r.actor == "root" for r in rows)
    assert audit.verify_chain().ok


def test_editing_a_probe_in_the_admin_never_overwrites_its_run_state(
    client, superuser, integration
):
    from monitoring.models import Probe

    probe = Probe.objects.create(
        integration=integration, name="Health", url="https://93.184.216.34/h"
    )
    client.force_login(superuser)
    change = reverse("admin:monitoring_probe_change", args=[probe.pk])
    page = client.get(change)
    form = {k: v for k, v in page.context["adminform"].form.initial.items() if v is not None}
    # The dispatcher records a run while the admin's form is open.
    Probe.objects.filter(pk=probe.pk).update(state="down", consecutive_failures=3)
    form.update(
        {"integration": integration.pk, "name": "Health check", "headers": "{}", "assertions": "{}"}
    )
    form.pop("created", None)
    form.update({"created_0": "2026-11-01", "created_1": "10:00:00"})
    response = client.post(change, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    probe.refresh_from_db()
    assert probe.name == "Health check"
    assert (probe.state, probe.consecutive_failures) == ("down", 3)
    row = AuditLog.objects.get(action="update", target_type="monitoring.Probe")
    assert row.after["name"] == "Health check"
    assert "state" not in row.after and "consecutive_failures" not in row.after


def test_an_admin_role_user_without_the_staff_flag_configures_through_the_admin(client, db):
    from django.contrib.auth.models import Group, User

    ada = User.objects.create_user("ada2", password="x-long-enough-password")
    ada.groups.add(Group.objects.get(name="Admin"))
    client.force_login(ada)
    assert client.get(reverse("admin:monitoring_auditlog_changelist")).status_code == 200
    assert client.get(reverse("admin:monitoring_integration_add")).status_code == 200
    # Records stay read-only for the Admin role too.
    assert client.get(reverse("admin:monitoring_auditlog_add")).status_code == 403


def test_operators_and_viewers_are_kept_out_of_the_admin(client, operator, viewer):
    for user in (operator, viewer):
        client.force_login(user)
        response = client.get(reverse("admin:monitoring_auditlog_changelist"))
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]
