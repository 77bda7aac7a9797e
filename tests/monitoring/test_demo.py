"""Demo history seeding and the demo traffic generator (against the loopback sandbox)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from monitoring import client, demo, recorder
from monitoring.models import MetricBucket, RequestLog
from monitoring.sandbox import Sandbox, SandboxConfig

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # two days back covers the 13:05 spike


@pytest.fixture
def sandbox():
    config = SandboxConfig(seed=5, latency_scale=0, error_rate=0.05, auth_burst_every_s=None)
    with Sandbox(config) as running:
        yield running


@pytest.fixture
def recording(transactional_db, tmp_path):
    client._REFS.clear()
    recorder.configure(spool_dir=tmp_path / "spool")
    yield
    recorder.flush(timeout=30)


def test_seed_history_writes_once_with_a_401_spike_and_a_deprecated_endpoint(db, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "RETAIN_MINUTE_DAYS": 1}
    written = demo.seed_history(days=2, now=NOW)
    assert written == RequestLog.objects.count() > 1000
    assert demo.seed_history(days=2, now=NOW) == 0

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
    calls = demo.run_traffic(sandbox.url, rate=500, max_calls=30, seed=1)
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
    call_command("demo_traffic", "--sandbox-url", sandbox.url, "--rate", "20", "--duration", "1")
    assert "Demo traffic stopped after" in capsys.readouterr().out
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

    demo.seed_history(days=1)
    deprecated = RequestLog.objects.filter(deprecated=True)
    assert deprecated.exists()
    today = timezone.now()
    assert all(row.sunset_at > today > row.deprecation_at for row in deprecated[:50])
