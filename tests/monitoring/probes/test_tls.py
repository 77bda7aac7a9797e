"""Probes over real TLS: a test CA made with trustme, certificates expiring in 5 days."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl

import pytest
import trustme

from monitoring import recorder
from monitoring.models import Probe
from monitoring.probes.run import ProbeSpec, RunResult, execute, make_client
from monitoring.probes.schedule import run_now
from tests.monitoring.probes.probe_server import ProbeTarget


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def serve(ca: trustme.CA, **issue) -> ProbeTarget:
    cert = ca.issue_cert("localhost", "127.0.0.1", **issue)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return ProbeTarget(tls=context)


@pytest.fixture
def five_days(ca):
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    with serve(ca, not_after=expires) as server:
        yield server


@pytest.fixture
def trusting(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def run(url: str, allowed: list[str], verify, **assertions) -> RunResult:
    spec = ProbeSpec(
        probe_id=1, integration_id=1, method="GET", url=url, headers={}, body="",
        timeout_s=5, assertions=assertions,
    )  # fmt: skip

    async def go() -> RunResult:
        async with make_client(verify=verify) as client:
            return await execute(spec, client, allowed=allowed)

    return asyncio.run(go())


def test_certificate_days_come_from_the_live_connection(five_days, trusting):
    result = run(
        f"{five_days.url}/json", [five_days.hostport], trusting, tls_min_days=3, https_only=True
    )
    assert result.ok, result.message
    assert 4.9 < result.cert_days_left <= 5.0


def test_a_certificate_inside_the_threshold_fails(five_days, trusting):
    result = run(f"{five_days.url}/json", [five_days.hostport], trusting, tls_min_days=7)
    assert (result.ok, result.reason) == (False, "certificate")
    assert "expires in 5.0 days" in result.message


def test_a_host_name_is_verified_against_the_certificate_through_the_pinned_address(
    five_days, trusting
):
    allowed = [f"localhost:{five_days.port}"]
    result = run(f"https://localhost:{five_days.port}/json", allowed, trusting, tls_min_days=1)
    assert result.ok, result.message
    assert five_days.requests[0][2]["Host"] == f"localhost:{five_days.port}"


def test_an_untrusted_certificate_is_a_tls_failure(five_days):
    result = run(f"{five_days.url}/json", [five_days.hostport], True)
    assert (result.ok, result.reason, result.outcome) == (False, "tls", "tls_error")
    assert "certificate verify failed" in result.message
    assert result.cert_days_left is None


def test_an_expired_certificate_is_a_tls_failure(ca, trusting):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with serve(ca, not_before=past - dt.timedelta(days=30), not_after=past) as server:
        result = run(f"{server.url}/json", [server.hostport], trusting, tls_min_days=1)
    assert result.reason == "tls"
    assert "expired" in result.message


@pytest.mark.django_db(transaction=True)
def test_the_probe_keeps_the_days_left_for_the_dashboard(
    five_days, trusting, integration, settings
):
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [five_days.hostport]}
    probe = Probe.objects.create(
        integration=integration,
        name="TLS",
        url=f"{five_days.url}/json",
        assertions={"tls_min_days": 7},
    )
    (result,), _ = run_now([probe], verify=trusting)
    probe.refresh_from_db()
    assert result.reason == "certificate"
    assert 4.9 < probe.cert_days_left <= 5.0
    assert probe.cert_checked_at is not None
    assert probe.last_reason == "certificate"
    recorder.flush(timeout=10)
