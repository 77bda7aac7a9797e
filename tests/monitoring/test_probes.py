"""Probe runs against a real loopback server: assertions, failures, SSRF guard, state, secrets."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.urls import reverse

from monitoring import probes, recorder
from monitoring.forms import ProbeForm
from monitoring.models import (
    AuditLog,
    Integration,
    Probe,
    ProbeFlip,
    ProbeResult,
    ProbeState,
    RequestLog,
)
from monitoring.probes import ProbeSpec, RunResult, execute, make_client, next_state
from tests.monitoring.probe_server import ProbeTarget

SECRET = "sk_live_probe_secret_value_9f8e7d"
# Runs that reach the database also go to the recorder, whose writer has its own connection.
runs_in_db = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _recorder_flushed():
    yield
    recorder.flush(timeout=10)


def run(url: str, allowed: list[str], **spec) -> RunResult:
    fields = {
        "probe_id": 1, "integration_id": 1, "method": "GET", "url": url, "headers": {},
        "body": "", "timeout_s": 5.0, "assertions": {},
    }  # fmt: skip
    fields.update(spec)

    async def go() -> RunResult:
        async with make_client() as client:
            return await execute(ProbeSpec(**fields), client, allowed=allowed)

    return asyncio.run(go())


# --- assertions, each passing and failing ---------------------------------------------------

CASES = [
    ("/json", {"status": "200"}, True, ""),
    ("/status/503", {"status": "2xx"}, False, "status"),
    ("/status/404", {"status": "400-499"}, True, ""),
    ("/text", {"body_contains": "upstream"}, True, ""),
    ("/text", {"body_contains": "downstream"}, False, "body"),
    ("/text", {"body_regex": r"hello \w+ world"}, True, ""),
    ("/text", {"body_regex": r"^goodbye"}, False, "body"),
    ("/json", {"json_path": ['$.status == "ok"', "$.items[0].id exists"]}, True, ""),
    ("/json", {"json_path": ['$.status == "down"']}, False, "json_path"),
    ("/json", {"json_path": ["$.missing exists"]}, False, "json_path"),
    ("/json", {"header": {"name": "X-Version"}}, True, ""),
    ("/json", {"header": {"name": "X-Missing"}}, False, "header"),
    ("/json", {"header": {"name": "x-version", "regex": r"^2\."}}, True, ""),
    ("/json", {"header": {"name": "X-Version", "regex": r"^3\."}}, False, "header"),
    ("/json", {"https_only": True}, False, "https"),
    ("/json", {"latency_failed_ms": 20_000}, True, ""),
    ("/sleep?ms=250", {"latency_failed_ms": 100}, False, "latency"),
]


@pytest.mark.parametrize(("path", "assertions", "ok", "reason"), CASES)
def test_each_assertion_kind_passes_and_fails(target, allowed, path, assertions, ok, reason):
    result = run(target.url + path, allowed, assertions=assertions)
    assert (result.ok, result.reason) == (ok, reason), result.message
    assert result.status is not None
    assert result.outcome in {"ok", "client_error", "server_error"}


def test_latency_above_the_degraded_threshold_is_ok_but_degraded(target, allowed):
    result = run(
        target.url + "/sleep?ms=250",
        allowed,
        assertions={"latency_degraded_ms": 100, "latency_failed_ms": 20_000},
    )
    assert result.ok and result.degraded
    assert result.latency_ms >= 250
    assert "degraded" in result.message


def test_a_slow_server_times_out(target, allowed):
    result = run(target.url + "/sleep?ms=3000", allowed, timeout_s=0.3)
    assert (result.ok, result.reason, result.outcome) == (False, "timeout", "timeout")
    assert "0.3 s" in result.message


def test_a_reset_connection_is_a_connect_failure(target, allowed):
    result = run(target.url + "/reset", allowed)
    assert (result.ok, result.reason) == (False, "connect")
    assert result.outcome in {"read_error", "protocol_error"}
    assert result.status is None


def test_a_refused_connection_is_a_connect_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(f"http://127.0.0.1:{port}/", [f"127.0.0.1:{port}"])
    assert (result.reason, result.outcome) == ("connect", "connect_error")


def test_redirects_are_followed_and_post_becomes_get_after_303(target, allowed):
    result = run(
        target.url + "/redirect?code=303&to=/json", allowed, method="POST", body='{"a": 1}'
    )
    assert result.ok, result.message
    assert result.url == target.url + "/json"
    assert [(m, p) for m, p, _, _ in target.requests] == [
        ("POST", "/redirect?code=303&to=/json"),
        ("GET", "/json"),
    ]


def test_a_redirect_loop_stops_after_five_hops(target, allowed):
    result = run(target.url + "/loop", allowed)
    assert (result.ok, result.reason) == (False, "error")
    assert "more than 5 redirects" in result.message
    assert len(target.paths()) == 6


# --- SSRF guard --------------------------------------------------------------------------------


def test_loopback_is_refused_unless_allowlisted(target):
    result = run(target.url + "/json", allowed=[])
    assert (result.reason, result.outcome) == ("blocked", "blocked")
    assert "loopback" in result.message
    assert target.requests == []


def test_a_hostname_resolving_to_a_private_address_is_refused(target):
    result = run(f"http://localhost:{target.port}/json", allowed=[target.hostport])
    assert result.reason == "blocked"
    assert "resolves to" in result.message
    assert target.requests == []


def test_the_cloud_metadata_address_is_refused_without_a_connection():
    result = run("http://169.254.169.254/latest/meta-data/", allowed=[])
    assert result.reason == "blocked"
    assert "metadata" in result.message


def test_a_redirect_to_127_0_0_1_is_refused(target, allowed):
    with ProbeTarget() as inner:
        for to in (f"http://127.0.0.1:{inner.port}/json", f"http://localhost:{inner.port}/"):
            result = run(f"{target.url}/redirect?to={quote(to, safe='')}", allowed)
            assert result.reason == "blocked", result.message
        assert inner.requests == []


def test_a_cross_origin_redirect_drops_headers_from_the_environment(target, monkeypatch):
    monkeypatch.setenv("PROBE_TEST_KEY", SECRET)
    headers = {"Authorization": "Bearer ${PROBE_TEST_KEY}", "X-Plain": "visible"}
    with ProbeTarget() as other:
        allowed = [target.hostport, other.hostport]
        to = quote(f"{other.url}/headers", safe="")
        result = run(f"{target.url}/redirect?to={to}", allowed, headers=headers)
        assert result.ok, result.message
        received = other.requests[0][2]
    assert target.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    assert "Authorization" not in received
    assert received["X-Plain"] == "visible"


# --- secrets ---------------------------------------------------------------------------------


def test_header_references_are_resolved_only_when_sent(target, allowed, monkeypatch):
    monkeypatch.setenv("PROBE_TEST_KEY", SECRET)
    headers = {"Authorization": "Bearer ${PROBE_TEST_KEY}"}
    result = run(target.url + "/headers", allowed, headers=headers)
    assert result.ok
    assert target.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in result.message


def test_an_unset_variable_fails_the_run_without_a_request(target, allowed, monkeypatch):
    monkeypatch.delenv("PROBE_TEST_KEY", raising=False)
    result = run(target.url + "/json", allowed, headers={"X-Key": "${PROBE_TEST_KEY}"})
    assert (result.ok, result.reason) == (False, "error")
    assert "PROBE_TEST_KEY" in result.message
    assert target.requests == []


@pytest.fixture
def probe(integration, target, allowed):
    return Probe.objects.create(
        integration=integration, name="Flaky", url=f"{target.url}/flaky", timeout_s=5
    )


@runs_in_db
def test_secrets_never_reach_the_database(client, superuser, target, allowed, monkeypatch):
    monkeypatch.setenv("PROBE_TEST_KEY", SECRET)
    client.force_login(superuser)
    integration = Integration.objects.create(name="Acme", slug="acme")
    form = {
        "integration": integration.pk, "name": "Secret echo", "method": "GET",
        "url": f"{target.url}/headers",
        "headers": '{"Authorization": "Bearer ${PROBE_TEST_KEY}"}', "body": "",
        "interval_s": 60, "timeout_s": 5, "assertions": '{"body_contains": "Bearer"}',
        "fail_threshold": 2, "recover_threshold": 2, "enabled": "on",
    }  # fmt: skip
    response = client.post(reverse("admin:monitoring_probe_add"), form)
    assert response.status_code == 302, response.content[-3000:]
    probe = Probe.objects.get(name="Secret echo")
    results, _ = probes.run_now([probe])
    assert results[0].ok, results[0].message
    assert target.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    recorder.flush(timeout=10)
    logged = RequestLog.objects.get(source="probe", integration=integration)
    assert (logged.status, logged.path, logged.outcome) == (200, "/headers", "ok")

    page = client.get(reverse("admin:monitoring_probe_change", args=[probe.pk]))
    changelist = client.get(reverse("admin:monitoring_probe_changelist"))
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    for text in (dump.getvalue(), page.content.decode(), changelist.content.decode()):
        assert SECRET not in text
    assert "${PROBE_TEST_KEY}" in page.content.decode()
    assert "sha256" in page.content.decode()


# --- state and hysteresis ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "failures", "successes", "ok", "degraded", "expected"),
    [
        ("unknown", 0, 0, True, False, ("up", 0, 1)),
        ("unknown", 0, 0, False, False, ("unknown", 1, 0)),
        ("up", 0, 5, False, False, ("up", 1, 0)),
        ("up", 1, 0, False, False, ("down", 2, 0)),
        ("down", 4, 0, True, False, ("down", 0, 1)),
        ("down", 0, 1, True, False, ("up", 0, 2)),
        ("down", 0, 1, True, True, ("degraded", 0, 2)),
        ("up", 0, 3, True, True, ("degraded", 0, 4)),
        ("degraded", 0, 3, True, False, ("up", 0, 4)),
    ],
)
def test_state_follows_hysteresis(state, failures, successes, ok, degraded, expected):
    got = next_state(
        state, failures, successes, ok=ok, degraded=degraded, fail_threshold=2, recover_threshold=2
    )
    assert got == expected


@runs_in_db
def test_down_after_two_failures_and_up_after_two_successes(probe, target):
    seen = []
    for status in (500, 500, 200, 200):
        target.flaky_status = status
        (result,), _ = probes.run_now([probe])
        probe.refresh_from_db()
        seen.append((result.ok, probe.state))
    assert seen == [
        (False, ProbeState.UNKNOWN),
        (False, ProbeState.DOWN),
        (True, ProbeState.DOWN),
        (True, ProbeState.UP),
    ]
    flips = list(ProbeFlip.objects.filter(probe=probe).order_by("created", "id"))
    assert [(f.from_state, f.to_state) for f in flips] == [("unknown", "down"), ("down", "up")]
    assert flips[0].reason == "status"
    assert probe.state_changed_at == flips[1].created
    assert ProbeResult.objects.filter(probe=probe).count() == 4
    assert probe.claimed_until is None
    assert probe.last_ok is True and probe.last_message.startswith("200 in")


# --- the form and the admin ----------------------------------------------------------------


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


@pytest.mark.django_db
def test_run_now_skips_a_probe_another_runner_holds(probe):
    from datetime import timedelta

    from django.utils import timezone

    Probe.objects.filter(pk=probe.pk).update(claimed_until=timezone.now() + timedelta(seconds=30))
    results, busy = probes.run_now([probe])
    assert results == [] and busy == [probe]
    assert not ProbeResult.objects.exists()


# --- demo ------------------------------------------------------------------------------------


@runs_in_db
def test_demo_probes_run_green_against_the_sandbox_and_setup_is_idempotent(settings):
    from monitoring.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(seed=3, latency_scale=0.0, error_rate=0.0)) as sandbox:
        host = sandbox.url.removeprefix("http://")
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [host]}
        created = probes.setup_demo_probes(sandbox.url)
        again = probes.setup_demo_probes(sandbox.url)
        assert [p.pk for p in again] == [p.pk for p in created]
        assert {p.integration.slug for p in created} == {"paubox", "stripe", "sandbox-crm"}
        stats = probes.Dispatcher(tick_s=0.05).run(once=True)
    assert stats.runs == len(created) == 4
    states = dict(Probe.objects.values_list("name", "state").distinct())
    assert states == {"Health": ProbeState.UP, "Latency budget": ProbeState.UP}
    for probe in created:  # the demo's own configuration passes the form's checks
        data = {
            **ProbeForm(instance=probe).initial,
            "headers": json.dumps(probe.headers),
            "assertions": json.dumps(probe.assertions),
        }
        form = ProbeForm(data, instance=probe)
        assert form.is_valid(), form.errors


def test_a_secret_echoed_back_by_the_server_is_scrubbed_from_messages(target, allowed, monkeypatch):
    monkeypatch.setenv("PROBE_TEST_KEY", SECRET)
    result = run(
        target.url + "/headers",
        allowed,
        headers={"Authorization": "Bearer ${PROBE_TEST_KEY}"},
        assertions={"json_path": ['$.Authorization == "nope"']},
    )
    assert (result.ok, result.reason) == (False, "json_path")
    assert SECRET not in result.message
    assert "Bearer [secret]" in result.message


def test_a_variable_holding_a_line_break_is_refused_without_showing_it(
    target, allowed, monkeypatch
):
    monkeypatch.setenv("PROBE_TEST_KEY", SECRET + "\r\nX-Injected: 1")
    result = run(target.url + "/json", allowed, headers={"X-Key": "${PROBE_TEST_KEY}"})
    assert (result.ok, result.reason) == (False, "error")
    assert "PROBE_TEST_KEY" in result.message and SECRET not in result.message
    assert target.requests == []
