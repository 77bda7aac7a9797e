"""Run one alert evaluation cycle now (the schedule does it every minute)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from monitoring.alerts import lifecycle, notify


class Command(BaseCommand):
    help = "Evaluate every enabled alert rule once; with --send, also send due e-mails."

    def add_arguments(self, parser):
        parser.add_argument(
            "--send",
            action="store_true",
            help="Afterwards send the notifications already due (others wait for the group wait).",
        )

    def handle(self, *args, **options):
        report = lifecycle.evaluate()
        self.stdout.write(f"Alerts: {report}.")
        if options["send"]:
            self.stdout.write(f"E-mail: {notify.send_due()}.")
