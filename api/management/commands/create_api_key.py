"""Create an API key and print it, alone on the last line (it is never shown again)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from api.models import ApiKey, Scope
from monitoring import audit
from monitoring.models import ActorType, Integration


class Command(BaseCommand):
    help = "Create an API key; the key is printed once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--scope", action="append", choices=Scope.values, required=True)
        parser.add_argument(
            "--integration",
            action="append",
            default=[],
            metavar="SLUG",
            help="An integration the key may write (repeat); none means every one.",
        )
        parser.add_argument(
            "--allow-create",
            action="store_true",
            help="Events for an unknown integration create it.",
        )

    def handle(self, *args, name, scope, integration, allow_create, **options):
        allowed = list(Integration.objects.filter(slug__in=integration))
        missing = set(integration) - {i.slug for i in allowed}
        if missing:
            raise CommandError(f"no integration with slug {', '.join(sorted(missing))}")
        obj, key = ApiKey.issue(name=name, scopes=sorted(set(scope)), allow_create=allow_create)
        obj.integrations.set(allowed)
        audit.record(
            "api_key.create",
            actor="manage.py create_api_key",
            actor_type=ActorType.SYSTEM,
            target=obj,
            after={
                "name": name,
                "prefix": obj.prefix,
                "scopes": obj.scopes,
                "integrations": sorted(integration),
                "allow_create": allow_create,
            },
        )
        self.stdout.write(f"Created API key {obj.prefix}… ({', '.join(obj.scopes)}). Keep it:")
        self.stdout.write(key)
