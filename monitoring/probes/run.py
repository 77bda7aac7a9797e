"""One probe run over HTTP: the SSRF guard, pinned DNS, ``${ENV}`` headers, TLS facts, a verdict.

Nothing here touches the database. :func:`execute` takes a :class:`ProbeSpec` (plain values
copied from the probe row) and returns a :class:`RunResult`; it never raises. On the way it
resolves ``${VAR}`` header references from the environment, checks the URL with
:mod:`monitoring.probes.netguard`, connects to the checked address itself (so DNS cannot
answer differently a moment later), follows up to five redirects by hand (each one checked
again), reads at most 1 MiB of body, takes the certificate's expiry from the live TLS
connection and judges the response with :mod:`monitoring.probes.assertions`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings
from django.utils import timezone

from monitoring import envref, parsing
from monitoring.models import FailureReason as Reason
from monitoring.models import Outcome
from monitoring.probes import netguard
from monitoring.probes.assertions import (
    Assertions,
    InvalidAssertion,
    _walk,
    evaluate,
    parse_json_path,
)
from monitoring.probes.assertions import cert_days_left as days_until

if TYPE_CHECKING:
    from monitoring.models import Probe

logger = logging.getLogger(__name__)

MAX_TIMEOUT_S = 30.0
BODY_READ_LIMIT = 1024 * 1024
MAX_REDIRECTS = 5
MESSAGE_LIMIT = 500
USER_AGENT = "Upstream-probe/1"
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers the runner sets itself: Host is how it pins the checked address.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# parsing.classify_exception's outcome classes, as the reason a probe run failed.
_REASONS = {
    parsing.TIMEOUT: Reason.TIMEOUT,
    parsing.TLS_ERROR: Reason.TLS,
    parsing.CONNECT_ERROR: Reason.CONNECT,
    parsing.PROTOCOL_ERROR: Reason.CONNECT,
    parsing.READ_ERROR: Reason.CONNECT,
    parsing.OTHER_ERROR: Reason.ERROR,
}


class MissingSecret(LookupError):
    """A header refers to an environment variable that is not set in this process."""


def resolve_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Substitute ``${NAME}`` references from the environment; the result is never stored.

    Raises :class:`monitoring.envref.ForbiddenReference`, so nothing is sent, if a
    header names a variable probes may not send.
    """
    resolved = {}
    missing, broken = [], []
    for name, value in headers.items():
        text = str(value)
        # Checked again here, not only at save: a row can predate the policy or bypass the form.
        envref.check(text)
        for ref in envref.names_in(text):
            if ref not in os.environ:
                missing.append(ref)
            elif any(c in os.environ[ref] for c in "\r\n\0"):
                broken.append(ref)
        resolved[str(name)] = envref.resolve(text, os.environ)
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
    refs = {ref for value in headers.values() for ref in envref.names_in(str(value))}
    values = {os.environ.get(ref, "") for ref in refs}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    # Assertion messages quote response values, and a server may echo a request header back.
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return text


def allow_hosts() -> list[str]:
    """Private or loopback ``host[:port]`` entries the SSRF guard lets probes reach."""
    return list(settings.UPSTREAM.get("PROBE_ALLOW_HOSTS", []))


def default_concurrency() -> int:
    """How many probe runs may be in flight at once in one process (PROBE_CONCURRENCY)."""
    return int(settings.UPSTREAM.get("PROBE_CONCURRENCY", 50))


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
    kind: str = "http"
    steps: tuple[dict[str, Any], ...] = ()

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
            kind=probe.kind or "http",
            steps=tuple(dict(step) for step in (probe.steps or ()) if isinstance(step, dict)),
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
    #: A multi-step run's requests, each its own attempt in the request log; empty for a
    #: single request (the run itself is the attempt).
    attempts: list[RunResult] = field(default_factory=list)
    #: A status-page run's open incident (name, link, since), or None when there is none.
    incident: tuple[str, str, dt.datetime | None] | None = None
    #: False for runs that are no call to the provider's API (its status page): kept out of
    #: the request log so they never count in its error rates.
    logged: bool = True

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


def _failure(exc: BaseException, timeout_s: float) -> _Failure:
    """A failure reason, a request-log outcome and a message for what ended a run.

    The probe's own refusals come first; transport failures are classified by
    :func:`monitoring.parsing.classify_exception`, as the client's are.
    """
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, netguard.BlockedDestination):
        return _Failure(Reason.BLOCKED, Outcome.BLOCKED, f"refused: {exc}")
    if isinstance(exc, netguard.UnresolvableHost):
        return _Failure(Reason.CONNECT, Outcome.CONNECT_ERROR, str(exc))
    if isinstance(exc, envref.ForbiddenReference):
        return _Failure(Reason.ERROR, Outcome.BLOCKED, f"refused: {exc}")
    if isinstance(exc, MissingSecret | InvalidAssertion):
        return _Failure(Reason.ERROR, Outcome.OTHER_ERROR, str(exc))
    outcome = parsing.classify_exception(exc)
    reason = _REASONS.get(outcome, Reason.ERROR)
    if outcome == parsing.TIMEOUT:
        what = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for a response"
        message = f"timed out after {timeout_s:g} s {what}"
    elif outcome == parsing.TLS_ERROR:
        tls = parsing.tls_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            detail = f"certificate verify failed: {tls.verify_message}"
        else:
            detail = (tls.reason or str(tls)) if tls is not None else str(exc)
        message = f"TLS handshake failed: {detail}"
    elif outcome == parsing.CONNECT_ERROR:
        message = f"connection failed: {exc}"
    elif outcome == parsing.PROTOCOL_ERROR:
        message = f"connection broken by the server: {exc}"
    elif outcome == parsing.READ_ERROR:
        message = f"connection reset: {exc}"
    elif isinstance(exc, httpx.HTTPError | OSError):
        message = f"{type(exc).__name__}: {exc}"
    else:
        logger.exception("probe run failed unexpectedly", exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
    return _Failure(reason, outcome, message)


def failed_run(
    spec: ProbeSpec,
    exc: BaseException,
    *,
    started_at: dt.datetime | None = None,
    latency_ms: float | None = None,
) -> RunResult:
    """The result of a run that ``exc`` ended, its message scrubbed of the probe's secrets."""
    failure = _failure(exc, spec.timeout_s)
    return RunResult(
        ok=False,
        started_at=started_at or timezone.now(),
        reason=str(failure.reason),
        outcome=failure.outcome,
        message=_clip(_scrub(str(failure), _secret_values(spec.headers))),
        latency_ms=latency_ms,
        url=spec.url,
        method=spec.method,
    )


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
            if parsing.tls_cause(exc) is not None:
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
    content = spec.body.encode() if spec.body else None
    return await _fetch_url(client, spec.method, spec.url, content, headers, spec.headers, allowed)


async def _fetch_url(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    content: bytes | None,
    headers: dict[str, str],
    configured: Mapping[str, Any],
    allowed: list[str],
) -> _Fetched:
    """Send one request, following redirects by hand; ``configured`` is the headers as stored
    (``${ENV}`` references unresolved), to know which ones carry secrets."""
    url, addresses = await _check(url, allowed)
    for _hop in range(MAX_REDIRECTS + 1):
        fetched = await _request_pinned(client, method, url, addresses, headers, content)
        response = fetched.response
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or not location:
            return fetched
        next_url, addresses = await _check(url, allowed, location=location)
        if not _same_origin(url, next_url):
            # Credentials from the environment (or extracted from an earlier step) go only
            # to the origin they were configured for.
            headers = {
                k: v
                for k, v in headers.items()
                if not envref.names_in(str(configured.get(k, "")))
                and not _VAR.search(str(configured.get(k, "")))
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
    runner = _runner(spec)
    if runner is not None:
        try:
            return await runner(spec, client, allowed)
        except Exception as exc:
            return failed_run(spec, exc)
    started_at = timezone.now()
    started = time.perf_counter()
    try:
        assertions = Assertions.from_dict(spec.assertions)
        headers = {"User-Agent": USER_AGENT, **resolve_headers(spec.headers)}
        async with asyncio.timeout(spec.timeout_s):
            fetched = await _fetch(client, spec, headers, allowed)
    except Exception as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        return failed_run(spec, exc, started_at=started_at, latency_ms=latency_ms)

    latency_ms = (time.perf_counter() - started) * 1000
    response = fetched.response
    verdict = _judge(assertions, fetched, latency_ms)
    message = verdict.message or f"{response.status_code} in {latency_ms:.0f} ms"
    return RunResult(
        ok=verdict.ok,
        started_at=started_at,
        degraded=verdict.degraded,
        reason=str(verdict.reason) if verdict.reason else "",
        message=_clip(_scrub(message, _secret_values(spec.headers))),
        status=response.status_code,
        latency_ms=latency_ms,
        cert_days_left=fetched.cert_days_left,
        url=fetched.url,
        method=fetched.method,
        outcome=parsing.classify_status(response.status_code),
        response_headers=dict(response.headers),
        request_bytes=fetched.request_bytes,
        response_bytes=len(fetched.body),
    )


def make_client(
    *, verify: ssl.SSLContext | bool = True, concurrency: int | None = None
) -> httpx.AsyncClient:
    """The AsyncClient probes share: no redirects (done by hand), no proxies, no keep-alive.

    No keep-alive so that every run measures a full connect and handshake, reads the
    certificate of this run's connection, and never reuses a connection made for another
    name on the same pinned address.
    """
    limit = concurrency or default_concurrency()
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(MAX_TIMEOUT_S),
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=0),
    )


# --- multi-step probes ------------------------------------------------------------------------
#
# A step is a dict: name, method, url (absolute, or a path resolved against the probe's URL),
# headers, body (text, or a JSON value sent as JSON), extract ({"var": "$.json.path"}),
# assertions, and optionally lifetime_s (how long extracted values stay good when they are
# not a JWT with an ``exp``). ``{{var}}`` takes an earlier step's extracted value, ``${ENV}``
# an environment variable (the envref policy applies). Extracted values stay in this
# process's memory: they are scrubbed from every message and URL that leaves the runner.

MAX_STEPS = 5
# Reused values are dropped this long before they expire, so a call never races the expiry.
REUSE_MARGIN_S = 60.0
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class StepError(ValueError):
    """A step refers to a variable no earlier step extracts, or its body is malformed."""


@dataclass
class _Reused:
    key: str
    values: dict[str, str]
    expires_at: float  # epoch seconds


# (probe id, step index) → values a sign-in step extracted, while they are still good.
# One worker process signs in once per token lifetime, whatever the probe's interval.
_reused: dict[tuple[int, int], _Reused] = {}
_reused_lock = threading.Lock()


def forget_tokens(probe_id: int | None = None) -> None:
    """Drop the values kept for reuse (of one probe, or all): the next run signs in again."""
    with _reused_lock:
        for key in [k for k in _reused if probe_id is None or k[0] == probe_id]:
            del _reused[key]


def jwt_expiry(token: str) -> float | None:
    """A JWT's ``exp`` (epoch seconds), read without verifying; None if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
        return float(exp)
    return None


def _step_key(step: Mapping[str, Any]) -> str:
    # A changed step (another user, another URL) must not reuse the old step's token.
    return json.dumps(step, sort_keys=True, default=str)


def _expiry(step: Mapping[str, Any], values: dict[str, str], now: float) -> float | None:
    candidates = [e for e in (jwt_expiry(v) for v in values.values()) if e is not None]
    lifetime = step.get("lifetime_s")
    if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
        candidates.append(now + float(lifetime))
    if not candidates:
        return None
    return min(candidates) - REUSE_MARGIN_S


def _substitute(text: str, variables: Mapping[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise StepError(f"{{{{{name}}}}} is not extracted by an earlier step")
        return variables[name]

    return _VAR.sub(value, text)


def _fill(value: Any, variables: Mapping[str, str]) -> Any:
    """``{{var}}`` and ``${ENV}`` in every string of a JSON value (its structure kept)."""
    if isinstance(value, str):
        envref.check(value)
        missing = [ref for ref in envref.names_in(value) if ref not in os.environ]
        if missing:
            names = ", ".join(sorted(set(missing)))
            raise MissingSecret(f"environment variable not set in the probe runner: {names}")
        # Environment first: an extracted value (the provider's text) is never resolved.
        return _substitute(envref.resolve(value, os.environ), variables)
    if isinstance(value, list):
        return [_fill(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, variables) for k, v in value.items()}
    return value


def _step_request(
    spec: ProbeSpec, step: Mapping[str, Any], variables: Mapping[str, str]
) -> tuple[str, str, dict[str, str], bytes | None]:
    method = str(step.get("method") or "GET").upper()
    target = str(step.get("url") or step.get("path") or "")
    url = urljoin(spec.url, _substitute(target, variables)) if target else spec.url
    raw_headers = {str(k): str(v) for k, v in (step.get("headers") or {}).items()}
    headers = {"User-Agent": USER_AGENT}
    # Environment first: an extracted value (the provider's text) is never resolved.
    for name, text in resolve_headers(raw_headers).items():
        text = _substitute(text, variables)
        if any(c in text for c in "\r\n\0"):
            raise StepError(f"header {name}: an extracted value holds a line break")
        headers[name] = text
    body = step.get("body")
    content = None
    if isinstance(body, str):
        content = _fill(body, variables).encode() if body else None
    elif body is not None:
        content = json.dumps(_fill(body, variables)).encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return method, url, headers, content


def _extract(step: Mapping[str, Any], body: bytes) -> dict[str, str] | str:
    """The step's extracted values, or why one of them could not be read."""
    wanted = step.get("extract") or {}
    if not wanted:
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        return "the response is not JSON, so nothing could be extracted"
    values = {}
    for name, expr in wanted.items():
        value, missing = _walk(doc, parse_json_path(str(expr)).steps)
        if missing:
            return f"cannot extract {name}: {missing}"
        if isinstance(value, dict | list) or value is None:
            return f"cannot extract {name}: {expr} is not a text or number value"
        values[str(name)] = str(value)
    return values


def _step_name(step: Mapping[str, Any], index: int) -> str:
    return str(step.get("name") or f"step {index + 1}")[:60]


async def _execute_steps(
    spec: ProbeSpec, client: httpx.AsyncClient, allowed: list[str]
) -> RunResult:
    """Run the steps in order; the first failing step ends the run and names itself."""
    started_at = timezone.now()
    started = time.perf_counter()
    variables: dict[str, str] = {}
    secrets = _secret_values({"": json.dumps(spec.steps)})
    steps_done: list[RunResult] = []
    reused_any = False
    final: RunResult | None = None
    for index, step in enumerate(spec.steps[:MAX_STEPS]):
        name = _step_name(step, index)
        key = (spec.probe_id, index)
        now = time.time()
        with _reused_lock:
            kept = _reused.get(key)
        if kept is not None and kept.key == _step_key(step) and kept.expires_at > now:
            variables.update(kept.values)
            secrets = sorted({*secrets, *(v for v in kept.values.values() if len(v) >= 4)},
                             key=len, reverse=True)  # fmt: skip
            reused_any = True
            continue
        run = await _run_step(spec, step, variables, client, allowed)
        steps_done.append(run)
        if run.ok:
            extracted = _extract(step, run._body)  # type: ignore[attr-defined]
            if isinstance(extracted, str):
                run.ok, run.reason, run.message = False, str(Reason.JSON_PATH), extracted
            else:
                variables.update(extracted)
                secrets = sorted({*secrets, *(v for v in extracted.values() if len(v) >= 4)},
                                 key=len, reverse=True)  # fmt: skip
                expires = _expiry(step, extracted, now) if extracted else None
                if expires is not None and expires > now:
                    with _reused_lock:
                        _reused[key] = _Reused(_step_key(step), extracted, expires)
        del run._body  # type: ignore[attr-defined]
        if not run.ok:
            run.message = f"step {name!r} failed: {run.message}"
            final = run
            break
    if final is not None and reused_any and final.status in (401, 403):
        # The kept token was refused (revoked, or a clock off): sign in afresh next time.
        forget_tokens(spec.probe_id)
    for run in steps_done:
        run.message = _clip(_scrub(run.message, secrets))
        run.url = _scrub(run.url, secrets)
    last = final or (steps_done[-1] if steps_done else None)
    latency_ms = (time.perf_counter() - started) * 1000
    if last is None:
        return RunResult(ok=True, started_at=started_at, message="no steps to run",
                         latency_ms=latency_ms, url=spec.url, method=spec.method)  # fmt: skip
    ok = final is None
    count = len(steps_done)
    message = (
        last.message
        if not ok
        else (
            f"{count} step{'s' if count != 1 else ''} ok in {latency_ms:.0f} ms"
            + (" (signed in earlier)" if reused_any else "")
        )
    )
    return RunResult(
        ok=ok,
        started_at=started_at,
        degraded=ok and any(r.degraded for r in steps_done),
        reason=last.reason if not ok else "",
        message=_clip(message),
        status=last.status,
        latency_ms=latency_ms,
        cert_days_left=last.cert_days_left,
        url=last.url,
        method=last.method,
        outcome=last.outcome,
        response_headers=last.response_headers,
        request_bytes=last.request_bytes,
        response_bytes=last.response_bytes,
        attempts=steps_done,
    )


async def _run_step(
    spec: ProbeSpec,
    step: Mapping[str, Any],
    variables: Mapping[str, str],
    client: httpx.AsyncClient,
    allowed: list[str],
) -> RunResult:
    started_at = timezone.now()
    started = time.perf_counter()
    url = spec.url
    method = str(step.get("method") or "GET").upper()
    try:
        assertions = Assertions.from_dict(step.get("assertions") or None)
        method, url, headers, content = _step_request(spec, step, variables)
        async with asyncio.timeout(spec.timeout_s):
            fetched = await _fetch_url(
                client, method, url, content, headers, step.get("headers") or {}, allowed
            )
    except Exception as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        if isinstance(exc, StepError):
            exc = _Failure(Reason.ERROR, Outcome.OTHER_ERROR, str(exc))
        failure = _failure(exc, spec.timeout_s)
        run = RunResult(ok=False, started_at=started_at, reason=str(failure.reason),
                        outcome=failure.outcome, message=str(failure), latency_ms=latency_ms,
                        url=url, method=method)  # fmt: skip
        run._body = b""  # type: ignore[attr-defined]
        return run
    latency_ms = (time.perf_counter() - started) * 1000
    response = fetched.response
    verdict = _judge(assertions, fetched, latency_ms)
    run = RunResult(
        ok=verdict.ok,
        started_at=started_at,
        degraded=verdict.degraded,
        reason=str(verdict.reason) if verdict.reason else "",
        message=verdict.message or f"{response.status_code} in {latency_ms:.0f} ms",
        status=response.status_code,
        latency_ms=latency_ms,
        cert_days_left=fetched.cert_days_left,
        url=fetched.url,
        method=fetched.method,
        outcome=parsing.classify_status(response.status_code),
        response_headers=dict(response.headers),
        request_bytes=fetched.request_bytes,
        response_bytes=len(fetched.body),
    )
    # Kept only until the extraction reads it; deleted before the result leaves the runner.
    run._body = fetched.body  # type: ignore[attr-defined]
    return run


def _runner(spec: ProbeSpec):
    """The coroutine function for probes other than one plain request, or None."""
    if spec.kind == "statuspage":
        from monitoring.probes import statuspage

        return statuspage.execute
    if spec.steps:
        return _execute_steps
    return None


def _judge(assertions, fetched, latency_ms: float):
    """The assertions' verdict on one fetched response (single probes and each step)."""
    response = fetched.response
    return evaluate(
        assertions,
        status=response.status_code,
        latency_ms=latency_ms,
        headers=response.headers,
        body=fetched.body,
        url_scheme=httpx.URL(fetched.url).scheme,
        cert_days_left=fetched.cert_days_left,
    )
