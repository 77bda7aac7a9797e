"""Tests for the django-q2 entry points, their schedules, and moving old schedule rows."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils.module_loading import import_string
from django_q.models import Schedule

from monitoring import tasks
from monitoring.tasks import FORMER_PATHS, SCHEDULES


def test_every_schedule_runs_an_entry_point_of_the_tasks_module():
    for spec in SCHEDULES:
        assert spec.func.startswith("monitoring.tasks."), spec
        assert import_string(spec.func) is getattr(tasks, spec.func.rpartition(".")[2])
    assert [s.name for s in SCHEDULES] == [
        "upstream:probe-dispatcher",
        "upstream:evaluate-alerts",
        "upstream:send-notifications",
        "upstream:prune",
        "upstream:create-partitions",
        "upstream:scorecards",
        "upstream:scorecard-digest",
    ]


@pytest.mark.parametrize(
    ("entry", "job", "args"),
    [
        (tasks.dispatch_probes, "monitoring.probes.schedule.dispatch_task", (12.5,)),
        (tasks.evaluate_alerts, "monitoring.alerts.lifecycle.evaluate_task", ()),
        (tasks.send_notifications, "monitoring.alerts.notify.send_task", ()),
        (tasks.deliver, "monitoring.alerts.notify.deliver", ("2024-05-10T14:37:00+00:00",)),
        (tasks.prune, "monitoring.retention.prune_task", ()),
    ],
)
def test_each_entry_point_runs_its_job_and_returns_what_it_says(monkeypatch, entry, job, args):
    calls = []

    def fake(*given):
        calls.append(given)
        return f"ran {job}"

    monkeypatch.setattr(job, fake)
    assert entry(*args) == f"ran {job}"
    assert calls == [args]


def test_every_former_path_still_names_a_job_and_maps_to_an_entry_point():
    entry_points = {spec.func for spec in SCHEDULES} | {tasks.path(tasks.deliver)}
    # Entry points born in this module never had another path.
    entry_points -= {
        tasks.path(tasks.create_partitions),
        tasks.path(tasks.refresh_scorecards),
        tasks.path(tasks.send_scorecard_digest),
    }
    assert set(FORMER_PATHS.values()) == entry_points
    for old in FORMER_PATHS:
        # Queued tasks may still carry these for one release: each must stay importable.
        assert callable(import_string(old)), old


@pytest.mark.django_db
def test_setup_upstream_moves_schedule_rows_to_the_entry_points(monkeypatch):
    monkeypatch.setattr(
        "monitoring.management.commands.setup_upstream.ensure_default_rules", lambda: 0
    )
    old = {"schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1}
    Schedule.objects.create(name="upstream:probe-dispatcher", func=next(iter(FORMER_PATHS)), **old)
    Schedule.objects.create(name="nightly prune", func="monitoring.retention.prune_task", **old)
    Schedule.objects.create(name="upstream:gone", func="monitoring.alerts.evaluate_task", **old)
    out = StringIO()
    call_command("setup_upstream", stdout=out)
    funcs = dict(Schedule.objects.values_list("name", "func"))
    assert funcs == {
        **{spec.name: spec.func for spec in SCHEDULES},
        "nightly prune": "monitoring.tasks.prune",
    }
    # One schedule row existed under an old path: every other schedule is new.
    created = len(SCHEDULES) - 1
    assert f"{created} created, 1 up to date, 1 stale removed, 1 moved" in out.getvalue()
    call_command("setup_upstream", stdout=out)
    assert f"0 created, {len(SCHEDULES)} up to date, 0 stale removed, 0 moved" in out.getvalue()
    assert Schedule.objects.count() == len(SCHEDULES) + 1


@pytest.mark.django_db
def test_the_scorecard_task_grades_every_active_integration():
    from monitoring.models import Integration, Scorecard

    Integration.objects.create(name="A", slug="a", environment="production")
    Integration.objects.create(name="B", slug="b", environment="production", active=False)
    assert tasks.refresh_scorecards() == "refreshed 1 scorecards"
    assert list(Scorecard.objects.values_list("integration__slug", flat=True)) == ["a"]
