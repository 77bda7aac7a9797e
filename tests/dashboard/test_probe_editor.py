"""The probe editor: structured assertions and steps, a test run through the real runner
against a loopback server, the probe form's validation, audit and access."""

from __future__ import annotations

import pytest
from django.urls import reverse

from dashboard.probe_form import ProbeEditorForm, initial_from
from monitoring.models import AuditLog, Probe, ProbeResult, RequestLog
from tests.monitoring.probes.probe_server import ProbeTarget


@pytest.fixture
def target(settings):
    with ProbeTarget() as server:
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [server.hostport]}
        yield server


def fields(integration, url: str, **extra) -> dict:
    data = {
        "integration": integration.pk,
        "name": "status json",
        "kind": "http",
        "method": "GET",
        "url": url,
        "interval_s": 60,
        "timeout_s": 5,
        "fail_threshold": 2,
        "recover_threshold": 2,
        "enabled": "on",
        "status": "200",
        "jp0_path": "$.status",
        "jp0_op": "==",
        "jp0_value": "ok",
    }
    data.update(extra)
    return data


def test_an_admin_builds_a_probe_with_two_assertions_and_it_is_saved_and_audited(
    client, admin_user, integration, target
):
    client.force_login(admin_user)
    response = client.post(
        reverse("probe_new"), fields(integration, f"{target.url}/json", latency_failed_ms=2000)
    )
    probe = Probe.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("probe", args=[probe.pk])
    assert probe.assertions["status"] == "200"
    assert probe.assertions["json_path"] == ['$.status == "ok"']
    assert probe.assertions["latency_failed_ms"] == 2000
    assert AuditLog.objects.filter(action="create", target_id=str(probe.pk)).exists()


def test_a_test_run_calls_the_provider_once_and_saves_and_records_nothing(
    client, admin_user, integration, target
):
    client.force_login(admin_user)
    data = fields(integration, f"{target.url}/json", action="test")
    response = client.post(reverse("probe_new"), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Test run:" in html and "passed" in html
    assert target.paths() == ["/json"]
    assert not Probe.objects.exists()
    assert not ProbeResult.objects.exists() and not RequestLog.objects.exists()


def test_a_failing_assertion_shows_in_the_test_run_as_an_htmx_fragment(
    client, admin_user, integration, target
):
    client.force_login(admin_user)
    data = fields(integration, f"{target.url}/json", action="test", jp0_value="down")
    response = client.post(reverse("probe_new"), data, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.startswith('<div id="probe-test"')
    assert "failed" in html and "$.status" in html


def test_the_ssrf_guard_refuses_a_private_address_for_saving_and_for_test_runs(
    client, admin_user, integration
):
    client.force_login(admin_user)
    for action in ("save", "test"):
        response = client.post(
            reverse("probe_new"), fields(integration, "http://10.1.2.3/admin", action=action)
        )
        assert response.status_code == 400
        assert "Probes may not call this address" in response.content.decode()
    assert not Probe.objects.exists()


def test_a_literal_secret_in_a_header_is_refused_with_the_probe_forms_message(
    client, admin_user, integration, target
):
    client.force_login(admin_user)
    data = fields(integration, f"{target.url}/json", headers="Authorization: Bearer sk_live_1")
    response = client.post(reverse("probe_new"), data)
    assert response.status_code == 400
    assert "UPSTREAM_SECRET" in response.content.decode()
    assert "sk_live_1" not in "".join(str(v) for v in Probe.objects.values_list("headers"))


def test_a_sign_in_flow_is_built_from_step_rows(client, admin_user, integration, target):
    client.force_login(admin_user)
    data = fields(
        integration,
        f"{target.url}/json",
        step0_name="sign in",
        step0_method="POST",
        step0_path="/json",
        step0_body='{"username": "${UPSTREAM_SECRET_OP_USER}"}',
        step0_extract="state = $.items[0].state",
        step1_name="use it",
        step1_path="/text?s={{state}}",
        step1_status="200",
    )
    client.post(reverse("probe_new"), data)
    steps = Probe.objects.get().steps
    assert [s["name"] for s in steps] == ["sign in", "use it"]
    assert steps[0]["extract"] == {"state": "$.items[0].state"}
    assert steps[1]["assertions"]["status"] == "200"


def test_a_step_using_a_variable_nobody_extracts_is_refused(
    client, admin_user, integration, target
):
    client.force_login(admin_user)
    data = fields(integration, f"{target.url}/json", step0_path="/text?t={{token}}")
    response = client.post(reverse("probe_new"), data)
    assert response.status_code == 400
    assert "is not extracted by an earlier step" in response.content.decode()


def test_editing_shows_the_stored_probe_and_saving_it_unchanged_keeps_it(
    client, admin_user, integration, target
):
    probe = Probe.objects.create(
        integration=integration,
        name="deep",
        url=f"{target.url}/json",
        assertions={"status": "200-299", "json_path": ["$.count >= 3", "$.items exists"],
                    "header": {"name": "X-Version", "regex": "^2\\."}},
        steps=[{"name": "one", "method": "GET", "path": "/json", "extract": {"n": "$.count"}}],
    )  # fmt: skip
    client.force_login(admin_user)
    page = client.get(reverse("probe_edit", args=[probe.pk])).content.decode()
    assert 'value="$.count"' in page and 'value="X-Version"' in page
    form = ProbeEditorForm(instance=probe)
    data = {k: v for k, v in initial_from(probe).items() if v not in (None, "", False)}
    data["enabled"] = "on"
    response = client.post(reverse("probe_edit", args=[probe.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    probe.refresh_from_db()
    assert probe.assertions["json_path"] == ["$.count >= 3", "$.items"]
    assert probe.assertions["header"] == {"name": "X-Version", "regex": "^2\\."}
    assert probe.steps[0]["extract"] == {"n": "$.count"}
    assert form.jp_rows >= 3


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_edit_probes(client, request, role, probe):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("probe_new")).status_code == 403
    assert client.get(reverse("probe_edit", args=[probe.pk])).status_code == 403


def test_anonymous_visitors_are_sent_to_sign_in(client, probe):
    response = client.get(reverse("probe_edit", args=[probe.pk]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
