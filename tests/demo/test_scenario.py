"""The demo scenario: seeded history, the demo probes and live traffic, against the sandbox."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from demo import scenario
from demo.sandbox import Sandbox, SandboxConfig
from demo.sandbox.personalities import PAUBOX_KEY
from monitoring import attempts, presets, recorder
from monitoring.models import AuditLog, MetricBucket, Probe, ProbeState, RequestLog
from monitoring.presets.setup import plan
from monitoring.probes.forms import ProbeForm
from monitoring.probes.run import forget_tokens
from monitoring.probes.schedule import Dispatcher

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # two days back covers the 13:05 spike


@pytest.fixture
def sandbox(tmp_path):
    config = SandboxConfig(
        seed=5, latency_scale=0, error_rate=0.05, auth_burst_every_s=None, tls_port=0,
        ca_file=str(tmp_path / "ca.pem"),
    )  # fmt: skip
    with Sandbox(config) as running:
        yield running


def traffic(sandbox: Sandbox, **options) -> int:
    """Live traffic to the test sandbox, its TLS port trusted through the sandbox's CA."""
    verify = sandbox.ca.client_context()
    return scenario.run_traffic(sandbox.url, tls_url=sandbox.tls_url, verify=verify, **options)


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()  # ids are reused once the test database is emptied
    recorder.configure(spool_dir=tmp_path / "spool")
    yield
    recorder.flush(timeout=30)


def test_seed_history_writes_once_with_a_401_spike_and_a_deprecated_endpoint(db, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_MINUTE_DAYS": 1}
    written = scenario.seed_history(days=2, now=NOW)
    assert written == RequestLog.objects.count() > 1000
    assert scenario.seed_history(days=2, now=NOW) == 0

    # The revoked key's spike; apart from it, a stale key's 401 now and then (retried).
    spike = RequestLog.objects.filter(
        integration__slug="stripe", status=401, error_message__contains="has been revoked"
    )
    first, last = (spike.earliest("created").created, spike.latest("created").created)
    assert first.date() == (NOW - timedelta(days=2)).date()
    assert last - first < timedelta(minutes=26)
    assert spike.count() > 10
    legacy = RequestLog.objects.filter(path="/v1/legacy/report")
    assert legacy.exists() and not legacy.filter(deprecated=False).exists()
    assert RequestLog.objects.filter(attempt=2).exists()  # retried 5xx and 429s

    totals = MetricBucket.objects.filter(grain="day", endpoint="").aggregate(n=Sum("total"))
    assert totals["n"] == written
    minutes = MetricBucket.objects.filter(grain="minute")
    assert minutes.exists() and not minutes.filter(start__lt=NOW - timedelta(days=1)).exists()


def test_seeded_history_speaks_each_provider_s_language(db, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_MINUTE_DAYS": 1}
    scenario.seed_history(days=2, now=NOW)
    expired = RequestLog.objects.filter(integration__slug="openpanel", error_code="token_expired")
    assert expired.count() > 5
    assert {r.created.date() for r in expired} == {(NOW - timedelta(days=1)).date()}
    assert set(expired.values_list("status", "error_message")) == {
        (401, "Missing or invalid token")
    }
    paubox = RequestLog.objects.filter(integration__slug="paubox")
    assert not paubox.exclude(ratelimit_limit=None).exists()  # Paubox publishes no headroom
    invalid = paubox.filter(status=400).first()
    assert invalid is not None and "recipients can't be blank" in invalid.error_message
    assert invalid.path.startswith("/paubox/v1/{username}/")
    assert RequestLog.objects.filter(integration__slug="stripe", status=401).exists()


def test_run_traffic_calls_the_sandbox_through_the_client(recording, sandbox):
    calls = traffic(sandbox, rate=500, max_calls=60, seed=1)
    assert calls == 60
    recorder.flush(timeout=30)
    slugs = [d.slug for d in scenario.DEMO_INTEGRATIONS]
    logged = RequestLog.objects.filter(integration__slug__in=slugs)
    assert logged.count() >= 60
    assert len(sandbox.requests) == logged.count()
    assert set(logged.values_list("integration__slug", flat=True)) == set(slugs)
    # Over TLS, but for Stripe's staging side, which still calls the plain-http port.
    schemes = set(logged.values_list("integration__environment", "scheme", "host"))
    tls_host = sandbox.tls_url.removeprefix("https://")
    plain_host = sandbox.url.removeprefix("http://")
    assert schemes == {
        ("production", "https", tls_host), ("sandbox", "https", tls_host),
        ("staging", "http", plain_host),
    }  # fmt: skip
    # Each provider is called the way it is really called.
    for request in sandbox.requests:
        auth = request.headers.get("authorization", "")
        if request.path.startswith("/paubox/"):
            assert auth == f"Token token={PAUBOX_KEY}"
        elif request.path.startswith("/openpanel/api/") and request.method == "POST":
            assert auth == ""  # signing in
        elif request.path.startswith("/openpanel/"):
            assert auth.startswith("Bearer ey")
        else:
            assert auth.startswith("Bearer sk_test_demo")
    assert "Bearer sk_test_demo_stripe_staging" in {
        r.headers.get("authorization") for r in sandbox.requests
    }
    paths = set(logged.filter(integration__slug="paubox").values_list("path", flat=True))
    assert paths <= {
        "/paubox/v1/{username}/messages", "/paubox/v1/{username}/message_receipt",
        "/paubox/v1/{username}/dynamic_templates", "/paubox/v1/{username}/bulk_messages",
    }  # fmt: skip
    # Six workers signed in at once: five got in, and one token is reused from then on; the
    # sixth was refused and sent the same sign-in again at once, Retry-After unread.
    assert sandbox.personalities["/openpanel"].signin_count == 5
    refused = list(
        RequestLog.objects.filter(integration__slug="openpanel", status=429).order_by("attempt")
    )
    assert [r.attempt for r in refused] == [1, 2, 3, 4]
    assert len({r.call_id for r in refused}) == 1
    assert all(r.retry_after_s >= 1 and r.backoff_ms < 1000 * r.retry_after_s for r in refused)


def test_in_the_expired_token_window_openpanel_calls_keep_an_old_token(recording, sandbox):
    start, _ = scenario.EXPIRED_TOKEN_WINDOW
    import time

    traffic(sandbox, rate=500, max_calls=80, seed=2,
            started_at=time.monotonic() - start - 1)  # fmt: skip
    recorder.flush(timeout=30)
    panel = RequestLog.objects.filter(integration__slug="openpanel").exclude(method="POST")
    assert panel.exists()
    assert set(panel.values_list("status", "error_message")) == {(401, "Missing or invalid token")}
    # Meanwhile the sign-in worked: the provider is up, our token is stale.
    signins = RequestLog.objects.filter(integration__slug="openpanel", method="POST")
    assert signins.filter(status=200).count() == 5


def test_the_demo_integrations_are_what_their_presets_give(db):
    integrations = scenario.demo_integrations("http://127.0.0.1:8765", "https://127.0.0.1:8766")
    assert {k: (i.slug, i.environment, i.preset) for k, i in integrations.items()} == {
        "stripe": ("stripe", "production", "stripe"),
        "stripe-staging": ("stripe", "staging", "stripe"),
        "paubox": ("paubox", "production", "paubox"),
        "openpanel": ("openpanel", "production", "openpanel"),
        "sandbox-crm": ("sandbox-crm", "sandbox", "generic"),
    }  # fmt: skip
    paubox = integrations["paubox"]
    assert paubox.base_url == "https://127.0.0.1:8766/paubox/v1/sandbox"
    assert paubox.require_https
    staging = integrations["stripe-staging"]
    assert staging.base_url == "http://127.0.0.1:8765/" and not staging.require_https
    assert "/paubox/v1/{username}/dynamic_templates/{id}" in paubox.explicit_templates()
    # add_integration sees nothing to change in the integration: the demo went through the
    # same code. Only the preset's probes differ, by design: they call the plain-http port.
    scenario.setup_demo_probes("http://127.0.0.1:8765", "https://127.0.0.1:8766")
    result = plan(presets.get("paubox"), environment="production", slug="paubox")
    assert [c.model for c in result.changes] == ["probe"]
    (change,) = result.changes
    assert set(change.fields) == {"url"}
    old, new = change.fields["url"]
    assert old.replace("http://127.0.0.1:8765", "https://127.0.0.1:8766") == new
    assert AuditLog.objects.filter(actor="demo", target_type="monitoring.Integration").count() == 5
    again = scenario.demo_integrations("http://127.0.0.1:8765", "https://127.0.0.1:8766")
    assert again == integrations


def test_demo_traffic_runs_for_a_duration_and_stops_cleanly(recording, sandbox, capsys):
    # Made beforehand, so that the command's short run is spent calling, not setting up.
    scenario.demo_integrations(sandbox.url, sandbox.tls_url)
    tls = ["--tls-url", sandbox.tls_url, "--ca-file", sandbox.config.ca_file]
    call_command("demo_traffic", "--sandbox-url", sandbox.url, *tls, "--rate", "20",
                 "--duration", "3")  # fmt: skip
    assert "Demo traffic stopped after" in capsys.readouterr().out
    recorder.flush(timeout=30)  # the calls' rows may still be queued when the command returns
    assert RequestLog.objects.filter(scheme="https").exists()


def test_demo_traffic_says_where_the_ca_certificate_is_missing(sandbox, tmp_path):
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(CommandError, match="cannot read the sandbox's CA certificate"):
        call_command("demo_traffic", "--sandbox-url", sandbox.url, "--tls-url", sandbox.tls_url,
                     "--ca-file", str(missing), "--duration", "1")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate"),
        (["--sandbox-url", "ftp://x"], "--sandbox-url"),
        (["--duration", "-1"], "--duration"),
        (["--tls-url", "http://127.0.0.1:8766"], "--tls-url"),
    ],
)
def test_demo_traffic_rejects_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("demo_traffic", *args)


def test_demo_traffic_gives_up_when_the_sandbox_never_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError, match="did not answer"):
        call_command("demo_traffic", "--sandbox-url", f"http://127.0.0.1:{port}", "--wait", "1")


def test_the_seeded_deprecated_endpoint_has_its_sunset_ahead_of_today(db, settings):
    from django.utils import timezone

    from monitoring.models import RequestLog

    scenario.seed_history(days=1)
    deprecated = RequestLog.objects.filter(deprecated=True)
    assert deprecated.exists()
    today = timezone.now()
    assert all(row.sunset_at > today > row.deprecation_at for row in deprecated[:50])


@pytest.fixture
def probes_recorded(transactional_db):
    # Probe runs also go to the recorder, whose writer has its own connection.
    yield
    recorder.flush(timeout=10)


def test_demo_probes_run_green_against_the_sandbox_and_setup_is_idempotent(
    probes_recorded, settings, monkeypatch
):
    for name, value in scenario.DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    forget_tokens()
    with Sandbox(SandboxConfig(seed=3, latency_scale=0.0, error_rate=0.0)) as sandbox:
        host = sandbox.url.removeprefix("http://")
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [host]}
        created = scenario.setup_demo_probes(sandbox.url)
        again = scenario.setup_demo_probes(sandbox.url)
        assert [p.pk for p in again] == [p.pk for p in created]
        assert {p.integration.slug for p in created} == {
            "paubox", "stripe", "sandbox-crm", "openpanel",
        }  # fmt: skip
        # Probes call the plain-http port: the worker trusts no demo CA.
        assert {p.url.split("/")[2] for p in created} == {host}
        stats = Dispatcher(tick_s=0.05).run(once=True)
        signins = sandbox.personalities["/openpanel"].signin_count
    forget_tokens()
    assert stats.runs == len(created) == 7
    states = {(p.integration.slug, p.name): p.state for p in Probe.objects.all()}
    assert set(states.values()) == {ProbeState.UP}, states
    assert ("openpanel", "Sign in and whoami") in states
    assert ("paubox", "Dynamic templates") in states
    assert signins == 1
    probe = Probe.objects.get(name="Dynamic templates")
    assert probe.headers == {"Authorization": "Token token=${UPSTREAM_SECRET_PAUBOX_API_KEY}"}
    for probe in created:  # the demo's own configuration passes the form's checks
        data = {
            **ProbeForm(instance=probe).initial,
            "headers": json.dumps(probe.headers),
            "assertions": json.dumps(probe.assertions),
            "steps": json.dumps(probe.steps),
        }
        form = ProbeForm(data, instance=probe)
        assert form.is_valid(), (probe.name, form.errors)
