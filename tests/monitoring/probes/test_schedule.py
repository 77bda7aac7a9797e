"""Claiming, dispatching and state: each slot runs once, even with two dispatchers at once."""

from __future__ import annotations

import datetime as dt
import io
import pydoc
import threading
from collections import Counter

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from monitoring import recorder
from monitoring.models import (
    Integration,
    JobState,
    Probe,
    ProbeFlip,
    ProbeResult,
    ProbeState,
    RequestLog,
)
from monitoring.probes import schedule
from monitoring.probes.run import MAX_TIMEOUT_S
from monitoring.probes.schedule import Dispatcher, claim_due, next_state

SECRET = "sk_live_probe_secret_value_9f8e7d"

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _recorder_flushed():
    yield
    recorder.flush(timeout=10)


def make_probes(n: int, url: str, *, at: dt.datetime, **fields) -> list[Probe]:
    integration, _ = Integration.objects.get_or_create(slug="acme", defaults={"name": "Acme"})
    return Probe.objects.bulk_create(
        Probe(
            integration=integration, name=f"p{i}", url=url, interval_s=30, next_run_at=at, **fields
        )
        for i in range(n)
    )


def in_thread(fn, *args, **kwargs) -> threading.Thread:
    def body():
        try:
            fn(*args, **kwargs)
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


@pytest.mark.django_db
def test_a_claim_moves_the_slot_forward_and_is_not_given_out_twice():
    make_probes(3, "http://93.184.215.14/", at=T0)
    with time_machine.travel(T0 + dt.timedelta(seconds=1), tick=False):
        first = claim_due(limit=10)
        again = claim_due(limit=10)
    assert len(first) == 3 and again == []
    assert {spec.scheduled_for for spec in first} == {T0}
    assert set(Probe.objects.values_list("next_run_at", flat=True)) == {
        T0 + dt.timedelta(seconds=30)
    }


@pytest.mark.django_db
def test_disabled_future_and_still_running_probes_are_not_claimed():
    on_time, disabled, future, running = make_probes(4, "http://93.184.215.14/", at=T0)
    Probe.objects.filter(pk=disabled.pk).update(enabled=False)
    Probe.objects.filter(pk=future.pk).update(next_run_at=T0 + dt.timedelta(minutes=5))
    Probe.objects.filter(pk=running.pk).update(claimed_until=T0 + dt.timedelta(seconds=20))
    with time_machine.travel(T0 + dt.timedelta(seconds=1), tick=False):
        assert [s.probe_id for s in claim_due(limit=10)] == [on_time.pk]
    with time_machine.travel(T0 + dt.timedelta(seconds=21), tick=False):
        # The stale claim lapsed: the probe is due again.
        assert [s.probe_id for s in claim_due(limit=10)] == [running.pk]


@pytest.mark.django_db
def test_a_probe_that_fell_behind_skips_missed_slots_and_keeps_its_phase():
    (probe,) = make_probes(1, "http://93.184.215.14/", at=T0)
    with time_machine.travel(T0 + dt.timedelta(seconds=95), tick=False):
        (spec,) = claim_due(limit=10)
    probe.refresh_from_db()
    assert spec.scheduled_for == T0
    assert probe.next_run_at == T0 + dt.timedelta(seconds=120)


@pytest.mark.django_db
def test_claims_respect_the_limit_oldest_first():
    older = make_probes(2, "http://93.184.215.14/", at=T0 - dt.timedelta(seconds=10))
    make_probes(3, "http://93.184.215.14/", at=T0)
    with time_machine.travel(T0, tick=False):
        claimed = claim_due(limit=2)
    assert [s.probe_id for s in claimed] == [p.pk for p in older]


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_run_every_due_probe_exactly_once(target, allowed):
    due = make_probes(40, f"{target.url}/json", at=timezone.now() - dt.timedelta(seconds=1))
    stats = []

    def dispatch():
        stats.append(Dispatcher(concurrency=8, tick_s=0.05).run(once=True))

    threads = [in_thread(dispatch), in_thread(dispatch)]
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    per_probe = Counter(ProbeResult.objects.values_list("probe_id", flat=True))
    assert per_probe == Counter({p.pk: 1 for p in due})
    assert sum(s.runs for s in stats) == 40
    assert len(target.requests) == 40
    assert not Probe.objects.filter(claimed_until__isnull=False).exists()
    assert set(ProbeResult.objects.values_list("ok", flat=True)) == {True}


@pytest.mark.django_db(transaction=True)
def test_one_slow_provider_does_not_hold_up_the_others(target, allowed):
    (slow,) = make_probes(1, f"{target.url}/sleep?ms=1500", at=timezone.now(), timeout_s=5)
    quick = make_probes(5, f"{target.url}/json", at=timezone.now())
    Dispatcher(concurrency=4, tick_s=0.05).run(once=True)
    slow_result = ProbeResult.objects.get(probe=slow)
    quick_done = ProbeResult.objects.filter(probe__in=quick)
    assert quick_done.count() == 5
    # Every quick run started before the slow one finished, though only 4 may run at once.
    slow_finished = slow_result.created + dt.timedelta(milliseconds=slow_result.latency_ms)
    assert all(r.created < slow_finished for r in quick_done)


@pytest.mark.django_db(transaction=True)
def test_stopping_finishes_and_saves_the_runs_in_hand(target, allowed):
    (probe,) = make_probes(1, f"{target.url}/sleep?ms=400", at=timezone.now())
    stop = threading.Event()
    dispatcher = Dispatcher(concurrency=2, tick_s=0.05)
    result = {}
    thread = in_thread(lambda: result.update(stats=dispatcher.run(stop=stop)))
    for _ in range(200):
        if target.requests:
            break
        threading.Event().wait(0.02)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["stats"].runs == 1
    assert ProbeResult.objects.get(probe=probe).ok


@pytest.mark.django_db(transaction=True)
def test_a_newer_scheduled_dispatcher_takes_over_from_the_running_one(target, allowed):
    out = {}
    thread = in_thread(lambda: out.update(msg=schedule.dispatch_task(loop_seconds=60)))
    for _ in range(250):
        if JobState.objects.filter(name=schedule.DISPATCHER_GENERATION, value=1).exists():
            break
        threading.Event().wait(0.02)
    assert schedule._take_over() == 2
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert out["msg"].startswith("dispatcher 1: 0 runs")


@pytest.mark.django_db(transaction=True)
def test_run_probes_once_runs_what_is_due(target, allowed, capsys):
    make_probes(3, f"{target.url}/json", at=timezone.now())
    make_probes(1, f"{target.url}/json", at=timezone.now() + dt.timedelta(hours=1))
    call_command("run_probes", "--once")
    assert "3 runs, 3 ok, 0 failed" in capsys.readouterr().out
    assert ProbeResult.objects.count() == 3


@pytest.mark.django_db
def test_run_probes_rejects_unknown_ids():
    with pytest.raises(CommandError, match="No probe with id 999"):
        call_command("run_probes", "--probe", "999")


@pytest.mark.django_db
def test_the_dispatcher_is_scheduled():
    from monitoring.tasks import SCHEDULES

    names = {spec.name: spec for spec in SCHEDULES}
    assert names["upstream:probe-dispatcher"].func == "monitoring.tasks.dispatch_probes"
    assert names["upstream:probe-dispatcher"].minutes == 1
    # The loop ends before django-q2 would kill the task, runs in hand included.
    assert schedule.dispatcher_loop_seconds() + MAX_TIMEOUT_S < 120


def test_the_old_dotted_path_still_reaches_the_dispatcher():
    # django-q2 resolves a schedule's func with pydoc.locate; rows made before the probes
    # package carry this path.
    assert pydoc.locate("monitoring.probes.dispatch_task") is schedule.dispatch_task


def _env_for_this_database(**extra: str) -> dict[str, str]:
    """Environment for a child process that uses the test database."""
    import os
    from urllib.parse import quote

    db = connection.settings_dict
    env = {**os.environ, **extra}
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = db["NAME"]
        env.pop("DATABASE_URL", None)
    else:
        auth = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}"
        env["DATABASE_URL"] = (
            f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    return env


@pytest.mark.django_db(transaction=True)
def test_run_probes_loop_finishes_the_run_in_hand_on_sigterm(target):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    (probe,) = make_probes(1, f"{target.url}/sleep?ms=800", at=timezone.now())
    root = Path(__file__).resolve().parents[3]
    env = _env_for_this_database(UPSTREAM_PROBE_ALLOW_HOSTS=target.hostport, LOG_LEVEL="WARNING")
    child = subprocess.Popen(
        [sys.executable, "manage.py", "run_probes", "--loop"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(1500):  # Django starting in a child takes a moment
            if target.requests or child.poll() is not None:
                break
            threading.Event().wait(0.02)
        assert target.requests, child.communicate(timeout=5)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "1 runs, 1 ok" in out
    assert ProbeResult.objects.get(probe=probe).ok


@pytest.mark.django_db(transaction=True)
def test_run_probes_runs_chosen_probes_now_outside_their_schedule(target, allowed, capsys):
    (probe,) = make_probes(1, f"{target.url}/status/503", at=T0 + dt.timedelta(days=400))
    call_command("run_probes", "--probe", str(probe.pk))
    assert "Acme: p0: FAILED (status) — status 503, expected 200-399" in capsys.readouterr().out
    probe.refresh_from_db()
    assert probe.next_run_at == T0 + dt.timedelta(days=400)
    assert ProbeResult.objects.get(probe=probe).scheduled_for is None


# --- state and hysteresis ------------------------------------------------------------------


@pytest.fixture
def probe(integration, target, allowed):
    return Probe.objects.create(
        integration=integration, name="Flaky", url=f"{target.url}/flaky", timeout_s=5
    )


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


@pytest.mark.django_db(transaction=True)
def test_down_after_two_failures_and_up_after_two_successes(probe, target):
    seen = []
    for status in (500, 500, 200, 200):
        target.flaky_status = status
        (result,), _ = schedule.run_now([probe])
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


@pytest.mark.django_db
def test_run_now_skips_a_probe_another_runner_holds(probe):
    from datetime import timedelta

    from django.utils import timezone

    Probe.objects.filter(pk=probe.pk).update(claimed_until=timezone.now() + timedelta(seconds=30))
    results, busy = schedule.run_now([probe])
    assert results == [] and busy == [probe]
    assert not ProbeResult.objects.exists()


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_secrets_never_reach_the_database(client, superuser, target, allowed, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_PROBE_TEST_KEY", SECRET)
    client.force_login(superuser)
    integration = Integration.objects.create(name="Acme", slug="acme")
    form = {
        "integration": integration.pk, "name": "Secret echo", "method": "GET",
        "url": f"{target.url}/headers",
        "headers": '{"Authorization": "Bearer ${UPSTREAM_SECRET_PROBE_TEST_KEY}"}', "body": "",
        "interval_s": 60, "timeout_s": 5, "assertions": '{"body_contains": "Bearer"}',
        "fail_threshold": 2, "recover_threshold": 2, "enabled": "on",
    }  # fmt: skip
    response = client.post(reverse("admin:monitoring_probe_add"), form)
    assert response.status_code == 302, response.content[-3000:]
    probe = Probe.objects.get(name="Secret echo")
    results, _ = schedule.run_now([probe])
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
    assert "${UPSTREAM_SECRET_PROBE_TEST_KEY}" in page.content.decode()
    assert "sha256" in page.content.decode()
