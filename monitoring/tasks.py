"""django-q2 task entry points and the schedules that run them (created by setup_upstream)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    func: str
    minutes: int


# Every recurring job Upstream needs. `manage.py setup_upstream` makes the django-q2
# schedules match this list; nothing is scheduled at import time.
SCHEDULES: list[ScheduleSpec] = [
    # Loops ~80 s ticking every 0.5 s (see monitoring.probes); each start takes over from the last.
    ScheduleSpec("upstream:probe-dispatcher", "monitoring.probes.dispatch_task", 1),
    # Alert rules over metric buckets and probe state (monitoring.alerts).
    ScheduleSpec("upstream:evaluate-alerts", "monitoring.alerts.evaluate_task", 1),
    # Alert e-mails: retries after backoff, and anything the evaluator's own task missed.
    ScheduleSpec("upstream:send-notifications", "monitoring.notify.send_task", 1),
    # Retention: raw rows, minute/hour buckets, probe results, in short chunks
    # (monitoring.retention); stops within half the task timeout and resumes next hour.
    ScheduleSpec("upstream:prune", "monitoring.retention.prune_task", 60),
]
