"""The demo scenario: its integrations and probes, seven days of history, live traffic.

The demo integrations are built from presets, through the same code as
``manage.py add_integration`` (``monitoring.presets.setup``): Stripe in production and in
staging (the sandbox's own Stripe-like API), Paubox and OpenPanel (the sandbox's
personalities, with their real paths, auth and errors) and a generic CRM. ``seed_history()``
bulk-inserts raw request rows (and their metric buckets, in the same transaction) — a 401
spike two days ago, an expired OpenPanel token yesterday, a deprecated endpoint, rate-limit
headroom where the provider publishes it, the odd 5xx and timeout — once; a second call does
nothing. ``setup_demo_probes()`` gives the same integrations probes against the sandbox
provider (the presets' own for Paubox and OpenPanel). ``run_traffic()`` calls the sandbox
through ``MonitoredClient`` at a gentle rate until told to stop (``manage.py demo_traffic``).

History and live traffic tell one story, so the scorecards differ for reasons one can see:
the production integrations call the sandbox's TLS port (its CA is made when the sandbox
starts), Stripe's staging integration still uses plain http, Stripe's production client
retries 401s (its retry policy lists 401), and OpenPanel's workers re-send refused sign-ins
at once, ignoring Retry-After. Probes stay on the plain-http port: the probe worker trusts
only the public CAs, never the demo's.
"""

from __future__ import annotations

import logging
import math
import os
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from upstream_client.retry import RetryPolicy

from demo.sandbox.personalities import (
    OPENPANEL_APP_PASSWORD,
    OPENPANEL_APP_USER,
    OPENPANEL_PASSWORD,
    OPENPANEL_USER,
    PAUBOX_KEY,
    PAUBOX_USER,
)
from monitoring import attempts, presets, rollup, storage
from monitoring.models import Environment, Grain, Integration, JobState, Outcome, Probe, Source
from monitoring.presets import setup

logger = logging.getLogger(__name__)

SANDBOX_URL = "http://127.0.0.1:8765"
# The same sandbox over TLS (``python -m demo.sandbox --tls-port``), where most demo calls go.
SANDBOX_TLS_URL = "https://127.0.0.1:8766"
SEEDED_MARKER = "demo:history"
API_VERSION = "2026-01-01"
# The sandbox personalities' demo credentials, handed to the probe worker as the variables
# the presets' probes name (``serve --demo`` exports them; they are the fake's own logins).
DEMO_SECRETS = {
    "UPSTREAM_SECRET_PAUBOX_API_KEY": PAUBOX_KEY,
    "UPSTREAM_SECRET_OPENPANEL_USER": OPENPANEL_USER,
    "UPSTREAM_SECRET_OPENPANEL_PASSWORD": OPENPANEL_PASSWORD,
}


def demo_ca_file() -> Path:
    """Where the sandbox writes its CA certificate for the demo's clients (under var/)."""
    return Path(settings.VAR_DIR) / "demo-sandbox-ca.pem"


def export_demo_secrets(environ: dict[str, str] | None = None) -> None:
    """Put the demo's probe secrets into the environment the worker inherits (unless set)."""
    environ = os.environ if environ is None else environ
    for name, value in DEMO_SECRETS.items():
        environ.setdefault(name, value)


@dataclass(frozen=True)
class _Failure:
    """How one of the provider's failures looks in the request log."""

    code: str
    message: str
    body: str
    status: int | None = None  # None: 404 for a GET, 400 otherwise


def _nested(status: int, code: str, message: str) -> _Failure:
    message = message or ("No such resource." if status == 404 else "The request was invalid.")
    return _Failure(code, message, f'{{"error":{{"code":"{code}","message":"{message}"}}}}')


@dataclass(frozen=True)
class _Endpoint:
    method: str
    path: str
    weight: float
    latency_ms: float  # median
    error_code: str = "resource_missing"
    deprecated: bool = False
    # The provider's own answer when this endpoint fails (None: the Stripe-like nested one).
    failure: _Failure | None = None


@dataclass(frozen=True)
class DemoIntegration:
    slug: str
    name: str
    environment: str
    key: str  # what the traffic authenticates with
    calls_per_minute: float  # in the seeded history; live traffic splits --rate by these
    endpoints: tuple[_Endpoint, ...]
    preset: str = presets.DEFAULT
    base_path: str = ""  # under the sandbox URL: where this provider's API lives
    # The preset's probes where the sandbox plays the provider; else the demo's own.
    preset_probes: bool = False
    # Rate-limit headers published (the sandbox's Stripe-like API does; Paubox does not).
    rate_limited: bool = True
    api_version: str = API_VERSION
    server_error: _Failure | None = None  # the provider's 5xx body (None: the nested one)
    # How the demo names it (its dicts' keys): the slug, unless a provider has two.
    handle: str = ""
    tls: bool = True  # calls the sandbox's TLS port; False: plain http
    # The mistakes the scorecard is there to catch, one integration each:
    retries_401: bool = False  # its retry policy lists 401 (a retry never fixes a bad key)
    ignores_retry_after: bool = False  # re-sends a refused sign-in at once

    def __post_init__(self) -> None:
        if not self.handle:
            object.__setattr__(self, "handle", self.slug)

    def url(self, sandbox_url: str, tls_url: str | None) -> str:
        """The sandbox origin this integration calls."""
        return (tls_url if self.tls and tls_url else sandbox_url).rstrip("/")


_PAUBOX = "/paubox/v1/{username}"
_PANEL = "/openpanel/api"
_BAD_TOKEN = _Failure(
    "", "Missing or invalid token", '{"error":"Missing or invalid token"}', status=401
)

# The demo probes (setup_demo_probes) use these integrations too: probes and client
# traffic then meet on one integration, which is the point of the product.
DEMO_INTEGRATIONS = (
    DemoIntegration(
        "stripe",
        "Stripe",
        Environment.PRODUCTION,
        "sk_test_demo_stripe",
        1.2,
        (
            _Endpoint("GET", "/v1/customers", 3, 90),
            _Endpoint("GET", "/v1/customers/{customer}", 4, 70),
            _Endpoint("POST", "/v1/charges", 2, 140, error_code="card_declined"),
            _Endpoint("GET", "/v1/legacy/report", 0.5, 220, deprecated=True),
        ),
        preset="stripe",
        retries_401=True,
    ),
    # Staging was never moved to https: the scorecard names its plain-http endpoints.
    DemoIntegration(
        "stripe",
        "Stripe",
        Environment.STAGING,
        "sk_test_demo_stripe_staging",
        0.3,
        (
            _Endpoint("GET", "/v1/customers", 3, 90),
            _Endpoint("GET", "/v1/customers/{customer}", 4, 70),
            _Endpoint("POST", "/v1/charges", 2, 140, error_code="card_declined"),
        ),
        preset="stripe",
        handle="stripe-staging",
        tls=False,
    ),
    DemoIntegration(
        "paubox",
        "Paubox",
        Environment.PRODUCTION,
        PAUBOX_KEY,
        0.8,
        (
            _Endpoint(
                "POST",
                f"{_PAUBOX}/messages",
                3,
                160,
                failure=_Failure(
                    "400",
                    "Error validating message: message 0: recipients can't be blank",
                    '{"errors":[{"code":400,"title":"Error validating message",'
                    '"details":"message 0: recipients can\'t be blank"}]}',
                ),
            ),
            _Endpoint(
                "GET",
                f"{_PAUBOX}/message_receipt",
                2,
                60,
                failure=_Failure(
                    "404",
                    "Message was not found: No message with id 3f2c…",
                    '{"errors":[{"code":404,"title":"Message was not found",'
                    '"details":"No message with id 3f2c…"}]}',
                ),
            ),
            _Endpoint(
                "GET",
                f"{_PAUBOX}/dynamic_templates",
                1,
                40,
                failure=_Failure(
                    "",
                    "Invalid or missing API key",
                    '{"message":"Invalid or missing API key"}',
                    status=401,
                ),
            ),
            _Endpoint(
                "POST",
                f"{_PAUBOX}/bulk_messages",
                0.3,
                420,
                failure=_Failure(
                    "400",
                    "Error validating message: message 3: recipients can't be blank",
                    '{"errors":[{"code":400,"title":"Error validating message",'
                    '"details":"message 3: recipients can\'t be blank"}]}',
                ),
            ),
        ),
        preset="paubox",
        base_path=f"/paubox/v1/{PAUBOX_USER}",
        preset_probes=True,
        rate_limited=False,
        api_version="",
        server_error=_Failure("", "Service Unavailable", '{"message":"Service Unavailable"}'),
    ),
    DemoIntegration(
        "openpanel",
        "OpenPanel",
        Environment.PRODUCTION,
        "",  # signs in for a 15-minute JWT
        0.5,
        (
            _Endpoint("GET", f"{_PANEL}/whoami", 3, 35, failure=_BAD_TOKEN),
            _Endpoint("GET", f"{_PANEL}/users", 2, 80, failure=_BAD_TOKEN),
            _Endpoint(
                "GET",
                f"{_PANEL}/users/{{username}}",
                2,
                50,
                failure=_Failure("", "User alice not found", '{"error":"User alice not found"}'),
            ),
            _Endpoint(
                "POST",
                f"{_PANEL}/",
                0.4,
                120,
                failure=_Failure(
                    "",
                    "Too many login attempts. Please try again later.",
                    '{"error":"Too many login attempts. Please try again later."}',
                    status=429,
                ),
            ),
        ),
        preset="openpanel",
        base_path="/openpanel/api/",
        preset_probes=True,
        rate_limited=False,
        api_version="",
        server_error=_Failure("", "Internal server error", '{"error":"Internal server error"}'),
        ignores_retry_after=True,
    ),
    DemoIntegration(
        "sandbox-crm",
        "Sandbox CRM",
        Environment.SANDBOX,
        "sk_test_demo_crm_readonly",
        0.3,
        (
            _Endpoint("GET", "/v1/customers", 2, 110),
            _Endpoint("GET", "/v1/customers/{id}", 3, 80),
        ),
    ),
)


def demo_integrations(
    sandbox_url: str = SANDBOX_URL, tls_url: str | None = SANDBOX_TLS_URL
) -> dict[str, Integration]:
    """The demo integrations by handle, created from their presets if missing (by slug and
    environment), with the base URL they are called at (the TLS one unless ``tls=False``).

    The same plan-and-apply as ``manage.py add_integration`` (audited as the demo), so what a
    newcomer sees is what the presets give; a second call changes nothing. The presets'
    probes come from ``setup_demo_probes``, on the plain-http port.
    """
    found = {}
    for demo in DEMO_INTEGRATIONS:
        plan = setup.plan(
            presets.get(demo.preset),
            environment=demo.environment,
            slug=demo.slug,
            name=demo.name,
            base_url=demo.url(sandbox_url, tls_url) + (demo.base_path or "/"),
            api_version=demo.api_version or None,
            probes=False,
        )
        if plan.changes:
            found[demo.handle] = setup.apply(plan, actor="demo")
        else:
            found[demo.handle] = plan.integration
    return found


def seed_history(days: int = 7, *, now: datetime | None = None, seed: int = 42) -> int:
    """Write ``days`` of demo history once; return the rows written (0 if already seeded).

    One transaction, so an interrupted seed leaves nothing behind and is simply redone.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    if JobState.objects.filter(name=SEEDED_MARKER).exists():
        return 0
    now = (now or timezone.now()).astimezone(UTC).replace(second=0, microsecond=0)
    rng = random.Random(seed)
    integrations = demo_integrations()
    start = now - timedelta(days=days)
    # Stripe's revoked key two days ago; OpenPanel traffic on an expired token yesterday (by
    # handle: Stripe's staging side had neither).
    episodes = {
        "stripe": (_revoked_key, (now - timedelta(days=2)).replace(hour=13, minute=5), 25),
        "openpanel": (_expired_token, (now - timedelta(days=1)).replace(hour=9, minute=40), 20),
    }
    # Minute buckets older than their retention would be pruned at once: skip them.
    minute_horizon = now - timedelta(days=settings.UPSTREAM["RETAIN_MINUTE_DAYS"])
    recent = rollup.Batch()
    older = rollup.Batch((Grain.HOUR, Grain.DAY))
    written = 0
    with transaction.atomic():
        batch: list[dict] = []
        minute = start
        while minute < now:
            counts = recent if minute >= minute_horizon else older
            for demo in DEMO_INTEGRATIONS:
                pk = integrations[demo.handle].pk
                episode = None
                if demo.handle in episodes:
                    fail, since, length = episodes[demo.handle]
                    if since <= minute < since + timedelta(minutes=length):
                        episode = fail
                for row in _minute_rows(demo, pk, minute, episode, rng):
                    # Columns the demo does not fill (streams, token budgets …) get defaults.
                    row = attempts.to_row(row)
                    batch.append(row)
                    counts.add(
                        pk,
                        row["created"].timestamp(),
                        row["source"],
                        rollup.endpoint_of(row["method"], row["path"]),
                        row["status"],
                        row["outcome"],
                        row["latency_ms"],
                        row["attempt"],
                        row["deprecated"],
                        row["ratelimit_remaining"],
                        row["ratelimit_limit"],
                    )
            if len(batch) >= 5000:
                storage.insert_rows(batch, rollup=False)
                written += len(batch)
                batch = []
            minute += timedelta(minutes=1)
        storage.insert_rows(batch, rollup=False)
        written += len(batch)
        # Aggregated over the whole history first: each bucket is written once.
        rollup.write(older)
        rollup.write(recent)
        JobState.objects.create(name=SEEDED_MARKER, value=written)
    return written


def _revoked_key(base: dict, endpoint: _Endpoint) -> dict:
    failure = _nested(401, "invalid_api_key", "The API key sk_test****tripe has been revoked.")
    return _failed(base, 401, failure)


def _expired_token(base: dict, endpoint: _Endpoint) -> dict | None:
    # OpenPanel answers an expired JWT as it answers a bad one; the token's age tells them
    # apart, which is what the diagnosis stores as its own code.
    if endpoint.method == "POST":
        return None  # signing in still works: nobody did
    failure = _Failure("token_expired", "Missing or invalid token",
                       '{"error":"Missing or invalid token"}')  # fmt: skip
    return _failed(base, 401, failure)


def _minute_rows(
    demo: DemoIntegration,
    integration_id: int,
    minute: datetime,
    episode: Callable[[dict, _Endpoint], dict | None] | None,
    rng,
) -> list[dict]:
    # Busier in the (UTC) working day, quieter at night.
    hour = minute.hour + minute.minute / 60
    rate = demo.calls_per_minute * (1 + 0.6 * math.sin((hour - 8) / 24 * 2 * math.pi))
    count = int(rate) + (rng.random() < rate - int(rate))
    weights = [e.weight for e in demo.endpoints]
    rows = []
    for _ in range(count):
        endpoint = rng.choices(demo.endpoints, weights)[0]
        created = minute + timedelta(seconds=rng.uniform(0, 59.999))
        rows.extend(_call_rows(demo, integration_id, endpoint, created, episode, rng))
    return rows


def _call_rows(demo, integration_id, endpoint, created, episode, rng) -> list[dict]:
    call_id = uuid.UUID(int=rng.getrandbits(128)).hex
    latency = min(rng.lognormvariate(math.log(endpoint.latency_ms), 0.6), 9_000)
    limited = demo.rate_limited
    origin = urlsplit(demo.url(SANDBOX_URL, SANDBOX_TLS_URL))
    base = {
        "created": created,
        "integration_id": integration_id,
        "source": Source.CLIENT,
        "method": endpoint.method,
        "scheme": origin.scheme,
        "host": origin.netloc,
        "path": endpoint.path,
        "query": "limit=10" if endpoint.path == "/v1/customers" else "",
        "status": 200,
        "outcome": Outcome.OK,
        "latency_ms": round(latency, 2),
        "request_bytes": 64 if endpoint.method == "POST" else 0,
        "response_bytes": rng.randint(300, 4000),
        "error_code": "",
        "error_message": "",
        "error_body": "",
        "call_id": call_id,
        "attempt": 1,
        "backoff_ms": 0.0,
        "ratelimit_limit": 600 if limited else None,
        "ratelimit_remaining": rng.randint(350, 599) if limited else None,
        "ratelimit_reset": (
            created.replace(second=0, microsecond=0) + timedelta(minutes=1) if limited else None
        ),
        "retry_after_s": None,
        "deprecated": False,
        "deprecation_at": None,
        "sunset_at": None,
        "deprecation_link": "",
        "api_version": demo.api_version,
    }
    if endpoint.deprecated:
        base["deprecated"] = True
        # The sandbox's own dates: deprecated 30 days before today, sunset 60 days after.
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        base["deprecation_at"] = midnight - timedelta(days=30)
        base["sunset_at"] = midnight + timedelta(days=60)
        base["deprecation_link"] = f"{origin.scheme}://{origin.netloc}/docs/migrate"
    roll = rng.random()
    if episode is not None and roll < 0.7:
        failed = episode(base, endpoint)
        if failed is not None:
            return [failed]
    signin = demo.ignores_retry_after and endpoint.failure and endpoint.failure.status == 429
    if signin and roll > 0.88:  # a token ran out and every worker signed in at once
        return _hammered(base, endpoint.failure, rng)
    if roll < 0.008:
        status = rng.choice((500, 502, 503))
        first = _failed(base, status, _server_error(demo, status))
        if endpoint.method != "GET":
            return [first]
        retry = {**base, "created": created + timedelta(seconds=1.2), "attempt": 2}
        retry["backoff_ms"] = 1000.0
        return [first, retry]
    if roll < 0.010:
        return [
            {
                **base,
                "status": None,
                "outcome": Outcome.TIMEOUT,
                "latency_ms": 10_000.0,
                "response_bytes": None,
                "error_message": "ReadTimeout: timed out",
                "ratelimit_limit": None,
                "ratelimit_remaining": None,
                "ratelimit_reset": None,
                "api_version": "",
            }
        ]
    if roll < 0.016:
        status = 404 if endpoint.method == "GET" else 400
        if endpoint.failure is not None:
            return [_failed(base, endpoint.failure.status or status, endpoint.failure)]
        return [_failed(base, status, _nested(status, endpoint.error_code, ""))]
    if roll < 0.018 and limited:
        failure = _nested(429, "rate_limited", "Rate limit of 600 requests per 60 s exceeded.")
        limited_row = _failed(base, 429, failure)
        limited_row.update(ratelimit_remaining=0, retry_after_s=2.0)
        retry = {**base, "created": created + timedelta(seconds=2.1), "attempt": 2}
        retry["backoff_ms"] = 2000.0
        return [limited_row, retry]
    if roll < 0.024 and demo.retries_401:
        return _retried_401(base, rng)
    return [base]


# How live traffic's retry policy (below) spaces its tries, and how many it makes. Waits
# double without jitter: full jitter now and then draws a wait under 50 ms, which the
# scorecard counts as an immediate retry, and only OpenPanel is meant to retry too soon.
RETRY = RetryPolicy(max_attempts=3, backoff=0.2, max_backoff=2, max_total_wait=8, jitter=None)
# Stripe's production client tries every failure twice, 401 included: the mistake its
# scorecard's "Errors handled" check finds. (Twice, not three times: in a revoked-key burst
# a second retry would outnumber the first tries, a retry storm, which is another check's.)
RETRY_401 = RetryPolicy(
    max_attempts=2, backoff=0.2, max_backoff=2, max_total_wait=8, jitter=None,
    retry_on=RETRY.retry_on | {401},
)  # fmt: skip
# OpenPanel's sign-in: a refused worker sends the same sign-in again this soon, this often,
# whatever Retry-After says (the "Retries with exponential backoff" check finds it).
HAMMER_WAIT_S = 0.25
HAMMER_RETRIES = 3


def _retried_401(base: dict, rng: random.Random) -> list[dict]:
    # Now and then a worker still holds a key rotated away; the 401 is retried, in vain.
    failure = _nested(401, "invalid_api_key", "Invalid API key provided: sk_test_****ripe.")
    return _retried(base, failure, 401, RETRY_401.max_attempts, rng)


def _hammered(base: dict, failure: _Failure, rng: random.Random) -> list[dict]:
    rows = _retried(base, failure, 429, 1 + HAMMER_RETRIES, rng, wait_s=HAMMER_WAIT_S)
    asked = float(rng.randint(15, 58))  # OpenPanel's Retry-After: when the minute frees up
    for row in rows:
        elapsed = (row["created"] - base["created"]).total_seconds()
        row["retry_after_s"] = float(max(1, math.ceil(asked - elapsed)))
    return rows


def _retried(base, failure, status, tries, rng, *, wait_s: float | None = None) -> list[dict]:
    """One call's failed attempts 1..tries: growing backoff, or a fixed ``wait_s``."""
    rows = []
    at, waited = base["created"], 0.0
    for attempt in range(1, tries + 1):
        rows.append(
            _failed({**base, "created": at, "attempt": attempt, "backoff_ms": waited},
                    status, failure)
        )  # fmt: skip
        if wait_s is None:
            waited = 1000 * RETRY.backoff * 2 ** (attempt - 1) * rng.uniform(0.75, 1.0)
        else:
            waited = 1000 * wait_s * rng.uniform(1.0, 1.2)
        at += timedelta(milliseconds=base["latency_ms"] + waited)
    return rows


def _server_error(demo: DemoIntegration, status: int) -> _Failure:
    return demo.server_error or _nested(
        status, "service_unavailable", "The service is temporarily overloaded."
    )


def _failed(base: dict, status: int, failure: _Failure) -> dict:
    return {
        **base,
        "status": status,
        "outcome": Outcome.CLIENT_ERROR if status < 500 else Outcome.SERVER_ERROR,
        "error_code": failure.code,
        "error_message": failure.message,
        "error_body": failure.body,
        "response_bytes": len(failure.body),
    }


# --- probes ------------------------------------------------------------------------------------


def setup_demo_probes(
    sandbox_url: str | None = None, tls_url: str | None = SANDBOX_TLS_URL
) -> list[Probe]:
    """Probes against the sandbox for the demo integrations (idempotent, by name).

    The integrations are the client traffic's, so probes and client traffic meet on one
    integration. Where the sandbox plays the provider (Paubox, OpenPanel) the probes are the
    preset's own — OpenPanel's signs in, then calls whoami with the token — and read the
    sandbox's demo logins from ``DEMO_SECRETS`` in the worker's environment. The others get
    a ``/v1/health`` probe; the first also gets "Latency budget", whose limits the sandbox's
    long-tailed latency breaks every few minutes; it goes down on one failure and needs three
    good runs to come back, so state changes show up within minutes of ``make run``.

    All of them call the plain-http port (``sandbox_url``), even for integrations whose
    calls use TLS: the probe worker verifies certificates against the public CAs only, and
    the demo's CA is made afresh each time the sandbox starts.
    """
    base = (sandbox_url or SANDBOX_URL).rstrip("/")
    probes = []
    integrations = demo_integrations(base, tls_url)
    for index, demo in enumerate(DEMO_INTEGRATIONS):
        integration = integrations[demo.handle]
        if demo.preset_probes:
            stem = setup.secret_stem(demo.slug, demo.environment)
            for spec in setup.probe_specs(presets.get(demo.preset), base + demo.base_path, stem):
                fields = {k: v for k, v in spec.items() if k != "name"}
                probe, _ = Probe.objects.update_or_create(
                    integration=integration, name=spec["name"], defaults=fields
                )
                probes.append(probe)
            continue
        wanted = {
            "Health": {
                "url": f"{base}/v1/health",
                "interval_s": 30,
                "timeout_s": 5,
                "assertions": {
                    "status": "200",
                    "latency_degraded_ms": 1500,
                    "json_path": ['$.status == "ok"'],
                    "header": {"name": "API-Version"},
                },
            }
        }
        if index == 0:
            wanted["Latency budget"] = {
                "url": f"{base}/v1/slow?ms=150",
                "interval_s": 30,
                "timeout_s": 5,
                "assertions": {
                    "status": "2xx",
                    "latency_degraded_ms": 300,
                    "latency_failed_ms": 450,
                },
                "fail_threshold": 1,
                "recover_threshold": 3,
            }
        for name, fields in wanted.items():
            probe, _ = Probe.objects.update_or_create(
                integration=integration, name=name, defaults=fields
            )
            probes.append(probe)
    return probes


# --- live traffic ------------------------------------------------------------------------------

# The demo's timeline, in seconds after `make run` starts, so a newcomer sees the headline
# verdicts within ten minutes. The sandbox fails every request (probes included) during
# OUTAGE_WINDOW ("provider down": one notification, the rest inhibited); during
# EXPIRED_TOKEN_WINDOW our OpenPanel calls keep sending a token past its 15 minutes (401
# "Missing or invalid token" while the sign-in probe passes); during REVOKED_KEY_WINDOW our
# Stripe calls carry a revoked key while its probe still passes ("our calls failing": the
# failed-auth spike, whose e-mail lands in var/mail/).
OUTAGE_WINDOW = (150.0, 180.0)
EXPIRED_TOKEN_WINDOW = (330.0, 90.0)
REVOKED_KEY_WINDOW = (420.0, 150.0)
REVOKED_KEY = "sk_test_revoked"  # the sandbox answers 401 to it
# A JWT whose ``exp`` passed long ago (and whose signature the sandbox never made): what a
# caller that forgot to sign in again keeps sending.
EXPIRED_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsImV4cCI6MX0.ZXhwaXJlZA"  # noqa: S105
# Sign in again this long before the token's 15 minutes are up.
TOKEN_REFRESH_S = 12 * 60


def in_window(window: tuple[float, float], elapsed_s: float) -> bool:
    start, length = window
    return start <= elapsed_s < start + length


def wait_for_sandbox(url: str, stop: threading.Event, timeout: float | None = None) -> bool:
    """Poll the sandbox's health endpoint until it answers; False if stopped or timed out."""
    deadline = None if timeout is None else timeout
    waited = 0.0
    announced = False
    while not stop.is_set():
        try:
            if httpx.get(f"{url.rstrip('/')}/v1/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if not announced:
            logger.info("demo traffic: waiting for the sandbox at %s", url)
            announced = True
        if deadline is not None and waited >= deadline:
            return False
        stop.wait(0.5)
        waited += 0.5
    return False


def _auth_headers(demo: DemoIntegration, key: str | None = None) -> dict[str, str]:
    key = key or demo.key
    if not key:
        return {}  # per call (OpenPanel's token)
    if demo.preset == "paubox":
        return {"Authorization": f"Token token={key}"}  # what Paubox's own SDKs send
    return {"Authorization": f"Bearer {key}"}


def run_traffic(
    sandbox_url: str = SANDBOX_URL,
    *,
    tls_url: str | None = None,
    verify: ssl.SSLContext | None = None,
    rate: float = 3.0,
    stop: threading.Event | None = None,
    max_calls: int | None = None,
    seed: int | None = None,
    started_at: float | None = None,
) -> int:
    """Call the sandbox through MonitoredClient, ``rate`` calls/s on average, until ``stop``
    is set or ``max_calls`` were made; returns the number of calls.

    With ``tls_url`` (the sandbox's TLS port) and ``verify`` (a context trusting its CA), the
    integrations marked ``tls`` call that; without, every call goes to ``sandbox_url``.
    ``started_at`` (a ``time.monotonic()`` value, default now) is the start of the demo's
    timeline: the expired-token and revoked-key windows count from it."""
    # Imported here, as before the move: importing the client hooks it into the recorder,
    # which seeding history and setting up probes have no use for.
    from monitoring.client import MonitoredClient

    if rate <= 0:
        raise ValueError("rate must be positive")
    if tls_url and verify is None:
        raise ValueError("calling the TLS port needs verify=, a context trusting its CA")
    stop = stop or threading.Event()
    rng = random.Random(seed)
    demo_integrations(sandbox_url, tls_url)

    def client(demo: DemoIntegration, key: str | None = None):
        url = demo.url(sandbox_url, tls_url)
        return MonitoredClient(
            integration=demo.slug,
            environment=demo.environment,
            base_url=url + (demo.base_path.rstrip("/") + "/" if demo.base_path else ""),
            headers=_auth_headers(demo, key),
            retry=_retry_policy(demo),
            timeout=10,
            verify=verify if url.startswith("https:") else True,
        )

    clients = {demo.handle: client(demo) for demo in DEMO_INTEGRATIONS}
    stripe = next(d for d in DEMO_INTEGRATIONS if d.handle == "stripe")
    revoked = client(stripe, REVOKED_KEY)
    state = _Traffic()
    weights = [demo.calls_per_minute for demo in DEMO_INTEGRATIONS]
    calls = 0
    started = time.monotonic() if started_at is None else started_at
    try:
        while not stop.is_set() and (max_calls is None or calls < max_calls):
            demo = rng.choices(DEMO_INTEGRATIONS, weights)[0]
            api = clients[demo.handle]
            elapsed = time.monotonic() - started
            if demo is stripe and in_window(REVOKED_KEY_WINDOW, elapsed):
                api = revoked
            state.stale_token = in_window(EXPIRED_TOKEN_WINDOW, elapsed)
            try:
                _TRAFFIC.get(demo.slug, _customers_call)(api, demo, state, rng)
            except httpx.HTTPError as exc:
                logger.debug("demo traffic: %s", exc)  # recorded by the client already
            calls += 1
            stop.wait(rng.expovariate(rate))
    finally:
        for api in (*clients.values(), revoked):
            api.close()
    return calls


def _retry_policy(demo: DemoIntegration) -> RetryPolicy | None:
    if demo.ignores_retry_after:
        return None  # OpenPanel's sign-in retries by itself (_sign_in)
    return RETRY_401 if demo.retries_401 else RETRY


@dataclass
class _Traffic:
    """What live traffic remembers between calls: ids it created, OpenPanel's token."""

    customers: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    token: str = ""
    token_at: float = 0.0
    stale_token: bool = False


def _paubox_call(api, demo: DemoIntegration, state: _Traffic, rng: random.Random) -> None:
    roll = rng.random()
    message = {"recipients": [f"patient{rng.randint(1, 999)}@example.com"],
               "headers": {"subject": "Results", "from": "clinic@example.com"}}  # fmt: skip
    if roll < 0.45 or not state.messages:
        if rng.random() < 0.08:
            message = {"headers": message["headers"]}  # no recipients: Paubox's 400 + details
        response = api.post("messages", json={"data": {"message": message}})
        if response.status_code == 200:
            tracking = response.json()["sourceTrackingId"]
            state.messages = [*state.messages[-50:], tracking]
    elif roll < 0.8:
        tracking = rng.choice(state.messages) if rng.random() < 0.95 else uuid.uuid4().hex
        api.get("message_receipt", params={"sourceTrackingId": tracking})
    elif roll < 0.95:
        api.get("dynamic_templates")
    else:
        # Now and then a batch past the 50 Paubox advises: recorded like any other call.
        size = rng.choice((10, 25, 60))
        api.post("bulk_messages", json={"data": {"messages": [message] * size}})


def _openpanel_call(api, demo: DemoIntegration, state: _Traffic, rng: random.Random) -> None:
    now = time.monotonic()
    if not state.token or now - state.token_at > TOKEN_REFRESH_S:
        # Every worker signs in at once: one more than the 5 a minute OpenPanel allows.
        tokens = [_sign_in(api, demo) for _ in range(OPENPANEL_WORKERS)]
        token = next((t for t in tokens if t), "")
        if token:
            state.token, state.token_at = token, now
        return
    token = EXPIRED_TOKEN if state.stale_token else state.token
    auth = {"Authorization": f"Bearer {token}"}
    roll = rng.random()
    if roll < 0.45:
        api.get("whoami", headers=auth)
    elif roll < 0.8:
        api.get("users", headers=auth)  # empty for bearer callers, as on the real panel
    else:
        api.get(f"users/{rng.choice(('alice', 'bob', 'carol'))}", headers=auth)


# The demo app's workers; each signs in when the token runs out.
OPENPANEL_WORKERS = 6


def _sign_in(api, demo: DemoIntegration) -> str:
    """One worker's sign-in (with the app's own login); its token, or "" if refused.

    A refused sign-in is sent again after HAMMER_WAIT_S, HAMMER_RETRIES times, whatever
    Retry-After says: the same Idempotency-Key ties the tries into one call (attempts 1..n).
    """
    login = {"username": OPENPANEL_APP_USER, "password": OPENPANEL_APP_PASSWORD}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    signed = api.post("", json=login, headers=headers)
    for _ in range(HAMMER_RETRIES if demo.ignores_retry_after else 0):
        if signed.status_code != 429:
            break
        time.sleep(HAMMER_WAIT_S)
        signed = api.post("", json=login, headers=headers)
    return signed.json().get("access_token", "") if signed.status_code == 200 else ""


def _customers_call(api, demo: DemoIntegration, state: _Traffic, rng: random.Random) -> None:
    roll = rng.random()
    if roll < 0.3 or not state.customers:
        response = api.get("/v1/customers", params={"limit": 10})
        if response.status_code == 200:
            state.customers = [c["id"] for c in response.json()["data"]]
    elif roll < 0.75:
        api.get(f"/v1/customers/{rng.choice(state.customers)}")
    elif roll < 0.8:
        api.get("/v1/customers/cus_missing0000000")
    elif demo.slug == "stripe" and roll < 0.95:
        api.post(
            "/v1/charges",
            json={"amount": rng.randint(100, 50_000), "currency": "usd"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    elif demo.slug == "stripe" and any(e.deprecated for e in demo.endpoints):
        api.get("/v1/legacy/report")
    elif demo.slug == "stripe":
        api.get("/v1/customers", params={"limit": 10})
    else:
        for page in api.paginate("/v1/customers", params={"limit": 25}, max_pages=2):
            page.raise_for_status()


# Live traffic per demo integration (by slug); the rest call the Stripe-like customers API.
_TRAFFIC: dict[str, Callable[..., None]] = {"paubox": _paubox_call, "openpanel": _openpanel_call}
