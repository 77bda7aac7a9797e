"""Status-page probes against a loopback fake of Atlassian Statuspage: incidents as a signal."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from monitoring import recorder
from monitoring.alerts import lifecycle
from monitoring.models import Alert, AlertRule, Probe, ProbeKind, RequestLog, RuleKind
from monitoring.probes import schedule
from monitoring.probes.statuspage import page_root, parse_incidents

QUIET = {
    "page": {"id": "x"},
    "status": {"indicator": "none", "description": "All Systems Operational"},
}
MAJOR = {"page": {"id": "x"}, "status": {"indicator": "major", "description": "Partial outage"}}
INCIDENT = {
    "id": "p1",
    "name": "Elevated API error rates",
    "status": "investigating",
    "impact": "major",
    "created_at": "2026-11-02T08:55:00.000Z",
    "shortlink": "https://stspg.io/abc123",
}


class FakeStatusPage:
    def __init__(self) -> None:
        self.status = QUIET
        self.incidents: list[dict] = []
        self.broken = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if fake.broken:
                    status, payload = 503, {"error": "maintenance"}
                elif self.path == "/api/v2/status.json":
                    status, payload = 200, fake.status
                elif self.path == "/api/v2/incidents/unresolved.json":
                    status, payload = 200, {"page": {"id": "x"}, "incidents": fake.incidents}
                else:
                    status, payload = 404, {"error": "not found"}
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.hostport = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def page(settings):
    fake = FakeStatusPage()
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [fake.hostport]}
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def probe(integration, page):
    return Probe.objects.create(
        integration=integration, name="Status page", kind=ProbeKind.STATUSPAGE, url=page.url
    )


def run(probe: Probe):
    (result,), _ = schedule.run_now([Probe.objects.get(pk=probe.pk)])
    return result, Probe.objects.get(pk=probe.pk)


@pytest.mark.django_db(transaction=True)
def test_a_quiet_page_is_up_and_never_enters_the_request_log(probe, page):
    result, stored = run(probe)
    assert result.ok and not result.degraded, result.message
    assert result.message == "All Systems Operational"
    assert stored.state == "up" and stored.incident_name == ""
    recorder.flush(timeout=10)
    assert not RequestLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_open_incident_is_kept_on_the_probe_until_it_resolves(probe, page):
    page.status, page.incidents = MAJOR, [INCIDENT]
    result, stored = run(probe)
    assert result.ok and result.degraded
    assert result.message == "provider reports an incident: Elevated API error rates"
    assert (stored.state, stored.incident_name, stored.incident_url) == (
        "degraded", "Elevated API error rates", "https://stspg.io/abc123",
    )  # fmt: skip
    since = stored.incident_since
    assert since is not None
    _, stored = run(probe)
    assert stored.incident_since == since
    page.broken = True  # an unreadable page neither opens nor closes an incident
    result, stored = run(probe)
    assert not result.ok and "status page unreadable" in result.message
    assert stored.incident_name == "Elevated API error rates"
    page.broken, page.status, page.incidents = False, QUIET, []
    _, stored = run(probe)
    assert (stored.incident_name, stored.incident_since) == ("", None)


@pytest.mark.django_db(transaction=True)
def test_the_integration_page_says_the_provider_reports_an_incident(probe, page, client, viewer):
    page.incidents = [INCIDENT]
    run(probe)
    client.force_login(viewer)
    html = client.get(reverse("integration", args=[probe.integration_id])).content.decode()
    assert "Provider reports an incident" in html
    assert "Elevated API error rates" in html
    assert 'href="https://stspg.io/abc123"' in html
    overview = client.get(reverse("overview")).content.decode()
    assert "Provider reports an incident" in overview


@pytest.mark.django_db(transaction=True)
def test_the_incident_rule_fires_and_resolves_with_the_page(probe, page):
    AlertRule.objects.create(name="Incident", kind=RuleKind.PROVIDER_INCIDENT)
    page.incidents = [INCIDENT]
    run(probe)
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert "provider reports an incident: Elevated API error rates" in alert.title
    page.incidents = []
    run(probe)
    lifecycle.evaluate()
    alert.refresh_from_db()
    assert alert.clear_since is not None  # clear: it resolves after the recovery period


@pytest.mark.django_db(transaction=True)
def test_a_page_that_is_not_statuspage_json_fails(integration, page):
    probe = Probe.objects.create(
        integration=integration, name="Wrong", kind=ProbeKind.STATUSPAGE, url=page.url
    )
    page.status, page.incidents = {"hello": "world"}, "nope"
    result, _ = run(probe)
    assert not result.ok
    assert "not an Atlassian Statuspage" in result.message


def test_parsing_keeps_unresolved_incidents_newest_first_and_safe_links():
    doc = {
        "incidents": [
            {**INCIDENT, "name": "Old", "created_at": "2026-11-01T00:00:00Z"},
            {**INCIDENT, "name": "Done", "status": "resolved"},
            {**INCIDENT, "name": "  New\nthing ", "shortlink": "javascript:alert(1)"},
            "junk",
        ]
    }
    found = parse_incidents(doc)
    assert [(name, link) for name, link, _ in found] == [
        ("New thing", ""), ("Old", "https://stspg.io/abc123"),
    ]  # fmt: skip
    assert parse_incidents({"incidents": "nope"}) == []
    assert page_root("https://status.paubox.com/api/v2/status.json") == "https://status.paubox.com"
