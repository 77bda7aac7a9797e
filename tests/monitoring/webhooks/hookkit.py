"""Helpers for the webhook tests: endpoints with secrets, senders signing as the providers do."""

from __future__ import annotations

import base64
import json
import secrets as std_secrets
import time
from datetime import UTC, datetime

import standardwebhooks
import stripe
import svix

from monitoring import recorder
from monitoring.models import Integration, RequestLog, WebhookEndpoint
from monitoring.webhooks import secrets as hook_secrets

KEY = "upstream-test-encryption-key-0123456789"


def whsec() -> str:
    return "whsec_" + base64.b64encode(std_secrets.token_bytes(24)).decode()


def make_endpoint(
    scheme: str, *, integration: Integration | None = None, **extra
) -> WebhookEndpoint:
    integration = (
        integration
        or Integration.objects.get_or_create(
            slug="acme",
            environment="production",
            defaults={"name": "Acme", "base_url": "https://api.acme.test"},
        )[0]
    )
    return WebhookEndpoint.objects.create(integration=integration, scheme=scheme, **extra)


def add_secret(endpoint: WebhookEndpoint, value: str, monkeypatch=None, **extra):
    """Store ``value`` encrypted (with the test key), or as a reference when ``monkeypatch``
    is given (an UPSTREAM_SECRET_ variable set to the value)."""
    if monkeypatch is None:
        return hook_secrets.create(endpoint, value=value, **extra)
    name = f"UPSTREAM_SECRET_HOOK_{endpoint.pk}_{endpoint.secrets.count()}"
    monkeypatch.setenv(name, value)
    return hook_secrets.create(endpoint, reference=f"${{{name}}}", **extra)


def body_of(event_type: str = "invoice.paid", event_id: str | None = None) -> str:
    return json.dumps({"id": event_id or f"evt_{std_secrets.token_hex(6)}", "type": event_type})


def standard_headers(
    secret: str,
    body: str,
    *,
    msg_id: str | None = None,
    ts: float | None = None,
    prefix: str = "webhook-",
) -> dict[str, str]:
    """Headers as a Standard Webhooks (or, with ``prefix="svix-"``, a Svix) sender makes them,
    signed by the provider's own library."""
    msg_id = msg_id or f"msg_{std_secrets.token_hex(8)}"
    when = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    signer = svix.Webhook(secret) if prefix == "svix-" else standardwebhooks.Webhook(secret)
    return {
        f"{prefix}id": msg_id,
        f"{prefix}timestamp": str(int(when.timestamp())),
        f"{prefix}signature": signer.sign(msg_id, when, body),
        "content-type": "application/json",
    }


def stripe_headers(secret: str, body: str, *, ts: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=ts)
    return {"stripe-signature": header, "content-type": "application/json"}


def recorded(**filters) -> list[RequestLog]:
    recorder.flush(timeout=30)
    return list(RequestLog.objects.filter(source="webhook", **filters).order_by("id"))
