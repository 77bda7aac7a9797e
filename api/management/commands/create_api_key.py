"""Create an API key and print it, alone on the last line (it is never shown again)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

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
        obj, key = create_key(name=name, scopes=scope, integrations=allowed,
                              allow_create=allow_create)  # fmt: skip
        self.stdout.write(f"Created API key {obj.prefix}… ({', '.join(obj.scopes)}). Keep it:")
        self.stdout.write(key)


def create_key(
    *,
    name: str,
    scopes: list[str],
    integrations: list[Integration],
    allow_create: bool = False,
    request=None,
) -> tuple[ApiKey, str]:
    """Issue a key and audit it; the dashboard's API keys page calls this too.

    With a request, the signed-in user is the actor (and the key's creator); without one,
    this command is.
    """
    user = getattr(request, "user", None) if request is not None else None
    with transaction.atomic():
        obj, key = ApiKey.issue(
            name=name,
            scopes=sorted(set(scopes)),
            allow_create=allow_create,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        obj.integrations.set(integrations)
        after = {
            "name": name,
            "prefix": obj.prefix,
            "scopes": obj.scopes,
            "integrations": sorted(i.slug for i in integrations),
            "allow_create": allow_create,
        }
        if request is not None:
            audit.record("api_key.create", request=request, target=obj, after=after)
        else:
            audit.record(
                "api_key.create",
                actor="manage.py create_api_key",
                actor_type=ActorType.SYSTEM,
                target=obj,
                after=after,
            )
    return obj, key
