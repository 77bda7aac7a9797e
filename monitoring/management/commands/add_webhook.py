"""Create a webhook endpoint for an integration; print its receiving path on the last line."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from monitoring import audit
from monitoring.models import (
    Environment,
    Integration,
    SignatureEncoding,
    WebhookEndpoint,
    WebhookScheme,
)
from monitoring.webhooks import schemes
from monitoring.webhooks import secrets as hook_secrets


class Command(BaseCommand):
    help = (
        "Create a webhook endpoint: providers POST to the path printed on the last line "
        "(/hooks/<token>/). The signing secret is named as a ${UPSTREAM_SECRET_…} variable "
        "(--secret-env) and never stored; add more secrets (rotation) in the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("--integration", required=True, help="The integration's slug.")
        parser.add_argument(
            "--environment", required=True, help="One of: " + ", ".join(Environment.values)
        )
        parser.add_argument(
            "--scheme", required=True, help="One of: " + ", ".join(WebhookScheme.values)
        )
        parser.add_argument(
            "--secret-env",
            metavar="NAME",
            help="The environment variable holding the signing secret, e.g. UPSTREAM_SECRET_X.",
        )
        parser.add_argument("--name", default="", help="A label for the endpoint.")
        parser.add_argument("--header", default="", help="hmac_sha256: the signature header.")
        parser.add_argument(
            "--encoding",
            default=SignatureEncoding.HEX,
            help="hmac_sha256: " + " or ".join(SignatureEncoding.values),
        )
        parser.add_argument(
            "--timestamp-header", default="", help="hmac_sha256: a signed timestamp header."
        )
        parser.add_argument("--replay-window", type=int, default=300, help="Seconds (default 300).")

    def handle(self, *args, **options):
        environment, key = options["environment"], options["scheme"]
        if environment not in Environment.values:
            raise CommandError(
                f"--environment {environment!r}: use one of {', '.join(Environment.values)}."
            )
        if key not in schemes.SCHEMES:
            raise CommandError(f"--scheme {key!r}: use one of {', '.join(WebhookScheme.values)}.")
        scheme = schemes.get(key)
        integration = Integration.objects.filter(
            slug=options["integration"], environment=environment
        ).first()
        if integration is None:
            raise CommandError(
                f"No integration {options['integration']!r} in {environment} "
                "(see `manage.py add_integration`)."
            )
        if options["replay_window"] < 1:
            raise CommandError("--replay-window must be at least 1 second.")
        settings = schemes.Settings(
            options["replay_window"],
            options["header"],
            options["encoding"],
            options["timestamp_header"],
        )
        problems = scheme.check_settings(settings)
        if problems:
            raise CommandError(f"--scheme {key}: " + "; ".join(problems) + ".")
        secret_env = options["secret_env"]
        if scheme.uses_secrets and not secret_env:
            raise CommandError(f"--scheme {key} signs deliveries: give --secret-env NAME.")
        if not scheme.uses_secrets and secret_env:
            raise CommandError(f"--scheme {key} takes no secret; leave out --secret-env.")
        try:
            with transaction.atomic():
                endpoint = WebhookEndpoint.objects.create(
                    integration=integration,
                    name=options["name"][:100],
                    scheme=key,
                    header_name=settings.header_name,
                    signature_encoding=settings.signature_encoding,
                    timestamp_header=settings.timestamp_header,
                    replay_window_s=settings.replay_window_s,
                )
                secret = None
                if secret_env:
                    secret = hook_secrets.create(endpoint, reference=f"${{{secret_env.strip()}}}")
                audit.record(
                    audit.Actions.CREATE,
                    actor="add_webhook",
                    target=endpoint,
                    after=audit.snapshot(endpoint, ["integration", "name", "scheme"])
                    | {"secret": secret.reference if secret else None},
                )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"{integration}: {scheme.label} endpoint #{endpoint.pk} created.")
        if secret is not None:
            self.stdout.write(
                f"Secret {secret.reference}: {hook_secrets.live_fingerprint(secret)}."
            )
        self.stdout.write(endpoint.path)
