"""Run probes: fetch with the SSRF guard, judge, keep up/degraded/down state, dispatch on time.

How the pieces fit
------------------
- :func:`execute` is the HTTP half and touches no database: it resolves ``${VAR}`` header
  references from the environment, checks the URL with :mod:`monitoring.netguard`, connects
  to the checked address itself (so DNS cannot answer differently a moment later), follows
  up to five redirects by hand (each one checked again), reads at most 1 MiB of body, takes
  the certificate's expiry from the live TLS connection and judges the response with
  :mod:`monitoring.assertions`. It never raises: every failure becomes a :class:`RunResult`.
- :func:`claim_due` and :func:`record_runs` are the database half, always called from
  synchronous code: claiming moves ``next_run_at`` forward with a compare-and-set update per
  probe (``SELECT … FOR UPDATE SKIP LOCKED`` first on PostgreSQL; on SQLite the IMMEDIATE
  transaction serialises claimers), so two dispatchers never run one slot twice, and
  ``claimed_until`` keeps a slow run from overlapping the next slot of the same probe.
- :class:`Dispatcher` joins them: the calling thread claims and writes, an asyncio loop in a
  second thread runs the HTTP calls concurrently (at most ``PROBE_CONCURRENCY`` in flight;
  it only claims what it can start at once, so a slow provider holds one slot, never the
  queue, and unclaimed work stays free for another dispatcher).

Why a loop inside a django-q2 task: django-q2's scheduler only looks at schedules about every
30 s, far too coarse for 30-second probes. The ``upstream:probe-dispatcher`` schedule starts
:func:`dispatch_task` every minute; it ticks every half second for up to ``Q_TIMEOUT`` minus
the longest probe timeout minus a margin (80 s with the default 120 s), long enough to bridge
a late schedule. Each new task takes the dispatcher generation over (a ``RollupState`` row),
and the previous loop stops at its next tick, finishing the runs in hand, so normally only
one django-q2 worker is busy dispatching. ``manage.py run_probes --loop`` is the same loop
without that hand-over, for running a dedicated dispatcher process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import math
import os
import queue
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from monitoring import netguard
from monitoring.assertions import Assertions, InvalidAssertion, evaluate
from monitoring.assertions import FailureReason as Reason
from monitoring.assertions import cert_days_left as days_until
from monitoring.models import (
    Outcome,
    Probe,
    ProbeFlip,
    ProbeResult,
    ProbeState,
    RollupState,
)

logger = logging.getLogger(__name__)

MAX_TIMEOUT_S = 30.0
BODY_READ_LIMIT = 1024 * 1024
MAX_REDIRECTS = 5
# A claim outlives the run's own timeout by this much before another dispatcher may retake it.
CLAIM_MARGIN_S = 10.0
TICK_S = 0.5
MESSAGE_LIMIT = 500
USER_AGENT = "Upstream-probe/1"
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers the runner sets itself: Host is how it pins the checked address.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
DISPATCHER_GENERATION = "probe_dispatcher_generation"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class MissingSecret(LookupError):
    """A header refers to an environment variable that is not set in this process."""


def resolve_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Substitute ``${NAME}`` references from the environment; the result is never stored."""
    resolved = {}
    missing, broken = [], []
    for name, value in headers.items():
        text = str(value)
        for ref in _ENV_REF.findall(text):
            if ref not in os.environ:
                missing.append(ref)
            elif any(c in os.environ[ref] for c in "\r\n\0"):
                broken.append(ref)
        resolved[str(name)] = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), text)
    if missing:
        names = ", ".join(sorted(set(missing)))
        raise MissingSecret(f"environment variable not set in the probe runner: {names}")
    if broken:
        # An HTTP library would refuse it with the value in its error message.
        names = ", ".join(sorted(set(broken)))
        raise MissingSecret(f"environment variable holds a line break or NUL: {names}")
    return resolved


def _secret_values(headers: Mapping[str, Any]) -> list[str]:
    """The environment values the headers refer to, longest first, for scrubbing messages."""
    refs = {ref for value in headers.values() for ref in _ENV_REF.findall(str(value))}
    values = {os.environ.get(ref, "") for ref in refs}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    # Assertion messages quote response values, and a server may echo a request header back.
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return text


def allow_hosts() -> list[str]:
    return list(settings.UPSTREAM.get("PROBE_ALLOW_HOSTS", []))


def _concurrency() -> int:
    return int(settings.UPSTREAM.get("PROBE_CONCURRENCY", 50))


# --- one run, no database ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSpec:
    """What one run needs, copied from the probe row when it was claimed."""

    probe_id: int
    integration_id: int
    method: str
    url: str
    headers: dict[str, Any]
    body: str
    timeout_s: float
    assertions: dict[str, Any]
    scheduled_for: dt.datetime | None = None

    @classmethod
    def from_probe(cls, probe: Probe, scheduled_for: dt.datetime | None = None) -> ProbeSpec:
        return cls(
            probe_id=probe.pk,
            integration_id=probe.integration_id,
            method=probe.method.upper(),
            url=probe.url,
            headers=dict(probe.headers or {}),
            body=probe.body,
            timeout_s=min(max(probe.timeout_s, 0.1), MAX_TIMEOUT_S),
            assertions=dict(probe.assertions or {}),
            scheduled_for=scheduled_for,
        )


@dataclass
class RunResult:
    """The verdict of one run plus what the request log needs to know about the attempt."""

    ok: bool
    started_at: dt.datetime
    degraded: bool = False
    reason: str = ""
    message: str = ""
    status: int | None = None
    latency_ms: float | None = None
    cert_days_left: float | None = None
    url: str = ""
    method: str = "GET"
    outcome: str = Outcome.OTHER_ERROR
    response_headers: dict[str, str] = field(default_factory=dict)
    request_bytes: int | None = None
    response_bytes: int | None = None

    def lateness_s(self, scheduled_for: dt.datetime | None) -> float | None:
        if scheduled_for is None:
            return None
        return max(0.0, (self.started_at - scheduled_for).total_seconds())


@dataclass
class _Fetched:
    response: httpx.Response
    body: bytes
    url: str
    method: str
    cert_days_left: float | None
    request_bytes: int


class _Failure(Exception):
    def __init__(self, reason: Reason, outcome: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.outcome = outcome


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _classify(exc: BaseException, timeout_s: float) -> _Failure:
    """Turn a transport exception into a failure reason, a request-log outcome and a message."""
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        what = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for a response"
        return _Failure(Reason.TIMEOUT, Outcome.TIMEOUT, f"timed out after {timeout_s:g} s {what}")
    if isinstance(exc, netguard.BlockedDestination):
        return _Failure(Reason.BLOCKED, Outcome.BLOCKED, f"refused: {exc}")
    if isinstance(exc, netguard.UnresolvableHost):
        return _Failure(Reason.CONNECT, Outcome.CONNECT_ERROR, str(exc))
    if isinstance(exc, MissingSecret | InvalidAssertion):
        return _Failure(Reason.ERROR, Outcome.OTHER_ERROR, str(exc))
    tls = _ssl_error(exc)
    if tls is not None:
        if isinstance(tls, ssl.SSLCertVerificationError):
            detail = f"certificate verify failed: {tls.verify_message}"
        else:
            detail = tls.reason or str(tls)
        return _Failure(Reason.TLS, Outcome.TLS_ERROR, f"TLS handshake failed: {detail}")
    if isinstance(exc, httpx.ConnectError):
        return _Failure(Reason.CONNECT, Outcome.CONNECT_ERROR, f"connection failed: {exc}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return _Failure(
            Reason.CONNECT, Outcome.PROTOCOL_ERROR, f"connection broken by the server: {exc}"
        )
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return _Failure(Reason.CONNECT, Outcome.READ_ERROR, f"connection reset: {exc}")
    if isinstance(exc, httpx.HTTPError | OSError):
        return _Failure(Reason.ERROR, Outcome.OTHER_ERROR, f"{type(exc).__name__}: {exc}")
    logger.exception("probe run failed unexpectedly", exc_info=exc)
    return _Failure(Reason.ERROR, Outcome.OTHER_ERROR, f"internal error: {type(exc).__name__}")


def _outcome_for_status(status: int) -> str:
    if status >= 500:
        return Outcome.SERVER_ERROR
    if status >= 400:
        return Outcome.CLIENT_ERROR
    return Outcome.OK


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _check(url: str, allowed: list[str], location: str | None = None):
    """netguard's check, off the event loop when it has to ask DNS."""
    if location is not None:
        return await asyncio.to_thread(netguard.check_redirect, location, url, allowed)
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""  # check_url explains what is wrong with it
    if host and _is_ip_literal(host):
        return url, netguard.check_url(url, allow_hosts=allowed)
    return url, await asyncio.to_thread(netguard.check_url, url, allow_hosts=allowed)


async def _request_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    addresses: list,
    headers: dict[str, str],
    content: bytes | None,
) -> _Fetched:
    """Send to one of the checked addresses, keeping the name for Host, SNI and certificate."""
    target = httpx.URL(url)
    host_header = target.netloc.decode("ascii")
    extensions = {}
    if target.scheme == "https" and not _is_ip_literal(target.host):
        extensions["sni_hostname"] = target.host
    last_error: Exception | None = None
    for address in addresses:
        pinned = target.copy_with(host=str(address))
        request = client.build_request(
            method,
            pinned,
            headers={**headers, "Host": host_header},
            content=content,
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            # Only a refused/unreachable address is worth the next one; TLS failures are final.
            if _ssl_error(exc) is not None:
                raise
            last_error = exc
            continue
        try:
            cert_left = None
            stream = response.extensions.get("network_stream")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            if ssl_object is not None:
                not_after = (ssl_object.getpeercert() or {}).get("notAfter")
                if not_after:
                    cert_left = days_until(not_after, timezone.now())
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= BODY_READ_LIMIT:
                    break
            body = b"".join(chunks)[:BODY_READ_LIMIT]
        finally:
            await response.aclose()
        return _Fetched(response, body, url, method, cert_left, len(content or b""))
    assert last_error is not None
    raise last_error


def _same_origin(a: str, b: str) -> bool:
    ua, ub = httpx.URL(a), httpx.URL(b)
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


async def _fetch(
    client: httpx.AsyncClient, spec: ProbeSpec, headers: dict[str, str], allowed: list[str]
) -> _Fetched:
    method = spec.method
    content = spec.body.encode() if spec.body else None
    url, addresses = await _check(spec.url, allowed)
    for _hop in range(MAX_REDIRECTS + 1):
        fetched = await _request_pinned(client, method, url, addresses, headers, content)
        response = fetched.response
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or not location:
            return fetched
        next_url, addresses = await _check(url, allowed, location=location)
        if not _same_origin(url, next_url):
            # Credentials from the environment go only to the origin they were configured for.
            headers = {
                k: v for k, v in headers.items() if not _ENV_REF.search(str(spec.headers.get(k)))
            }
        if response.status_code == 303 or (
            response.status_code in (301, 302) and method not in ("GET", "HEAD")
        ):
            method, content = "GET", None
        url = next_url
    raise _Failure(Reason.ERROR, Outcome.OTHER_ERROR, f"more than {MAX_REDIRECTS} redirects")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


async def execute(
    spec: ProbeSpec, client: httpx.AsyncClient, *, allowed: list[str] | None = None
) -> RunResult:
    """Run one probe over HTTP and judge it. Never raises; touches no database."""
    allowed = allow_hosts() if allowed is None else allowed
    started_at = timezone.now()
    started = time.perf_counter()
    result = RunResult(ok=False, started_at=started_at, url=spec.url, method=spec.method)
    try:
        assertions = Assertions.from_dict(spec.assertions)
        headers = {"User-Agent": USER_AGENT, **resolve_headers(spec.headers)}
        async with asyncio.timeout(spec.timeout_s):
            fetched = await _fetch(client, spec, headers, allowed)
    except Exception as exc:
        failure = _classify(exc, spec.timeout_s)
        result.latency_ms = (time.perf_counter() - started) * 1000
        result.reason = str(failure.reason)
        result.outcome = failure.outcome
        result.message = _clip(_scrub(str(failure), _secret_values(spec.headers)))
        return result

    latency_ms = (time.perf_counter() - started) * 1000
    response = fetched.response
    verdict = evaluate(
        assertions,
        status=response.status_code,
        latency_ms=latency_ms,
        headers=response.headers,
        body=fetched.body,
        url_scheme=httpx.URL(fetched.url).scheme,
        cert_days_left=fetched.cert_days_left,
    )
    result.ok = verdict.ok
    result.degraded = verdict.degraded
    result.reason = str(verdict.reason) if verdict.reason else ""
    message = verdict.message or f"{response.status_code} in {latency_ms:.0f} ms"
    result.message = _clip(_scrub(message, _secret_values(spec.headers)))
    result.status = response.status_code
    result.latency_ms = latency_ms
    result.cert_days_left = fetched.cert_days_left
    result.url = fetched.url
    result.method = fetched.method
    result.outcome = _outcome_for_status(response.status_code)
    result.response_headers = dict(response.headers)
    result.request_bytes = fetched.request_bytes
    result.response_bytes = len(fetched.body)
    return result


def make_client(*, verify: ssl.SSLContext | bool = True, concurrency: int | None = None):
    """The AsyncClient probes share: no redirects (done by hand), no proxies, no keep-alive.

    No keep-alive so that every run measures a full connect and handshake, reads the
    certificate of this run's connection, and never reuses a connection made for another
    name on the same pinned address.
    """
    limit = concurrency or _concurrency()
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(MAX_TIMEOUT_S),
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=0),
    )


# --- state ------------------------------------------------------------------------------------


def next_state(
    state: str,
    failures: int,
    successes: int,
    *,
    ok: bool,
    degraded: bool,
    fail_threshold: int,
    recover_threshold: int,
) -> tuple[str, int, int]:
    """Hysteresis: (new state, consecutive failures, consecutive successes) after one run.

    Down after ``fail_threshold`` failures in a row; back after ``recover_threshold``
    successes in a row. Fewer failures than that leave the state as it was. Outside ``down``
    a success sets up or degraded from its own latency verdict.
    """
    if not ok:
        failures, successes = failures + 1, 0
        if failures >= max(1, fail_threshold):
            return ProbeState.DOWN, failures, successes
        return state, failures, successes
    failures, successes = 0, successes + 1
    if state == ProbeState.DOWN and successes < max(1, recover_threshold):
        return state, failures, successes
    return (ProbeState.DEGRADED if degraded else ProbeState.UP), failures, successes


_STATE_FIELDS = [
    "id", "state", "consecutive_failures", "consecutive_successes", "fail_threshold",
    "recover_threshold", "cert_days_left", "cert_checked_at", "state_changed_at",
]  # fmt: skip
_RUN_FIELDS = [
    "state", "state_changed_at", "consecutive_failures", "consecutive_successes",
    "last_run_at", "last_ok", "last_reason", "last_message", "last_latency_ms",
    "cert_days_left", "cert_checked_at", "claimed_until",
]  # fmt: skip


def record_runs(runs: Iterable[tuple[ProbeSpec, RunResult]]) -> list[ProbeResult]:
    """Store results, move each probe's state (with a flip row on change), release claims.

    Only run-state fields are written, so a configuration edit made meanwhile survives.
    The request-log copies go to the recorder after the transaction.
    """
    runs = list(runs)
    if not runs:
        return []
    now = timezone.now()
    results, flips, touched = [], [], []
    with transaction.atomic():
        probes = Probe.objects.only(*_STATE_FIELDS).in_bulk([spec.probe_id for spec, _ in runs])
        for spec, run in runs:
            probe = probes.get(spec.probe_id)
            if probe is None:  # deleted while it ran
                continue
            state, failures, successes = next_state(
                probe.state,
                probe.consecutive_failures,
                probe.consecutive_successes,
                ok=run.ok,
                degraded=run.degraded,
                fail_threshold=probe.fail_threshold,
                recover_threshold=probe.recover_threshold,
            )
            if state != probe.state:
                flips.append(
                    ProbeFlip(
                        probe=probe,
                        created=now,
                        from_state=probe.state,
                        to_state=state,
                        reason=run.reason,
                        message=run.message,
                    )
                )
                logger.info("probe %s: %s → %s %s", probe.pk, probe.state, state, run.message)
                probe.state_changed_at = now
            probe.state = state
            probe.consecutive_failures = failures
            probe.consecutive_successes = successes
            probe.last_run_at = run.started_at
            probe.last_ok = run.ok
            probe.last_reason = run.reason
            probe.last_message = run.message
            probe.last_latency_ms = run.latency_ms
            if run.cert_days_left is not None:
                probe.cert_days_left = run.cert_days_left
                probe.cert_checked_at = now
            probe.claimed_until = None
            touched.append(probe)
            results.append(
                ProbeResult(
                    probe=probe,
                    created=run.started_at,
                    ok=run.ok,
                    degraded=run.degraded,
                    reason=run.reason,
                    status=run.status,
                    latency_ms=run.latency_ms,
                    cert_days_left=run.cert_days_left,
                    message=run.message,
                    scheduled_for=spec.scheduled_for,
                )
            )
        ProbeResult.objects.bulk_create(results)
        ProbeFlip.objects.bulk_create(flips)
        rows = [_db_values([getattr(p, f) for f in _RUN_FIELDS] + [p.pk]) for p in touched]
        with connection.cursor() as cursor:
            cursor.executemany(_update_sql(_RUN_FIELDS), rows)
    _to_request_log(runs)
    return results


def _to_request_log(runs: list[tuple[ProbeSpec, RunResult]]) -> None:
    """Every run is also an attempt in the request log (source "probe"), via the recorder."""
    from monitoring import recorder

    for spec, run in runs:
        recorder.record_attempt(
            integration_id=spec.integration_id,
            source="probe",
            method=run.method,
            url=run.url,
            status=run.status,
            outcome=run.outcome,
            latency_ms=run.latency_ms or 0.0,
            response_headers=run.response_headers,
            request_bytes=run.request_bytes,
            response_bytes=run.response_bytes,
            error_message="" if run.ok else run.message,
            created=run.started_at,
        )


# --- claiming ---------------------------------------------------------------------------------


def _next_slot(slot: dt.datetime, interval_s: int, now: dt.datetime) -> dt.datetime:
    """The slot after ``slot`` that is still ahead of ``now``, keeping the probe's phase."""
    step = dt.timedelta(seconds=max(1, interval_s))
    behind = (now - slot) // step if now >= slot else 0
    return slot + step * (behind + 1)


def _free(now: dt.datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def claim_due(
    *, limit: int, now: dt.datetime | None = None, due_by: dt.datetime | None = None
) -> list[ProbeSpec]:
    """Claim up to ``limit`` probes due by ``due_by`` (default now), oldest slot first."""
    if limit <= 0:
        return []
    now = now or timezone.now()
    due = (
        Probe.objects.filter(enabled=True, next_run_at__lte=due_by or now)
        .filter(_free(now))
        .order_by("next_run_at", "pk")
    )
    postgres = connection.vendor == "postgresql"
    # On SQLite every transaction takes the write lock: don't take it on an idle tick.
    if not postgres and not due.exists():
        return []
    # Compare-and-set per row: the slot must still be the one we read.
    # Inside this transaction nobody else can have moved it (SQLite: we hold the write lock;
    # PostgreSQL: we hold the row locks), so a short row count means something is badly
    # wrong and the whole claim is rolled back rather than half taken.
    sql = _update_sql(["next_run_at", "claimed_until"], "next_run_at = %s AND enabled")
    claimed, params = [], []
    with transaction.atomic():
        if postgres:
            due = due.select_for_update(skip_locked=True)
        for probe in due.only(*_SPEC_FIELDS)[:limit]:
            slot = probe.next_run_at
            timeout = min(max(probe.timeout_s, 0.1), MAX_TIMEOUT_S)
            until = now + dt.timedelta(seconds=timeout + CLAIM_MARGIN_S)
            params.append(
                _db_values([_next_slot(slot, probe.interval_s, now), until, probe.pk, slot])
            )
            claimed.append(ProbeSpec.from_probe(probe, scheduled_for=slot))
        if not claimed:
            return []
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            if cursor.rowcount != len(claimed):
                logger.error("claimed %d of %d due probes; retrying", cursor.rowcount, len(claimed))
                transaction.set_rollback(True)
                return []
    return claimed


_SPEC_FIELDS = [
    "id", "integration_id", "method", "url", "headers", "body", "timeout_s", "assertions",
    "interval_s", "next_run_at",
]  # fmt: skip


def _update_sql(fields: list[str], condition: str = "") -> str:
    """``UPDATE probe SET f = %s, … WHERE id = %s [AND condition]`` for executemany.

    One plain UPDATE per row: ``bulk_update`` builds CASE expressions that cost ~10 ms a row
    to compile, more than the probe run itself.
    """
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(Probe._meta.get_field(f).column)} = %s" for f in fields)
    where = f"{quote('id')} = %s" + (f" AND {condition}" if condition else "")
    # Only model field names and constants go in; values are parameters.
    return f"UPDATE {quote(Probe._meta.db_table)} SET {sets} WHERE {where}"  # noqa: S608


def _db_values(values: list[Any]) -> list[Any]:
    """Adapt datetimes the way Django's backend stores them (SQLite keeps text)."""
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(v) if isinstance(v, dt.datetime) else v for v in values]


# --- running ----------------------------------------------------------------------------------


async def _run_all(
    specs: list[ProbeSpec], *, verify: ssl.SSLContext | bool, concurrency: int
) -> list[RunResult]:
    gate = asyncio.Semaphore(concurrency)
    allowed = allow_hosts()
    async with make_client(verify=verify, concurrency=concurrency) as client:

        async def one(spec: ProbeSpec) -> RunResult:
            async with gate:
                return await execute(spec, client, allowed=allowed)

        return list(await asyncio.gather(*(one(s) for s in specs)))


def run_now(
    probes: Iterable[Probe], *, verify: ssl.SSLContext | bool = True
) -> tuple[list[ProbeResult], list[Probe]]:
    """Run these probes at once, outside their schedule: (results, probes already running).

    Each probe is claimed first, so a run already in flight elsewhere is not doubled; the
    schedule (``next_run_at``) is left alone.
    """
    probes = list(probes)
    concurrency = _concurrency()
    now = timezone.now()
    rounds = math.ceil(len(probes) / concurrency) if probes else 0
    hold = dt.timedelta(seconds=MAX_TIMEOUT_S * rounds + CLAIM_MARGIN_S)
    specs, busy = [], []
    for probe in probes:
        won = Probe.objects.filter(pk=probe.pk).filter(_free(now)).update(claimed_until=now + hold)
        if won:
            specs.append(ProbeSpec.from_probe(probe))
        else:
            busy.append(probe)
    if not specs:
        return [], busy
    try:
        runs = asyncio.run(_run_all(specs, verify=verify, concurrency=concurrency))
    except BaseException:
        Probe.objects.filter(pk__in=[s.probe_id for s in specs]).update(claimed_until=None)
        raise
    return record_runs(zip(specs, runs, strict=True)), busy


@dataclass
class DispatchStats:
    runs: int = 0
    ok: int = 0
    failed: int = 0
    # The latest runs' lateness only: a --loop dispatcher runs for months.
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def __str__(self) -> str:
        late = sorted(self.lateness_s)
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))] if late else 0.0
        return f"{self.runs} runs, {self.ok} ok, {self.failed} failed, lateness p99 {p99:.2f} s"


class _HttpThread:
    """An asyncio loop in a daemon thread, holding the shared AsyncClient."""

    def __init__(self, *, verify: ssl.SSLContext | bool, concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="probe-http", daemon=True)
        self.thread.start()
        self.client = self.call(self._open(verify, concurrency))

    @staticmethod
    async def _open(verify: ssl.SSLContext | bool, concurrency: int) -> httpx.AsyncClient:
        return make_client(verify=verify, concurrency=concurrency)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self, specs: list[ProbeSpec], allowed: list[str], done: queue.Queue) -> None:
        """Start runs of ``specs``; each finished (spec, RunResult) is put on ``done``.

        One hand-over for the whole batch: a wake-up per run would make the two threads
        trade the GIL once per probe (up to 5 ms each), delaying the last starts by seconds.
        """

        def launch() -> None:
            for spec in specs:
                task = self.loop.create_task(execute(spec, self.client, allowed=allowed))
                self.tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self.tasks.discard)
                task.add_done_callback(partial(_finished, done, spec))

        self.loop.call_soon_threadsafe(launch)

    def close(self) -> None:
        try:
            self.call(self.client.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


class Dispatcher:
    """Claims due probes every tick, runs them concurrently, writes results as they finish."""

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        verify: ssl.SSLContext | bool = True,
        tick_s: float = TICK_S,
    ) -> None:
        self.concurrency = concurrency or _concurrency()
        self.verify = verify
        self.tick_s = tick_s

    def run(
        self,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
        deadline: float | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> DispatchStats:
        """Dispatch until ``stop`` is set, ``deadline`` (monotonic) passes or ``keep_going()``
        says no; with ``once``, until nothing is due. Runs in hand always finish and are saved.
        """
        stop = stop or threading.Event()
        stats = DispatchStats()
        done: queue.Queue[tuple[ProbeSpec, RunResult]] = queue.Queue()
        allowed = allow_hosts()
        started = timezone.now()
        in_flight = 0
        finished: list[tuple[ProbeSpec, RunResult]] = []
        http = _HttpThread(verify=self.verify, concurrency=self.concurrency)
        try:
            while True:
                stopping = (
                    stop.is_set()
                    or (deadline is not None and time.monotonic() >= deadline)
                    or (keep_going is not None and not keep_going())
                )
                # Refill the free slots before saving what finished, so the HTTP loop is
                # never idle while this thread writes.
                if not stopping and in_flight < self.concurrency:
                    specs = self._claim(self.concurrency - in_flight, started if once else None)
                    if specs:
                        http.start(specs, allowed, done)
                    in_flight += len(specs)
                    stopping = once and not specs and in_flight == 0
                self._write(finished, stats)
                if stopping and in_flight == 0:
                    break
                finished = _collect(done, self.tick_s)
                in_flight -= len(finished)
        finally:
            http.close()
        return stats

    def _claim(self, limit: int, due_by: dt.datetime | None) -> list[ProbeSpec]:
        try:
            return claim_due(limit=limit, due_by=due_by)
        except Exception:
            # A locked or restarting database must not end the loop; try again next tick.
            logger.exception("claiming due probes failed")
            return []

    @staticmethod
    def _write(finished: list[tuple[ProbeSpec, RunResult]], stats: DispatchStats) -> None:
        if not finished:
            return
        try:
            record_runs(finished)
        except Exception:
            # The claims lapse by themselves; the next slots run as usual.
            logger.exception("saving %d probe results failed", len(finished))
        for spec, run in finished:
            stats.runs += 1
            stats.ok += run.ok
            stats.failed += not run.ok
            late = run.lateness_s(spec.scheduled_for)
            if late is not None:
                stats.lateness_s.append(late)


def _finished(done: queue.Queue, spec: ProbeSpec, task: asyncio.Task) -> None:
    # execute() never raises, but a cancelled task must still count as finished.
    try:
        run = task.result()
    except BaseException as exc:
        failure = _classify(exc, spec.timeout_s)
        run = RunResult(
            ok=False,
            started_at=timezone.now(),
            reason=str(failure.reason),
            outcome=failure.outcome,
            message=_clip(str(failure)),
            url=spec.url,
            method=spec.method,
        )
    done.put((spec, run))


def _collect(done: queue.Queue, timeout: float) -> list:
    """Wait up to ``timeout`` for one finished run, then take whatever else has finished."""
    try:
        items = [done.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            items.append(done.get_nowait())
        except queue.Empty:
            return items


# --- django-q2 entry points --------------------------------------------------------------------


def dispatcher_loop_seconds() -> float:
    """How long one scheduled dispatcher task loops: within django-q2's task timeout."""
    q_timeout = settings.Q_CLUSTER.get("timeout") or 120
    # The runs claimed last may take MAX_TIMEOUT_S more, then they are saved.
    return max(10.0, q_timeout - MAX_TIMEOUT_S - 10)


def _take_over() -> int:
    """Become the current dispatcher generation; older loops notice and stop."""
    with transaction.atomic():
        RollupState.objects.get_or_create(name=DISPATCHER_GENERATION)
        RollupState.objects.filter(name=DISPATCHER_GENERATION).update(
            value=F("value") + 1, updated=timezone.now()
        )
        return RollupState.objects.get(name=DISPATCHER_GENERATION).value


def _still_current(generation: int) -> Callable[[], bool]:
    checked = [time.monotonic(), True]

    def keep_going() -> bool:
        if time.monotonic() - checked[0] >= 1.0:
            checked[0] = time.monotonic()
            checked[1] = RollupState.objects.filter(
                name=DISPATCHER_GENERATION, value=generation
            ).exists()
        return bool(checked[1])

    return keep_going


def dispatch_task(loop_seconds: float | None = None) -> str:
    """django-q2 task (every minute): dispatch due probes until a newer task takes over."""
    generation = _take_over()
    seconds = loop_seconds if loop_seconds is not None else dispatcher_loop_seconds()
    stats = Dispatcher().run(
        deadline=time.monotonic() + seconds, keep_going=_still_current(generation)
    )
    return f"dispatcher {generation}: {stats}"


# --- demo -------------------------------------------------------------------------------------


def setup_demo_probes(sandbox_url: str | None = None) -> list[Probe]:
    """Probes against the sandbox for the demo integrations (idempotent, by name).

    The integrations are the client demo's (``monitoring.demo``), so probes and client
    traffic meet on one integration. Each gets a ``/v1/health`` probe. The first also gets
    "Latency budget", whose limits the sandbox's long-tailed latency breaks every few
    minutes; it goes down on one failure and needs three good runs to come back, so state
    changes show up within minutes of ``make run``.
    """
    from monitoring import demo

    base = (sandbox_url or demo.SANDBOX_URL).rstrip("/")
    probes = []
    for index, integration in enumerate(demo.demo_integrations(base).values()):
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
