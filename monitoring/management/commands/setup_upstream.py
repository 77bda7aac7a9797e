"""Create or update Upstream's django-q2 schedules; safe to run after every migrate."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction
from django_q.models import Schedule

from monitoring.alerts.lifecycle import ensure_default_rules
from monitoring.tasks import FORMER_PATHS, SCHEDULES


class Command(BaseCommand):
    help = "Create or update the background schedules (idempotent; run after migrate)."

    def handle(self, *args, **options):
        created = updated = 0
        with transaction.atomic():
            for spec in SCHEDULES:
                _, was_created = Schedule.objects.update_or_create(
                    name=spec.name,
                    defaults={
                        "func": spec.func,
                        "schedule_type": Schedule.MINUTES,
                        "minutes": spec.minutes,
                        "repeats": -1,
                    },
                )
                created += was_created
                updated += not was_created
            known = [spec.name for spec in SCHEDULES]
            stale = Schedule.objects.filter(name__startswith="upstream:").exclude(name__in=known)
            removed = stale.count()
            stale.delete()
            # Schedules of any name an operator made for a job before its entry point moved
            # to monitoring.tasks (the old paths stay importable for one release only).
            moved = 0
            for old, new in FORMER_PATHS.items():
                moved += Schedule.objects.filter(func=old).update(func=new)
        self.stdout.write(
            f"Schedules: {created} created, {updated} up to date, {removed} stale removed, "
            f"{moved} moved to monitoring.tasks."
        )
        rules = ensure_default_rules()
        self.stdout.write(f"Alert rules: {rules} default rules created.")
