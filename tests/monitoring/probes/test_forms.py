"""The probe form and the admin: each configuration mistake explained, changes audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring import recorder
from monitoring.models import AuditLog, Probe, ProbeResult, ProbeState
from monitoring.probes.forms import ProbeForm

# Runs that reach the database also go to the recorder, whose writer has its own connection.
runs_in_db = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _recorder_flushed():
    yield
    recorder.flush(timeout=10)


def form_data(integration, **changes):
    data = {
        "integration": integration.pk, "name": "Health", "method": "get",
        "url": "https://93.184.215.14/health", "headers": "{}", "body": "", "interval_s": 60,
        "timeout_s": 10, "assertions": '{"status": "2xx"}', "fail_threshold": 2,
        "recover_threshold": 2, "enabled": "on",
    }  # fmt: skip
    data.update(changes)
    return data


def test_the_form_accepts_a_public_url_and_normalises_the_assertions(integration):
    form = ProbeForm(form_data(integration, assertions='{"status": 200, "tls_min_days": 7}'))
    assert form.is_valid(), form.errors
    assert form.cleaned_data["method"] == "GET"
    assert form.cleaned_data["assertions"] == {"status": "200", "tls_min_days": 7}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"url": "http://127.0.0.1:9/"}, "url", "loopback"),
        ({"url": "http://localhost/"}, "url", "resolves to"),
        ({"url": "http://169.254.169.254/latest/"}, "url", "metadata"),
        ({"url": "http://10.1.2.3/"}, "url", "private"),
        ({"assertions": '{"status": "2xx", "latency_failed_ms": -1}'}, "assertions", "above 0"),
        ({"assertions": '{"json_path": ["$.a =="]}'}, "assertions", "json_path[0]"),
        ({"assertions": '{"colour": "red"}'}, "assertions", "not a known assertion"),
        ({"assertions": '{"https_only": true}', "url": "http://93.184.215.14/"}, "url", "https"),
        ({"headers": '{"Authorization": "Bearer sk_live_x"}'}, "headers", "${VAR_NAME}"),
        ({"headers": '{"Host": "evil"}'}, "headers", "probe runner"),
        ({"headers": "[1, 2]"}, "headers", "JSON object"),
        ({"timeout_s": 45, "interval_s": 60}, "timeout_s", "At most 30"),
        ({"timeout_s": 20, "interval_s": 30}, "timeout_s", None),
        ({"timeout_s": 20, "interval_s": 10}, "interval_s", "30"),
        ({"method": "TRACE"}, "method", "GET"),
    ],
)
def test_the_form_explains_what_is_wrong(integration, changes, field, words):
    form = ProbeForm(form_data(integration, **changes))
    if words is None:
        assert form.is_valid(), form.errors
        return
    assert not form.is_valid()
    assert words in " ".join(form.errors.get(field, [])), form.errors


def test_an_allowlisted_loopback_host_passes_the_form(integration, allowed, target):
    form = ProbeForm(form_data(integration, url=f"{target.url}/json"))
    assert form.is_valid(), form.errors


def test_the_admin_refuses_an_internal_url_with_a_form_error(client, superuser, integration):
    client.force_login(superuser)
    data = form_data(integration, url="http://169.254.169.254/latest/meta-data/")
    response = client.post(reverse("admin:monitoring_probe_add"), data)
    assert response.status_code == 200
    assert b"cloud metadata" in response.content
    assert not Probe.objects.exists()


@runs_in_db
def test_admin_changes_are_audited_and_run_now_records_a_result(
    client, superuser, integration, target, allowed
):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:monitoring_probe_add"), form_data(integration, url=f"{target.url}/json")
    )
    assert response.status_code == 302
    probe = Probe.objects.get()
    assert AuditLog.objects.filter(action="create", target_id=str(probe.pk)).exists()

    changelist = reverse("admin:monitoring_probe_changelist")
    response = client.post(
        changelist, {"action": "run_selected_now", "_selected_action": [probe.pk]}, follow=True
    )
    assert response.status_code == 200
    assert b"Health: ok" in response.content
    result = ProbeResult.objects.get(probe=probe)
    assert result.ok and result.status == 200 and result.scheduled_for is None
    assert AuditLog.objects.filter(action="probe.run_now", target_id=str(probe.pk)).exists()
    probe.refresh_from_db()
    assert probe.state == ProbeState.UP
