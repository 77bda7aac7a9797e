"""Create (or bring up to date) an integration from a provider preset: templates, probes, rules."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from monitoring import presets
from monitoring.models import Environment
from monitoring.presets.setup import PresetError, apply, plan


class Command(BaseCommand):
    help = (
        "Create an integration from a preset (see `manage.py presets`), with its path "
        "templates, redaction names, host patterns, probes and rules. Idempotent: a second run "
        "changes nothing. Secrets are named as ${UPSTREAM_SECRET_…} variables, never stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("--preset", required=True, help="One of: " + ", ".join(presets.ALL))
        parser.add_argument(
            "--environment", required=True, help="One of: " + ", ".join(Environment.values)
        )
        parser.add_argument("--slug", help="Default: the preset's name.")
        parser.add_argument("--name", help="Default: the preset's title.")
        parser.add_argument("--base-url", help="Required where the preset's URL has <parts>.")
        parser.add_argument("--owner-email", help="Who hears about this integration's alerts.")
        parser.add_argument(
            "--api-version", help="The API version expected (default: the preset's, if any)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would change; write nothing."
        )

    def handle(self, *args, **options):
        try:
            preset = presets.get(options["preset"])
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
        try:
            result = plan(
                preset,
                environment=options["environment"],
                slug=options["slug"],
                name=options["name"],
                base_url=options["base_url"],
                owner_email=options["owner_email"],
                api_version=options["api_version"],
            )
        except PresetError as exc:
            raise CommandError(str(exc)) from None
        title = f"{result.integration_fields['name']} · {options['environment']}"
        if not result.changes:
            self.stdout.write(f"{title}: already up to date with preset {preset.name!r}.")
            return
        for line in result.lines():
            self.stdout.write(line)
        if options["dry_run"]:
            self.stdout.write(f"Dry run: nothing written ({len(result.changes)} change(s)).")
            return
        integration = apply(result, actor="add_integration")
        self.stdout.write(
            self.style.SUCCESS(
                f"{title}: {len(result.changes)} change(s) applied (integration #{integration.pk})."
            )
        )
        refs = sorted(
            {
                name
                for probe in integration.probes.all()
                for name in _refs(probe.headers) + _refs(probe.steps)
            }
        )
        if refs:
            self.stdout.write("Probes read these variables in the worker: " + ", ".join(refs))


def _refs(value) -> list[str]:
    from monitoring import envref

    if isinstance(value, str):
        return envref.names_in(value)
    if isinstance(value, dict):
        return [n for v in value.values() for n in _refs(v)]
    if isinstance(value, list):
        return [n for v in value for n in _refs(v)]
    return []
