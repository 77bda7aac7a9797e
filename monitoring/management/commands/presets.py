"""List the provider presets that add_integration can apply."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from monitoring import providers


class Command(BaseCommand):
    help = "List the provider presets."

    def handle(self, *args: object, **options: object) -> None:
        for preset in providers.ALL.values():
            default = " (default)" if preset.name == providers.DEFAULT else ""
            self.stdout.write(f"{preset.name:<12} {preset.title}{default}  {preset.base_url}")
