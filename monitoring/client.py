"""Instrumented httpx clients: every attempt recorded (secrets redacted), retries, rate limits.

``MonitoredClient`` / ``AsyncMonitoredClient`` are ``httpx.Client`` / ``httpx.AsyncClient``
whose transport is a ``MonitoringTransport``; existing httpx code can adopt Upstream by
passing ``transport=MonitoringTransport(wrapped=httpx.HTTPTransport(), integration="x")``.

Where the work happens (the caller must not feel it):

* On the caller's thread, per attempt: two clock reads, the URL's parts, the response
  headers that matter (an allowlist: rate limit, Retry-After, Deprecation/Sunset, API
  version, Content-Length) and one ``monitoring.attempts.Attempt`` appended to the
  recorder's queue. Redaction that must happen before queueing is done here, with the
  integration's ``Policy``, and is cheap: request headers are never taken at all (so
  Authorization, Cookie, X-Api-Key … cannot leak), URL userinfo is never taken (only the
  host), query values whose *name* is a secret become ``[redacted]`` (verdicts cached per
  name), and a ``Link`` header is kept only when it announces a deprecation, scrubbed. A
  failed response's body and a transport error's message are scrubbed here too: that is
  the rare path, so its cost is acceptable.
* On the recorder's writer thread, ``attempts.to_row`` does the rest (path templates,
  value-shape scrubbing, header and error-payload parsing), as for every other source.

Latency is measured to the response headers (what a transport sees, as OpenTelemetry
does); the response size is its Content-Length, or the bytes read for a failure.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import anyio
import httpx
from django.conf import settings

from monitoring import attempts, parsing, recorder
from monitoring.attempts import Attempt, Policy, is_loopback
from monitoring.models import Integration, Outcome, Source
from monitoring.redaction import Redactor

__all__ = [
    "AsyncMonitoredClient",
    "InsecureRequestRefused",
    "MonitoredClient",
    "MonitoringTransport",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BODY_PARSE_CAP = parsing.BODY_WINDOW


class InsecureRequestRefused(httpx.RequestError):
    """A plain-http call to a non-loopback host of an integration that requires https."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    Retries ``retry_on`` statuses (only statuses ≥ 400 count) and connect errors /
    timeouts, for idempotent methods; POST and PATCH only when the request carries an
    ``Idempotency-Key`` header. The wait before attempt n+1 is ``backoff * 2**(n-1)``
    capped at ``max_backoff``, drawn uniformly from [0, that] with ``jitter="full"``, and
    at least what Retry-After (or, on a 429, the rate-limit reset) asks for. A retry whose
    wait would push the total past ``max_total_wait`` seconds is not made: the last
    response is returned (or the last exception raised), as plain httpx would.
    """

    max_attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: str | None = "full"
    retry_on: frozenset[int] = frozenset({429, 502, 503, 504})
    max_total_wait: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_total_wait < 0:
            raise ValueError("RetryPolicy waits must not be negative")
        if self.jitter not in ("full", None):
            raise ValueError('RetryPolicy.jitter must be "full" or None')
        object.__setattr__(self, "retry_on", frozenset(self.retry_on))

    def backoff_for(self, attempt: int) -> float:
        """The wait before ``attempt + 1`` (attempt counts from 1), before Retry-After."""
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, wait) if self.jitter == "full" else wait


# --- call ids ------------------------------------------------------------------------------


def _call_ids() -> Iterator[str]:
    """Process prefix + a hex counter; ``next()`` of it runs in C, once per call."""
    return map(f"{uuid.uuid4().hex[:16]}{{:x}}".format, itertools.count(1))


_call_ids_left = _call_ids()


def _after_fork() -> None:
    global _call_ids_left
    _call_ids_left = _call_ids()


# ``Attempt(...)`` runs the named tuple's Python ``__new__``; on the hot path the C
# constructor builds the same Attempt for a fraction of the cost (slots in Attempt's order).
_new_attempt = tuple.__new__


os.register_at_fork(after_in_child=_after_fork)


# --- the transport -----------------------------------------------------------------------------


class MonitoringTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps an httpx transport (sync or async): records every attempt, retries, throttles.

    ``integration`` is a slug (created as a sandbox integration on first use unless
    ``environment`` says otherwise) or an ``Integration``. ``throttle`` (0–1): when the
    provider reports less than that fraction of its quota left, calls are spaced out until
    the reset instead of burning what is left (this parses rate-limit headers on the
    caller's thread, so it costs a few µs per call). ``source`` is stored on every row.
    """

    def __init__(
        self,
        wrapped: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        *,
        integration: str | Integration,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        throttle: float | None = None,
        source: str = Source.CLIENT,
        base_url: str = "",
        _ref: Policy | None = None,
    ) -> None:
        if throttle is not None and not 0 < throttle < 1:
            raise ValueError("throttle must be a fraction between 0 and 1")
        if source not in Source.values:
            raise ValueError(f"source must be one of {', '.join(Source.values)}")
        self._wrapped = wrapped
        self._ref = _ref or attempts.policy_for(integration, environment, base_url)
        self._retry = retry
        self._throttle = throttle
        self._source = str(source)
        self._record = recorder.get().record
        self._quota: tuple[int, int, float] | None = None  # remaining, limit, reset epoch
        self._next_slot = 0.0

    @property
    def integration_id(self) -> int | None:
        return self._ref.id

    # -- sync ----------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._wrapped is None:
            self._wrapped = httpx.HTTPTransport()
        wrapped = self._wrapped
        url = request.url._uri_reference  # the parsed parts; the public properties cost 4×
        ref = self._ref
        if url.scheme == "http" and ref.require_https and not is_loopback(url.host):
            self._refuse(request, url)
        call_id = next(_call_ids_left)
        waited = self._throttle_wait() if self._throttle else 0.0
        if waited:
            time.sleep(waited)
        total_wait = waited
        attempt = 1
        while True:
            wall = time.time()
            start = perf_counter()
            try:
                response = wrapped.handle_request(request)
            except Exception as exc:
                elapsed = perf_counter() - start
                delay = self._exception_delay(request, exc, attempt, total_wait)
                self._emit_exception(request, url, exc, wall, elapsed, call_id, attempt, waited)
                if delay is None:
                    raise
                time.sleep(delay)
                waited, total_wait, attempt = delay, total_wait + delay, attempt + 1
                continue
            elapsed = perf_counter() - start
            status = response.status_code
            kept = ref.kept_headers(response.headers._list)
            if status < 400:
                self._record(
                    _new_attempt(Attempt, (
                        ref.ident, self._source, wall, elapsed * 1000.0, request.method,
                        url.scheme, url.host, url.port, url.path,
                        ref.redact_query(url.query) if url.query else None,
                        status, None, _request_bytes(request), None, kept, call_id, attempt,
                        waited * 1000.0, None, None, None, None,
                    ))
                )  # fmt: skip
                if self._throttle:
                    self._note_quota(kept, wall)
                return response
            try:
                raw = b"".join(response.stream)
            except Exception as exc:
                self._emit_exception(request, url, exc, wall, elapsed, call_id, attempt, waited)
                raise
            finally:
                response.stream.close()
            # The caller still reads the body (and httpx still times it) as usual.
            response.stream = httpx.ByteStream(raw)
            delay = self._status_delay(request, status, kept, attempt, total_wait, wall)
            self._emit_failure(
                request, url, response, raw, kept, wall, elapsed, call_id, attempt, waited
            )
            if self._throttle:
                self._note_quota(kept, wall)
            if delay is None:
                return response
            time.sleep(delay)
            waited, total_wait, attempt = delay, total_wait + delay, attempt + 1

    def close(self) -> None:
        if isinstance(self._wrapped, httpx.BaseTransport):
            self._wrapped.close()

    # -- async ---------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._wrapped is None:
            self._wrapped = httpx.AsyncHTTPTransport()
        wrapped = self._wrapped
        url = request.url._uri_reference
        ref = self._ref
        if url.scheme == "http" and ref.require_https and not is_loopback(url.host):
            self._refuse(request, url)
        call_id = next(_call_ids_left)
        waited = self._throttle_wait() if self._throttle else 0.0
        if waited:
            await anyio.sleep(waited)
        total_wait = waited
        attempt = 1
        while True:
            wall = time.time()
            start = perf_counter()
            try:
                response = await wrapped.handle_async_request(request)
            except Exception as exc:
                elapsed = perf_counter() - start
                delay = self._exception_delay(request, exc, attempt, total_wait)
                self._emit_exception(request, url, exc, wall, elapsed, call_id, attempt, waited)
                if delay is None:
                    raise
                await anyio.sleep(delay)
                waited, total_wait, attempt = delay, total_wait + delay, attempt + 1
                continue
            elapsed = perf_counter() - start
            status = response.status_code
            kept = ref.kept_headers(response.headers._list)
            if status < 400:
                self._record(
                    _new_attempt(Attempt, (
                        ref.ident, self._source, wall, elapsed * 1000.0, request.method,
                        url.scheme, url.host, url.port, url.path,
                        ref.redact_query(url.query) if url.query else None,
                        status, None, _request_bytes(request), None, kept, call_id, attempt,
                        waited * 1000.0, None, None, None, None,
                    ))
                )  # fmt: skip
                if self._throttle:
                    self._note_quota(kept, wall)
                return response
            try:
                raw = b"".join([chunk async for chunk in response.stream])
            except Exception as exc:
                self._emit_exception(request, url, exc, wall, elapsed, call_id, attempt, waited)
                raise
            finally:
                await response.stream.aclose()
            response.stream = httpx.ByteStream(raw)
            delay = self._status_delay(request, status, kept, attempt, total_wait, wall)
            self._emit_failure(
                request, url, response, raw, kept, wall, elapsed, call_id, attempt, waited
            )
            if self._throttle:
                self._note_quota(kept, wall)
            if delay is None:
                return response
            await anyio.sleep(delay)
            waited, total_wait, attempt = delay, total_wait + delay, attempt + 1

    async def aclose(self) -> None:
        if isinstance(self._wrapped, httpx.AsyncBaseTransport):
            await self._wrapped.aclose()

    # -- shared --------------------------------------------------------------------------------

    def _retryable(self, request: httpx.Request) -> bool:
        keyed = request.method in ("POST", "PATCH") and "idempotency-key" in request.headers
        if request.method not in IDEMPOTENT_METHODS and not keyed:
            return False
        try:
            request.content  # noqa: B018 - a streamed body cannot be sent twice
        except httpx.RequestNotRead:
            return False
        return True

    def _exception_delay(
        self, request: httpx.Request, exc: Exception, attempt: int, total_wait: float
    ) -> float | None:
        retry = self._retry
        if retry is None or attempt >= retry.max_attempts:
            return None
        if not isinstance(exc, httpx.TimeoutException | httpx.ConnectError):
            return None
        if not self._retryable(request):
            return None
        delay = retry.backoff_for(attempt)
        return delay if total_wait + delay <= retry.max_total_wait else None

    def _status_delay(
        self,
        request: httpx.Request,
        status: int,
        kept: list,
        attempt: int,
        total_wait: float,
        now: float,
    ) -> float | None:
        retry = self._retry
        if retry is None or status not in retry.retry_on or attempt >= retry.max_attempts:
            return None
        if not self._retryable(request):
            return None
        delay = retry.backoff_for(attempt)
        limits = parsing.parse_rate_limit(_decoded(kept), now)
        asked = limits.retry_after_s
        if asked is None and status == 429 and limits.reset_at is not None:
            asked = max(0.0, limits.reset_at - now)
        if asked is not None:
            delay = max(delay, asked)
        if total_wait + delay > retry.max_total_wait:
            return None  # waiting less than the provider asked would only fail again
        return delay

    def _throttle_wait(self) -> float:
        quota = self._quota
        if quota is None:
            return 0.0
        remaining, limit, reset_at = quota
        now = time.time()
        if reset_at <= now or remaining >= limit * self._throttle:
            return 0.0
        if remaining <= 0:
            return reset_at - now
        # Spread what is left evenly over the time to the reset.
        slot = max(now, self._next_slot)
        self._next_slot = slot + (reset_at - now) / remaining
        return slot - now

    def _note_quota(self, kept: list, now: float) -> None:
        limits = parsing.parse_rate_limit(_decoded(kept), now)
        if limits.limit and limits.remaining is not None and limits.reset_at:
            self._quota = (limits.remaining, limits.limit, limits.reset_at)

    def _emit_failure(
        self,
        request: httpx.Request,
        url: Any,
        response: httpx.Response,
        raw: bytes,
        kept: list,
        wall: float,
        elapsed: float,
        call_id: str,
        attempt: int,
        waited: float,
    ) -> None:
        content_type = response.headers.get("content-type", "")
        try:
            decoded = httpx.Response(
                response.status_code, headers=response.headers, stream=httpx.ByteStream(raw)
            ).read()[:BODY_PARSE_CAP]
        except httpx.DecodingError:
            decoded = raw[:BODY_PARSE_CAP]
        ref = self._ref
        scrubbed, mime = ref.scrub_body(decoded, content_type)
        self._record(
            _new_attempt(Attempt, (
                ref.ident, self._source, wall, elapsed * 1000.0, request.method, url.scheme,
                url.host, url.port, url.path,
                ref.redact_query(url.query) if url.query else None, response.status_code,
                None, _request_bytes(request), len(raw), kept, call_id, attempt,
                waited * 1000.0, None, scrubbed, mime, None,
            ))
        )  # fmt: skip

    def _emit_exception(
        self,
        request: httpx.Request,
        url: Any,
        exc: BaseException,
        wall: float,
        elapsed: float,
        call_id: str,
        attempt: int,
        waited: float,
    ) -> None:
        ref = self._ref
        message = ref.redactor.text(f"{type(exc).__name__}: {exc}")[:500]
        self._record(
            _new_attempt(Attempt, (
                ref.ident, self._source, wall, elapsed * 1000.0, request.method, url.scheme,
                url.host, url.port, url.path,
                ref.redact_query(url.query) if url.query else None, None,
                parsing.classify_exception(exc), _request_bytes(request), None, None, call_id,
                attempt, waited * 1000.0, message, None, None, None,
            ))
        )  # fmt: skip

    def _refuse(self, request: httpx.Request, url: Any) -> None:
        ref = self._ref
        policy = settings.UPSTREAM.get("HTTPS_POLICY", "refuse")
        label = f"{ref.slug} · {ref.environment or 'sandbox'}"
        if policy == "flag":
            key = (ref.slug, url.host)
            if key not in _flagged and len(_flagged) < 1024:
                _flagged[key] = True
                logger.warning(
                    "Upstream: %s requires https; plain-http call to %s", label, url.host
                )
            return
        message = (
            f"Upstream refused a plain-http call to {url.host}: integration {label} requires "
            "https (use an https:// URL, untick require_https, or set UPSTREAM_HTTPS_POLICY=flag)"
        )
        self._record(
            _new_attempt(Attempt, (
                ref.ident, self._source, time.time(), 0.0, request.method, url.scheme,
                url.host, url.port, url.path,
                ref.redact_query(url.query) if url.query else None, None,
                Outcome.BLOCKED.value, _request_bytes(request), None, None,
                next(_call_ids_left), 1, 0.0, message[:500], None, None, None,
            ))
        )  # fmt: skip
        raise InsecureRequestRefused(message, request=request)


_flagged: dict[tuple[str, str], bool] = {}


class _RedactHttpxLog(logging.Filter):
    """httpx logs each request's URL at INFO; userinfo and secret query values must not
    reach the logs either."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], httpx.URL):
            record.args = (args[0], _LOG_REDACTOR.url(str(args[1])), *args[2:])
        return True


_LOG_REDACTOR = Redactor()
logging.getLogger("httpx").addFilter(_RedactHttpxLog())


def _request_bytes(request: httpx.Request) -> int | None:
    try:
        return len(request.content)
    except httpx.RequestNotRead:
        return None  # a streamed upload: its size is not known up front


def _decoded(kept: list | None) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in kept or ()}


# --- the clients -------------------------------------------------------------------------------

_CURSOR_FIELDS = (
    ("next_cursor",),
    ("nextCursor",),
    ("next_page_token",),
    ("nextPageToken",),
    ("meta", "next_cursor"),
    ("response_metadata", "next_cursor"),
    ("pagination", "next_cursor"),
)
_URL_FIELDS = (
    ("next_url",),
    ("nextLink",),
    ("@odata.nextLink",),
    ("links", "next"),
    ("paging", "next"),
    ("_links", "next", "href"),
    ("meta", "next"),
    ("next",),
)


def next_page(response: httpx.Response, cursor_param: str) -> tuple[httpx.URL, dict | None] | None:
    """Where the page after ``response`` is: a ``Link: rel="next"`` URL, a next-page URL
    in the JSON body, or a cursor field (sent back as ``cursor_param``); None at the end."""
    link = response.links.get("next", {}).get("url")
    if link:
        return response.url.join(link), None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    for path in _URL_FIELDS:
        value = _dig(body, path)
        if isinstance(value, str) and value and ("/" in value or value.startswith("http")):
            return response.url.join(value), None
    for path in (*_CURSOR_FIELDS, ("next",)):
        value = _dig(body, path)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            params = dict(response.request.url.params)
            params[cursor_param] = str(value)
            return response.request.url.copy_with(query=None), params
    return None


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _wrap_transports(client: httpx.Client | httpx.AsyncClient, **options: Any) -> None:
    # httpx builds its own default transport (TLS, limits, proxies from the environment)
    # from the constructor's arguments; wrapping what it built keeps all of that.
    ref = attempts.policy_for(options["integration"], options["environment"], options["base_url"])

    def wrap(transport):
        if transport is None or isinstance(transport, MonitoringTransport):
            return transport
        return MonitoringTransport(transport, _ref=ref, **options)

    client._transport = wrap(client._transport)
    client._mounts = {pattern: wrap(t) for pattern, t in client._mounts.items()}
    client.integration_ref = ref


class MonitoredClient(httpx.Client):
    """An ``httpx.Client`` whose every attempt is recorded; see ``MonitoringTransport``."""

    def __init__(
        self,
        *,
        integration: str | Integration,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        throttle: float | None = None,
        source: str = Source.CLIENT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _wrap_transports(
            self,
            integration=integration,
            environment=environment,
            retry=retry,
            throttle=throttle,
            source=source,
            base_url=str(kwargs.get("base_url") or ""),
        )

    def paginate(
        self,
        url: httpx.URL | str,
        *,
        method: str = "GET",
        params: dict | None = None,
        cursor_param: str = "cursor",
        max_pages: int = 1000,
        **kwargs: Any,
    ) -> Iterator[httpx.Response]:
        """Yield each page, following ``Link: rel="next"`` or a JSON next-page field.

        Stops at the last page, at an error response (yielded), at a page seen before, or
        after ``max_pages``. Every page is a recorded call.
        """
        seen: set[str] = set()
        for _ in range(max_pages):
            response = self.request(method, url, params=params, **kwargs)
            yield response
            found = _follow(response, cursor_param, seen)
            if found is None:
                return
            url, params = found


def _follow(
    response: httpx.Response, cursor_param: str, seen: set[str]
) -> tuple[httpx.URL, dict | None] | None:
    """The next page's URL and params; None at the last page, an error, or a page seen before."""
    found = None if response.is_error else next_page(response, cursor_param)
    if found is None:
        return None
    key = f"{found[0]}?{sorted((found[1] or {}).items())}"
    if key in seen:
        return None
    seen.add(key)
    return found


class AsyncMonitoredClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose every attempt is recorded; see ``MonitoringTransport``."""

    def __init__(
        self,
        *,
        integration: str | Integration,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        throttle: float | None = None,
        source: str = Source.CLIENT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _wrap_transports(
            self,
            integration=integration,
            environment=environment,
            retry=retry,
            throttle=throttle,
            source=source,
            base_url=str(kwargs.get("base_url") or ""),
        )

    async def paginate(
        self,
        url: httpx.URL | str,
        *,
        method: str = "GET",
        params: dict | None = None,
        cursor_param: str = "cursor",
        max_pages: int = 1000,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Async twin of ``MonitoredClient.paginate``."""
        seen: set[str] = set()
        for _ in range(max_pages):
            response = await self.request(method, url, params=params, **kwargs)
            yield response
            found = _follow(response, cursor_param, seen)
            if found is None:
                return
            url, params = found
