"""Every django-q2 entry point, and the schedules that run them (created by setup_upstream)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Queued tasks and schedule rows store these functions' dotted paths, so the paths must stay
# put while the engine's modules move: each entry point imports its job when it runs. That
# also keeps this module free of the engine for setup_upstream and system checks to read.


def dispatch_probes(loop_seconds: float | None = None) -> str:
    """Dispatch due probes for about a minute, until the next run takes over."""
    from monitoring.probes.schedule import dispatch_task

    return dispatch_task(loop_seconds)


def evaluate_alerts() -> str:
    """One alert evaluation cycle over metric buckets and probe state."""
    from monitoring.alerts.lifecycle import evaluate_task

    return evaluate_task()


def send_notifications() -> str:
    """Send the alert notifications that are due: retries, and anything a deliver() missed."""
    from monitoring.alerts.notify import send_task

    return send_task()


def deliver(due_iso: str | None = None) -> str:
    """Enqueued by the evaluator on commit: wait out the group wait, then send what is due."""
    from monitoring.alerts.notify import deliver as deliver_due

    return deliver_due(due_iso)


def prune() -> str:
    """Delete data past its retention within half the task timeout; the next run resumes."""
    from monitoring.retention import prune_task

    return prune_task()


def create_partitions() -> str:
    """Keep RequestLog's day partitions ready a few days ahead (PostgreSQL; else a no-op)."""
    from monitoring.partitions import ensure

    made = ensure()
    return f"created {len(made)} partitions" + (f": {', '.join(made)}" if made else "")


def refresh_scorecards() -> str:
    """Grade every active integration against its guides (monitoring.scorecard)."""
    from monitoring.scorecard import refresh_all

    return f"refreshed {refresh_all()} scorecards"


def send_scorecard_digest() -> str:
    """The weekly e-mail of changed scorecard checks, to the people who opted in."""
    from monitoring.scorecard import send_weekly_digest

    return f"sent {send_weekly_digest()} scorecard digests"


def path(task: Callable) -> str:
    """The dotted path django-q2 stores for an entry point of this module."""
    return f"{__name__}.{task.__name__}"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    func: str
    minutes: int


# Every recurring job Upstream needs. `manage.py setup_upstream` makes the django-q2
# schedules match this list; nothing is scheduled at import time.
SCHEDULES: list[ScheduleSpec] = [
    # Loops ~80 s ticking every 0.5 s (see monitoring.probes); each start takes over from the last.
    ScheduleSpec("upstream:probe-dispatcher", path(dispatch_probes), 1),
    # Alert rules over metric buckets and probe state (monitoring.alerts).
    ScheduleSpec("upstream:evaluate-alerts", path(evaluate_alerts), 1),
    # Alert e-mails: retries after backoff, and anything the evaluator's own task missed.
    ScheduleSpec("upstream:send-notifications", path(send_notifications), 1),
    # Retention: raw rows, minute/hour buckets, probe results, in short chunks
    # (monitoring.retention); stops within half the task timeout and resumes next hour.
    ScheduleSpec("upstream:prune", path(prune), 60),
    # RequestLog's day partitions on PostgreSQL, days ahead (monitoring.partitions): hourly,
    # so a missed run or two still leaves days of slack.
    ScheduleSpec("upstream:create-partitions", path(create_partitions), 60),
    # Scorecards from buckets and bounded samples; pages read the stored one.
    ScheduleSpec("upstream:scorecards", path(refresh_scorecards), 60),
    # The opt-in weekly e-mail of checks whose grade moved.
    ScheduleSpec("upstream:scorecard-digest", path(send_scorecard_digest), 7 * 24 * 60),
]

FORMER_PATHS: dict[str, str] = {
    "monitoring.probes.dispatch_task": path(dispatch_probes),
    "monitoring.probes.schedule.dispatch_task": path(dispatch_probes),
    "monitoring.alerts.evaluate_task": path(evaluate_alerts),
    "monitoring.alerts.lifecycle.evaluate_task": path(evaluate_alerts),
    "monitoring.notify.send_task": path(send_notifications),
    "monitoring.alerts.notify.send_task": path(send_notifications),
    "monitoring.notify.deliver": path(deliver),
    "monitoring.alerts.notify.deliver": path(deliver),
    "monitoring.retention.prune_task": path(prune),
}
"""Dotted paths schedules named before every entry point lived here (and the jobs' own
paths): setup_upstream rewrites any schedule row still naming one to its entry point."""
