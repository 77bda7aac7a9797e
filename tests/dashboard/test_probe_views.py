"""Probes: the list with states, one probe's history, and "run now" against a real server."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import recorder
from monitoring.models import AuditLog, ProbeFlip, ProbeResult, ProbeState
from tests.monitoring.probes.probe_server import ProbeTarget


@pytest.fixture
def target(settings):
    with ProbeTarget() as server:
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [server.hostport]}
        yield server


def test_the_list_shows_each_probes_state_and_last_result(client, viewer, probe):
    probe.state, probe.last_run_at, probe.last_ok = ProbeState.DOWN, timezone.now(), False
    probe.last_reason, probe.last_message = "status", "Expected 2xx, got 503"
    probe.save()
    client.force_login(viewer)
    body = client.get(reverse("probes")).content.decode()
    assert 'class="state s-down">Down' in body
    assert "Unexpected status" in body and "Expected 2xx, got 503" in body
    assert "Run now" not in body  # viewers watch; operators act


def test_the_probe_page_shows_history_flips_and_a_latency_chart(client, viewer, probe):
    now = timezone.now()
    for n in range(3):
        failed = n == 1
        ProbeResult.objects.create(
            probe=probe,
            created=now - dt.timedelta(minutes=n),
            ok=not failed,
            status=503 if failed else 200,
            latency_ms=100 + n,
            reason="status" if failed else "",
        )
    ProbeFlip.objects.create(probe=probe, from_state="up", to_state="down", reason="status")
    client.force_login(viewer)
    body = client.get(reverse("probe", args=[probe.pk])).content.decode()
    assert body.count('class="status o-ok">Passed') == 2
    assert "Unexpected status" in body
    assert 'id="data-probe-latency"' in body
    assert "last 3 runs" in body


@pytest.mark.django_db(transaction=True)
def test_an_operator_runs_a_probe_now_and_sees_the_result(client, operator, integration, target):
    probe = integration.probes.create(name="Health", url=target.url + "/status/200", timeout_s=5)
    client.force_login(operator)
    response = client.post(reverse("probe_run", args=[probe.pk]), HTTP_HX_REQUEST="true")
    recorder.flush(timeout=10)
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith(f'<tr id="probe-{probe.pk}">')
    assert "Passed" in text and "Ran just now." in text
    assert [r[1] for r in target.requests] == ["/status/200"]
    assert ProbeResult.objects.filter(probe=probe, ok=True).count() == 1
    assert AuditLog.objects.filter(action="probe.run_now", target_id=str(probe.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failing_run_shows_why(client, operator, integration, target):
    probe = integration.probes.create(name="Health", url=target.url + "/status/503", timeout_s=5)
    client.force_login(operator)
    response = client.post(reverse("probe_run", args=[probe.pk]))
    recorder.flush(timeout=10)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Unexpected status" in page
