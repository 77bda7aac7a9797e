"""Recompute metric buckets for a time range from the raw request rows."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from monitoring import rollup
from monitoring.models import Integration


def parse_when(value: str, option: str) -> datetime:
    """An ISO date or date-time; naive values are UTC."""
    try:
        when = parse_datetime(value)
        if when is None:
            day = parse_date(value)
            when = datetime.combine(day, time()) if day else None
    except ValueError:
        when = None
    if when is None:
        raise CommandError(f"{option}: expected an ISO date or date-time, got {value!r}")
    return when.replace(tzinfo=UTC) if timezone.is_naive(when) else when


class Command(BaseCommand):
    help = (
        "Recompute the minute/hour/day buckets of every UTC day touching --since..--until "
        "from the raw request log (idempotent). Days whose raw rows may be pruned are refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="ISO date or date-time (UTC)")
        parser.add_argument("--until", help="ISO date or date-time (UTC); default: now")
        parser.add_argument(
            "--integration",
            action="append",
            default=[],
            help="Integration id or slug; repeat for several (default: all)",
        )

    def handle(self, *args, **options):
        since = parse_when(options["since"], "--since")
        until = parse_when(options["until"], "--until") if options["until"] else timezone.now()
        if until <= since:
            raise CommandError("--until must come after --since")
        ids = None
        if options["integration"]:
            ids = []
            for ref in options["integration"]:
                found = Integration.objects.filter(
                    **({"pk": int(ref)} if ref.isdigit() else {"slug": ref})
                ).values_list("pk", flat=True)
                if not found:
                    raise CommandError(f"--integration: no integration {ref!r}")
                ids += found
        try:
            report = rollup.rebuild(since, until, ids)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {report.days} day(s): {report.raw_rows} raw rows into "
                f"{report.buckets} buckets."
            )
        )
