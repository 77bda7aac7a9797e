"""Create or update Upstream's django-q2 schedules; safe to run after every migrate."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction
from django_q.models import Schedule

from monitoring.alerts import ensure_default_rules
from monitoring.tasks import SCHEDULES


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
        self.stdout.write(
            f"Schedules: {created} created, {updated} up to date, {removed} stale removed."
        )
        rules = ensure_default_rules()
        self.stdout.write(f"Alert rules: {rules} default rules created.")
