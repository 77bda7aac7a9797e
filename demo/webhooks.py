"""The demo's webhooks: endpoints on two demo integrations, their rules, a day of history.

``setup_demo_webhooks()`` (run by ``python manage.py demo``) gives Sandbox CRM a Standard
Webhooks endpoint whose secret is the ``${UPSTREAM_SECRET_DEMO_WEBHOOK}`` reference, and
Paubox a secret-URL endpoint (scheme ``none``, as Paubox signs nothing), plus one
all-integrations rule of each webhook kind; idempotent. ``targets()`` tells the sandbox's
sender (demo.sandbox.webhooks) where to post. The secret is a fixed demo value: ``serve
--demo`` puts it in the environment of the web process, which verifies with it.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from demo.sandbox.webhooks import WRONG_SECRET_WINDOW, Target
from demo.scenario import demo_integrations
from monitoring import rollup
from monitoring.models import (
    AlertRule,
    JobState,
    Outcome,
    RequestLog,
    RuleKind,
    Source,
    WebhookEndpoint,
    WebhookScheme,
    WebhookSecret,
)
from monitoring.webhooks import secrets

SECRET_VARIABLE = "UPSTREAM_SECRET_DEMO_WEBHOOK"  # noqa: S105 (a variable name)
# A demo value, like the sandbox's sk_test_ keys: 32 key bytes, base64, after whsec_.
DEMO_SECRET = "whsec_dXBzdHJlYW0tZGVtby13ZWJob29rLXNlY3JldC0zMmI="  # noqa: S105
SEEDED_MARKER = "demo:webhooks"

# (integration slug, endpoint name, scheme, event types, average seconds between events)
ENDPOINTS = (
    (
        "sandbox-crm",
        "CRM events",
        WebhookScheme.STANDARD,
        ("contact.created", "contact.updated", "deal.won", "deal.lost"),
        20.0,
    ),
    (
        "paubox",
        "Message events",
        WebhookScheme.NONE,
        ("message.delivered", "message.opened", "message.bounced"),
        30.0,
    ),
)
RULES = (
    ("Webhook signature failures", RuleKind.WEBHOOK_SIGNATURE_FAILURES, {}),
    ("Webhooks stopped", RuleKind.WEBHOOKS_STOPPED, {}),
    ("Webhook delivery lag", RuleKind.WEBHOOK_LAG, {"threshold_ms": 60_000}),
)


def ensure_secret_in_environment() -> None:
    """The demo secret for whoever verifies or signs in this process (an own value wins)."""
    os.environ.setdefault(SECRET_VARIABLE, DEMO_SECRET)


def setup_demo_webhooks() -> list[WebhookEndpoint]:
    """The demo's webhook endpoints and rules, created if missing (by integration and name)."""
    ensure_secret_in_environment()
    integrations = demo_integrations()
    made = []
    with transaction.atomic():
        for slug, name, scheme, events, every_s in ENDPOINTS:
            integration = integrations.get(slug)
            if integration is None:
                continue
            endpoint, created = WebhookEndpoint.objects.get_or_create(
                integration=integration,
                name=name,
                defaults={"scheme": scheme, "event_types": "\n".join(events)},
            )
            if created and scheme == WebhookScheme.STANDARD:
                secrets.create(endpoint, reference=f"${{{SECRET_VARIABLE}}}")
            if endpoint.cadence_s is None:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(cadence_s=every_s)
            made.append(endpoint)
        for name, kind, params in RULES:
            AlertRule.objects.get_or_create(
                name=name, kind=kind, integration=None, defaults={"params": params}
            )
    return made


def targets(upstream_url: str) -> list[Target]:
    """Where the sandbox's sender posts: one Target per demo endpoint, with its secret."""
    ensure_secret_in_environment()
    base = upstream_url.rstrip("/")
    spec = {(slug, name): (events, every) for slug, name, _, events, every in ENDPOINTS}
    found = []
    endpoints = WebhookEndpoint.objects.filter(active=True).select_related("integration")
    for endpoint in endpoints.order_by("pk"):
        key = (endpoint.integration.slug, endpoint.name)
        if key not in spec:
            continue
        events, every_s = spec[key]
        standard = endpoint.scheme == WebhookScheme.STANDARD
        secret = ""
        if standard:
            held = WebhookSecret.objects.filter(endpoint=endpoint).order_by("-created").first()
            secret = (secrets.resolve(held) if held else None) or DEMO_SECRET
        found.append(
            Target(
                name=f"{endpoint.integration.name}: {endpoint.name}",
                url=f"{base}{endpoint.path}",
                scheme="standard" if standard else "none",
                secret=secret,
                events=events,
                every_s=every_s,
                wrong_secret=WRONG_SECRET_WINDOW if standard else None,
            )
        )
    return found


def seed_webhook_history(hours: int = 24, *, now: datetime | None = None, seed: int = 15) -> int:
    """A day of verified deliveries (and the odd forged one) for the demo endpoints, once.

    Rows and buckets in one transaction, as the recorder writes them; returns the rows
    written (0 when already seeded or without endpoints).
    """
    if JobState.objects.filter(name=SEEDED_MARKER).exists():
        return 0
    now = (now or timezone.now()).astimezone(UTC).replace(second=0, microsecond=0)
    rng = random.Random(seed)
    spec = {(slug, name): (events, every) for slug, name, _, events, every in ENDPOINTS}
    rows: list[RequestLog] = []
    endpoints = WebhookEndpoint.objects.select_related("integration")
    for endpoint in endpoints:
        key = (endpoint.integration.slug, endpoint.name)
        if key not in spec:
            continue
        events, every_s = spec[key]
        signed = endpoint.scheme == WebhookScheme.STANDARD
        at = now - timedelta(hours=hours)
        while at < now:
            at += timedelta(seconds=rng.expovariate(1 / every_s))
            # Quieter at night (UTC), like the calls in demo.scenario.
            hour = at.hour + at.minute / 60
            if rng.random() > 0.7 + 0.3 * math.sin((hour - 8) / 24 * 2 * math.pi):
                continue
            forged = signed and rng.random() < 0.002
            lag = rng.lognormvariate(-0.5, 0.8) * 1000 if signed else 0.0
            rows.append(
                RequestLog(
                    integration=endpoint.integration,
                    created=at,
                    source=Source.WEBHOOK,
                    method="POST",
                    scheme="http",
                    host="webhook",
                    path="/unknown" if forged else f"/{rng.choice(events)}",
                    status=401 if forged else 202,
                    outcome=Outcome.CLIENT_ERROR if forged else Outcome.OK,
                    error_code="bad_signature" if forged else "",
                    latency_ms=0.0 if forged else round(lag, 1),
                    response_bytes=rng.randint(180, 900),
                    call_id="msg_" + uuid.UUID(int=rng.getrandbits(128)).hex[:24],
                )
            )
    if not rows:
        return 0
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows, batch_size=2000)
        rollup.apply_rows(rows)
        for endpoint in endpoints:
            if endpoint.last_delivery_at is None:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(last_delivery_at=now)
        JobState.objects.create(name=SEEDED_MARKER, value=len(rows))
    return len(rows)
