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
from monitoring import attempts, recorder
from monitoring.models import MetricBucket, Probe, ProbeState, RequestLog
from monitoring.probes.forms import ProbeForm
from monitoring.probes.schedule import Dispatcher

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # two days back covers the 13:05 spike


@pytest.fixture
def sandbox():
    config = SandboxConfig(seed=5, latency_scale=0, error_rate=0.05, auth_burst_every_s=None)
    with Sandbox(config) as running:
        yield running


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

    spike = RequestLog.objects.filter(integration__slug="stripe", status=401)
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


def test_run_traffic_calls_the_sandbox_through_the_client(recording, sandbox):
    calls = scenario.run_traffic(sandbox.url, rate=500, max_calls=30, seed=1)
    assert calls == 30
    recorder.flush(timeout=30)
    logged = RequestLog.objects.filter(integration__slug__in=["stripe", "paubox", "sandbox-crm"])
    assert logged.count() >= 30
    assert len(sandbox.requests) == logged.count()
    assert all(
        r.headers["authorization"].startswith("Bearer sk_test_demo") for r in sandbox.requests
    )
    assert set(logged.values_list("integration__slug", flat=True)) <= {
        "stripe",
        "paubox",
        "sandbox-crm",
    }


def test_demo_traffic_runs_for_a_duration_and_stops_cleanly(recording, sandbox, capsys):
    call_command("demo_traffic", "--sandbox-url", sandbox.url, "--rate", "20", "--duration", "2")
    assert "Demo traffic stopped after" in capsys.readouterr().out
    recorder.flush(timeout=30)  # the calls' rows may still be queued when the command returns
    assert RequestLog.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate"),
        (["--sandbox-url", "ftp://x"], "--sandbox-url"),
        (["--duration", "-1"], "--duration"),
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
    probes_recorded, settings
):
    with Sandbox(SandboxConfig(seed=3, latency_scale=0.0, error_rate=0.0)) as sandbox:
        host = sandbox.url.removeprefix("http://")
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [host]}
        created = scenario.setup_demo_probes(sandbox.url)
        again = scenario.setup_demo_probes(sandbox.url)
        assert [p.pk for p in again] == [p.pk for p in created]
        assert {p.integration.slug for p in created} == {"paubox", "stripe", "sandbox-crm"}
        stats = Dispatcher(tick_s=0.05).run(once=True)
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
