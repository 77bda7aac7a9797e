"""Delete data past its retention now (the hourly "upstream:prune" task does the same)."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from monitoring import retention


class Command(BaseCommand):
    help = (
        "Delete raw request rows, minute/hour buckets and probe results past their retention, "
        "in short chunks, then release SQLite free pages when auto_vacuum is incremental."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--budget", type=float, help="Stop after about this many seconds (resumes next run)"
        )
        parser.add_argument(
            "--enable-incremental-vacuum",
            action="store_true",
            help="Convert an existing SQLite database to auto_vacuum=INCREMENTAL with a full "
            "VACUUM first (rewrites the file; writers wait until it finishes).",
        )

    def handle(self, *args, **options):
        if options["budget"] is not None and options["budget"] <= 0:
            raise CommandError("--budget must be a positive number of seconds")
        if options["enable_incremental_vacuum"]:
            mode = retention.auto_vacuum_mode()
            if mode is None:
                raise CommandError("--enable-incremental-vacuum applies to SQLite only")
            changed = retention.enable_incremental_vacuum()
            self.stdout.write(
                "auto_vacuum switched to incremental." if changed else f"auto_vacuum is {mode}."
            )
        stop = {"now": False}

        def on_term(signum, frame):
            stop["now"] = True  # finish the chunk in hand, then stop

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            report = retention.prune(budget_s=options["budget"], should_stop=lambda: stop["now"])
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.stdout.write(self.style.SUCCESS(str(report)))
