"""List the provider presets that add_integration can apply, or show one in full."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from monitoring import presets


class Command(BaseCommand):
    help = "List the provider presets (or show one: `presets paubox`)."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="Show this preset in full.")

    def handle(self, *args: object, name: str | None = None, **options: object) -> None:
        if name:
            try:
                preset = presets.get(name)
            except KeyError as exc:
                raise CommandError(exc.args[0]) from None
            self._show(preset)
            return
        for preset in presets.ALL.values():
            default = " (default)" if preset.name == presets.DEFAULT else ""
            self.stdout.write(f"{preset.name:<12} {preset.title}{default}  {preset.base_url}")

    def _show(self, preset: presets.Preset) -> None:
        schemes = ", ".join(f"{s} …".strip() for s in preset.auth_schemes if s) or "(the key)"
        facts = [
            ("base URL", preset.base_url),
            ("auth", f"{preset.auth_header}: {schemes}"),
            ("rate-limit headers", ", ".join(preset.rate_limit_headers) or "none published"),
            ("version header", preset.version_header or "none"),
            ("pagination", preset.pagination or "—"),
            ("status page", preset.status_page or "—"),
            ("webhooks", preset.webhook_scheme or preset.webhook_note or "—"),
            ("token lifetime", f"{preset.token_lifetime_s} s" if preset.token_lifetime_s else "—"),
            ("limits", ", ".join(f"{k}={v}" for k, v in preset.limits.items()) or "—"),
            ("rules", ", ".join(preset.rules)),
            ("probes", ", ".join(p["name"] for p in preset.probes) or "—"),
            ("templates", f"{len(preset.templates)} documented endpoints"),
        ]
        self.stdout.write(f"{preset.title} ({preset.name})")
        for label, value in facts:
            self.stdout.write(f"  {label:<19} {value}")
        if preset.docs:
            self.stdout.write(f"  {preset.docs}")
