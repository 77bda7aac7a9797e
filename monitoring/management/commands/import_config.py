"""Apply a configuration file (export_config's YAML) idempotently, printing what changes."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from monitoring import config


class Command(BaseCommand):
    help = (
        "Apply FILE (YAML or JSON, as export_config writes it): creates and updates objects "
        "to match, keeps objects the file leaves out, prints the diff. Nothing is written "
        "unless the whole file is valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the configuration file ('-' for standard input)")
        parser.add_argument(
            "--dry-run", action="store_true", help="print the diff and write nothing"
        )

    def handle(self, *args, file, dry_run=False, **options):
        try:
            text = self.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {getattr(exc, 'strerror', exc)}") from None
        try:
            doc = config.load(text)
            result = config.plan(doc) if dry_run else config.apply(doc, actor="import_config")
        except config.ConfigError as exc:
            raise CommandError(
                f"{file} is not valid; nothing was changed:\n  " + "\n  ".join(exc.errors)
            ) from None
        self.stdout.write(result.diff())
        if dry_run and result.changes:
            self.stdout.write("Dry run: nothing was written.")
