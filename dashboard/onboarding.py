"""The newcomer's checklist on the overview: each step ticks itself when Upstream sees it done.

Steps: your e-mail; a working e-mail delivery (a test send); an integration; a first call
(snippets for the SDK, the ingest API and OpenTelemetry, with this install's URL and a key
made on request); a probe; a channel. Once every step is done the list is gone for good
(a done-marker row, so the overview then costs one query for it); a person may also hide it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists

from monitoring.models import Channel, Integration, JobState, Probe, RequestLog, Source

DONE_MARKER = "onboarding:done"
EMAIL_OK_MARKER = "onboarding:email-ok"
HIDDEN_SESSION_KEY = "onboarding_hidden"
FIRST_CALL_SOURCES = (Source.CLIENT, Source.INGEST, Source.OTLP)


@dataclass
class Step:
    key: str
    title: str
    done: bool
    how: str


def _facts() -> tuple[Integration | None, dict[str, bool]]:
    """The first integration and every flag the steps need, in one query (two on an install
    with no integration yet)."""
    flags = {
        "done": Exists(JobState.objects.filter(name=DONE_MARKER)),
        "email_ok": Exists(JobState.objects.filter(name=EMAIL_OK_MARKER)),
        "has_call": Exists(RequestLog.objects.filter(source__in=FIRST_CALL_SOURCES)),
        "has_probe": Exists(Probe.objects.all()),
        "has_channel": Exists(Channel.objects.all()),
    }
    first = Integration.objects.annotate(**flags).order_by("created").first()
    if first is not None:
        return first, {name: getattr(first, name) for name in flags}
    row = JobState.objects.annotate(**flags).values(*flags).first()
    if row is None:  # no JobState row at all: ask each table on its own
        return None, {
            "done": False,
            "email_ok": False,
            "has_call": False,
            "has_probe": Probe.objects.exists(),
            "has_channel": Channel.objects.exists(),
        }
    return None, row


def steps(user, integration: Integration | None, facts: dict[str, bool]) -> list[Step]:
    return [
        Step("email", "Set your e-mail", bool(user.email), "In your profile."),
        Step(
            "delivery", "E-mail delivery works", facts["email_ok"], "Send yourself a test e-mail."
        ),
        Step(
            "integration",
            "Add an integration",
            integration is not None,
            "Pick a provider preset or start blank.",
        ),
        Step(
            "first_call",
            "Send a first call",
            facts["has_call"],
            "Through the SDK, the ingest API or OpenTelemetry.",
        ),
        Step("probe", "Add a probe", facts["has_probe"], "A scheduled check of the provider."),
        Step("channel", "Add a channel", facts["has_channel"], "Where alerts go."),
    ]


def checklist(request) -> dict | None:
    """The checklist's context for the overview, or None once it is done or hidden."""
    if request.session.get(HIDDEN_SESSION_KEY):
        return None
    integration, facts = _facts()
    if facts["done"]:
        return None
    found = steps(request.user, integration, facts)
    if all(s.done for s in found):
        JobState.objects.get_or_create(name=DONE_MARKER)
        return None
    return {
        "steps": found,
        "done": sum(s.done for s in found),
        "total": len(found),
        "site_url": settings.SITE_URL,
        "integration": integration,
        "snippets": snippets(integration, ""),
    }


def snippets(integration: Integration | None, key: str) -> dict[str, str]:
    slug = integration.slug if integration else "stripe"
    env = integration.environment if integration else "production"
    base = (integration.base_url if integration else "") or "https://api.example.com"
    shown_key = key or "up_…  (press Make a key)"
    url = settings.SITE_URL
    return {
        "sdk": (
            "pip install upstream-client\n"
            f"export UPSTREAM_URL={url}\nexport UPSTREAM_API_KEY={shown_key}\n\n"
            "import upstream_client\n"
            f'client = upstream_client.Client(integration="{slug}", environment="{env}",\n'
            f'                                base_url="{base}")\n'
            'client.get("/v1/...")'
        ),
        "curl": (
            f"curl -sS {url}/api/v1/events \\\n"
            f'  -H "Authorization: Bearer {shown_key}" -H "Content-Type: application/json" \\\n'
            f'  -d \'{{"events": [{{"integration": "{slug}", "environment": "{env}", '
            f'"method": "GET", "url": "{base.rstrip("/")}/v1/ping", "status": 200, '
            '"latency_ms": 120}]}\''
        ),
        "otel": (
            f"OTEL_EXPORTER_OTLP_ENDPOINT={url}/otlp\n"
            f'OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer {shown_key}"\n'
            f"OTEL_RESOURCE_ATTRIBUTES=upstream.integration={slug},"
            f"deployment.environment.name={env}"
        ),
    }
