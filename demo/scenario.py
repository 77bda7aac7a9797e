"""The demo scenario: its integrations and probes, seven days of history, live traffic.

``seed_history()`` bulk-inserts raw request rows (and their metric buckets, in the same
transaction) for three demo integrations — a 401 spike two days ago, a deprecated
endpoint, rate-limit headroom, the odd 5xx and timeout — once; a second call does nothing.
``setup_demo_probes()`` gives the same integrations probes against the sandbox provider.
``run_traffic()`` calls the sandbox provider through ``MonitoredClient`` at a gentle rate
until told to stop (``python manage.py demo_traffic``).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring import rollup, storage
from monitoring.models import Environment, Grain, Integration, JobState, Outcome, Probe, Source

logger = logging.getLogger(__name__)

SANDBOX_URL = "http://127.0.0.1:8765"
SEEDED_MARKER = "demo:history"
API_VERSION = "2026-01-01"


@dataclass(frozen=True)
class _Endpoint:
    method: str
    path: str
    weight: float
    latency_ms: float  # median
    error_code: str = "resource_missing"
    deprecated: bool = False


@dataclass(frozen=True)
class DemoIntegration:
    slug: str
    name: str
    environment: str
    key: str  # the sandbox accepts any sk_test_ key
    calls_per_minute: float  # in the seeded history; live traffic splits --rate by these
    endpoints: tuple[_Endpoint, ...]


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
            _Endpoint("GET", "/v1/customers/{token}", 4, 70),
            _Endpoint("POST", "/v1/charges", 2, 140, error_code="card_declined"),
            _Endpoint("GET", "/v1/legacy/report", 0.5, 220, deprecated=True),
        ),
    ),
    DemoIntegration(
        "paubox",
        "Paubox",
        Environment.PRODUCTION,
        "sk_test_demo_paubox",
        0.8,
        (
            _Endpoint("POST", "/v1/messages", 3, 160, error_code="parameter_invalid"),
            _Endpoint("GET", "/v1/messages/{token}", 2, 60),
            _Endpoint("GET", "/v1/health", 1, 40),
        ),
    ),
    DemoIntegration(
        "sandbox-crm",
        "Sandbox CRM",
        Environment.SANDBOX,
        "sk_test_demo_crm_readonly",
        0.3,
        (
            _Endpoint("GET", "/v1/customers", 2, 110),
            _Endpoint("GET", "/v1/customers/{token}", 3, 80),
        ),
    ),
)


def demo_integrations(sandbox_url: str = SANDBOX_URL) -> dict[str, Integration]:
    """The demo integrations, created if missing (by slug and environment)."""
    found = {}
    for demo in DEMO_INTEGRATIONS:
        integration, _ = Integration.objects.get_or_create(
            slug=demo.slug,
            environment=demo.environment,
            defaults={
                "name": demo.name,
                "base_url": sandbox_url,
                "require_https": False,
                "expected_api_version": API_VERSION,
            },
        )
        found[demo.slug] = integration
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
    spike_start = (now - timedelta(days=2)).replace(hour=13, minute=5)
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
                pk = integrations[demo.slug].pk
                for row in _minute_rows(demo, pk, minute, spike_start, rng):
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


def _minute_rows(
    demo: DemoIntegration, integration_id: int, minute: datetime, spike_start: datetime, rng
) -> list[dict]:
    # Busier in the (UTC) working day, quieter at night.
    hour = minute.hour + minute.minute / 60
    rate = demo.calls_per_minute * (1 + 0.6 * math.sin((hour - 8) / 24 * 2 * math.pi))
    count = int(rate) + (rng.random() < rate - int(rate))
    in_spike = demo.slug == "stripe" and spike_start <= minute < spike_start + timedelta(minutes=25)
    weights = [e.weight for e in demo.endpoints]
    rows = []
    for _ in range(count):
        endpoint = rng.choices(demo.endpoints, weights)[0]
        created = minute + timedelta(seconds=rng.uniform(0, 59.999))
        rows.extend(_call_rows(demo, integration_id, endpoint, created, in_spike, rng))
    return rows


def _call_rows(demo, integration_id, endpoint, created, in_spike, rng) -> list[dict]:
    call_id = uuid.UUID(int=rng.getrandbits(128)).hex
    latency = min(rng.lognormvariate(math.log(endpoint.latency_ms), 0.6), 9_000)
    base = {
        "created": created,
        "integration_id": integration_id,
        "source": Source.CLIENT,
        "method": endpoint.method,
        "scheme": "http",
        "host": SANDBOX_URL.removeprefix("http://"),
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
        "ratelimit_limit": 600,
        "ratelimit_remaining": rng.randint(350, 599),
        "ratelimit_reset": created.replace(second=0, microsecond=0) + timedelta(minutes=1),
        "retry_after_s": None,
        "deprecated": False,
        "deprecation_at": None,
        "sunset_at": None,
        "deprecation_link": "",
        "api_version": API_VERSION,
    }
    if endpoint.deprecated:
        base["deprecated"] = True
        # The sandbox's own dates: deprecated 30 days before today, sunset 60 days after.
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        base["deprecation_at"] = midnight - timedelta(days=30)
        base["sunset_at"] = midnight + timedelta(days=60)
        base["deprecation_link"] = f"{SANDBOX_URL}/docs/migrate"
    roll = rng.random()
    if in_spike and roll < 0.7:
        return [
            _failed(base, 401, "invalid_api_key", "The API key sk_test****tripe has been revoked.")
        ]
    if roll < 0.008:
        status = rng.choice((500, 502, 503))
        first = _failed(
            base, status, "service_unavailable", "The service is temporarily overloaded."
        )
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
        return [_failed(base, 404 if endpoint.method == "GET" else 400, endpoint.error_code, "")]
    if roll < 0.018:
        limited = _failed(
            base, 429, "rate_limited", "Rate limit of 600 requests per 60 s exceeded."
        )
        limited.update(ratelimit_remaining=0, retry_after_s=2.0)
        retry = {**base, "created": created + timedelta(seconds=2.1), "attempt": 2}
        retry["backoff_ms"] = 2000.0
        return [limited, retry]
    return [base]


def _failed(base: dict, status: int, code: str, message: str) -> dict:
    message = message or ("No such resource." if status == 404 else "The request was invalid.")
    body = f'{{"error":{{"code":"{code}","message":"{message}"}}}}'
    return {
        **base,
        "status": status,
        "outcome": Outcome.CLIENT_ERROR if status < 500 else Outcome.SERVER_ERROR,
        "error_code": code,
        "error_message": message,
        "error_body": body,
        "response_bytes": len(body),
    }


# --- probes ------------------------------------------------------------------------------------


def setup_demo_probes(sandbox_url: str | None = None) -> list[Probe]:
    """Probes against the sandbox for the demo integrations (idempotent, by name).

    The integrations are the client traffic's, so probes and client traffic meet on one
    integration. Each gets a ``/v1/health`` probe. The first also gets "Latency budget",
    whose limits the sandbox's long-tailed latency breaks every few minutes; it goes down on
    one failure and needs three good runs to come back, so state changes show up within
    minutes of ``make run``.
    """
    base = (sandbox_url or SANDBOX_URL).rstrip("/")
    probes = []
    for index, integration in enumerate(demo_integrations(base).values()):
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

# The demo's timeline, in seconds after `make run` starts, so a newcomer sees both headline
# verdicts within ten minutes. The sandbox fails every request (probes included) during
# OUTAGE_WINDOW ("provider down": one notification, the rest inhibited); during
# REVOKED_KEY_WINDOW our Stripe calls carry a revoked key while its probe still passes
# ("our calls failing": the failed-auth spike, whose e-mail lands in var/mail/).
OUTAGE_WINDOW = (150.0, 180.0)
REVOKED_KEY_WINDOW = (420.0, 150.0)
REVOKED_KEY = "sk_test_revoked"  # the sandbox answers 401 to it


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


def run_traffic(
    sandbox_url: str = SANDBOX_URL,
    *,
    rate: float = 3.0,
    stop: threading.Event | None = None,
    max_calls: int | None = None,
    seed: int | None = None,
    started_at: float | None = None,
) -> int:
    """Call the sandbox through MonitoredClient, ``rate`` calls/s on average, until ``stop``
    is set or ``max_calls`` were made; returns the number of calls.

    ``started_at`` (a ``time.monotonic()`` value, default now) is the start of the demo's
    timeline: the revoked-key window counts from it."""
    # Imported here, as before the move: importing the client hooks it into the recorder,
    # which seeding history and setting up probes have no use for.
    from monitoring.client import MonitoredClient, RetryPolicy

    if rate <= 0:
        raise ValueError("rate must be positive")
    stop = stop or threading.Event()
    rng = random.Random(seed)
    demo_integrations(sandbox_url)
    retry = RetryPolicy(max_attempts=3, backoff=0.2, max_backoff=2, max_total_wait=8)
    clients = {
        demo.slug: MonitoredClient(
            integration=demo.slug,
            environment=demo.environment,
            base_url=sandbox_url,
            headers={"Authorization": f"Bearer {demo.key}"},
            retry=retry,
            timeout=10,
        )
        for demo in DEMO_INTEGRATIONS
    }
    stripe = next(d for d in DEMO_INTEGRATIONS if d.slug == "stripe")
    revoked = MonitoredClient(
        integration=stripe.slug,
        environment=stripe.environment,
        base_url=sandbox_url,
        headers={"Authorization": f"Bearer {REVOKED_KEY}"},
        retry=retry,
        timeout=10,
    )
    known = {"customers": [], "messages": []}
    weights = [demo.calls_per_minute for demo in DEMO_INTEGRATIONS]
    calls = 0
    started = time.monotonic() if started_at is None else started_at
    try:
        while not stop.is_set() and (max_calls is None or calls < max_calls):
            demo = rng.choices(DEMO_INTEGRATIONS, weights)[0]
            client = clients[demo.slug]
            if demo is stripe and in_window(REVOKED_KEY_WINDOW, time.monotonic() - started):
                client = revoked
            try:
                _one_call(client, demo, known, rng)
            except httpx.HTTPError as exc:
                logger.debug("demo traffic: %s", exc)  # recorded by the client already
            calls += 1
            stop.wait(rng.expovariate(rate))
    finally:
        for client in (*clients.values(), revoked):
            client.close()
    return calls


def _one_call(client, demo: DemoIntegration, known: dict, rng: random.Random) -> None:
    if demo.slug == "paubox":
        roll = rng.random()
        if roll < 0.5 or not known["messages"]:
            response = client.post(
                "/v1/messages",
                json={"to": f"patient{rng.randint(1, 999)}@example.com", "subject": "Results"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            if response.status_code == 202:
                known["messages"] = [*known["messages"][-50:], response.json()["id"]]
        elif roll < 0.85:
            client.get(f"/v1/messages/{rng.choice(known['messages'])}")
        else:
            client.get("/v1/health")
        return
    roll = rng.random()
    if roll < 0.3 or not known["customers"]:
        response = client.get("/v1/customers", params={"limit": 10})
        if response.status_code == 200:
            known["customers"] = [c["id"] for c in response.json()["data"]]
    elif roll < 0.75:
        client.get(f"/v1/customers/{rng.choice(known['customers'])}")
    elif roll < 0.8:
        client.get("/v1/customers/cus_missing0000000")
    elif demo.slug == "stripe" and roll < 0.95:
        client.post(
            "/v1/charges",
            json={"amount": rng.randint(100, 50_000), "currency": "usd"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    elif demo.slug == "stripe":
        client.get("/v1/legacy/report")
    else:
        for page in client.paginate("/v1/customers", params={"limit": 25}, max_pages=2):
            page.raise_for_status()
