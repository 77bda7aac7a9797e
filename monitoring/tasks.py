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
SCHEDULES: list[ScheduleSpec] = []
