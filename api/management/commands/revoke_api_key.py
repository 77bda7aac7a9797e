"""Revoke an API key by its visible prefix."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from api.models import ApiKey
from monitoring import audit
from monitoring.models import ActorType


class Command(BaseCommand):
    help = "Revoke the API key with this prefix (e.g. up_AbCd1234)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        obj = ApiKey.objects.filter(prefix=prefix.strip().rstrip("…")).first()
        if obj is None:
            raise CommandError(f"no API key with prefix {prefix!r}")
        if obj.revoked is None:
            ApiKey.objects.filter(pk=obj.pk).update(revoked=timezone.now())
            audit.record(
                "api_key.revoke",
                actor="manage.py revoke_api_key",
                actor_type=ActorType.SYSTEM,
                target=obj,
                after={"prefix": obj.prefix, "name": obj.name},
            )
        self.stdout.write(f"Revoked API key {obj.prefix}… ({obj.name}).")
