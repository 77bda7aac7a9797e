"""Write Upstream's configuration as YAML (secrets only as ${ENV} references)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from monitoring import config


class Command(BaseCommand):
    help = (
        "Write the configuration (integrations, probes, webhook endpoints, channels, routes, "
        "rules, maintenance windows) as YAML to FILE, or to standard output."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="where to write (default: standard output)")

    def handle(self, *args, file=None, **options):
        text = config.dump_yaml(config.export())
        if not file:
            self.stdout.write(text, ending="")
            return
        try:
            Path(file).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot write {file}: {exc.strerror}") from None
        self.stderr.write(f"Wrote {file}.")
