"""Check the audit log's hash chain; exit non-zero naming the first bad row."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from monitoring.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain from the first row to the last."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(
                f"Audit log chain broken at row seq={report.bad_seq} (id={report.bad_id}): "
                f"{report.reason}"
            )
        self.stdout.write(self.style.SUCCESS(f"Audit log intact: {report.rows} rows verified."))
