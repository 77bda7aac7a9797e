"""Instrumented httpx clients inside Upstream: the SDK's capture, recorded in-process.

``MonitoredClient`` / ``AsyncMonitoredClient`` are ``httpx.Client`` / ``httpx.AsyncClient``
whose transport is a ``MonitoringTransport``; existing httpx (or httpx2) code can adopt
Upstream by passing ``transport=MonitoringTransport(wrapped=…, integration="x")``.

Capture itself is ``upstream_client``'s, the same code any app runs (``TransportCore``:
timing to headers, first byte and end of body, SDK retries as attempts of one call, broken
streams and SSE error events, the library's own stream and exception types, caller-side
redaction). This module adds what only Upstream's own process has: the integration's
``Policy`` (its id, explicit templates, extra redaction names and https rule), the
``source`` of each row, the throttle, and recording through the in-process recorder
instead of shipping. On the caller's thread a response's record (the capture's ``Meter``)
becomes one ``Attempt`` appended to the recorder's queue, without an event dict in between;
the writer thread's ``attempts.to_row`` does the rest (templating, parsing, scrubbing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from django.conf import settings
from upstream_client import facts
from upstream_client._capture import CALLS, HTTPX, Capture, Meter, new_call_id, sse_of
from upstream_client._httpx import TransportCore
from upstream_client.retry import RetryPolicy

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

BODY_PARSE_CAP = parsing.BODY_WINDOW
# ``Attempt(...)`` runs the named tuple's Python ``__new__``; on the hot path the C
# constructor builds the same Attempt for a fraction of the cost (slots in Attempt's order).
_new_attempt = tuple.__new__


class InsecureRequestRefused(httpx.RequestError):
    """A plain-http call to a non-loopback host of an integration that requires https."""


# --- events → attempts ---------------------------------------------------------------------

_split_cache: dict[str, tuple[str, str, int | None, str, str]] = {}


def _split(url: str) -> tuple[str, str, int | None, str, str]:
    """(scheme, host, port or None, path, query) of a URL the SDK built; cached."""
    found = _split_cache.get(url)
    if found is None:
        scheme, _, rest = url.partition("://")
        rest, _, query = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        host, port = netloc, None
        if netloc.startswith("["):
            host, _, after = netloc[1:].partition("]")
            if after.startswith(":") and after[1:].isdigit():
                port = int(after[1:])
        elif ":" in netloc:
            host, _, digits = netloc.rpartition(":")
            port = int(digits) if digits.isdigit() else None
        if port == (443 if scheme == "https" else 80):
            port = None
        found = (scheme, host, port, slash + path if slash else "/", query)
        if len(_split_cache) > 4096:
            _split_cache.clear()
        _split_cache[url] = found
    return found


class _Recorded(Capture):
    """The SDK's capture with this process's recorder as its sink and the integration's
    policy on every attempt."""

    def __init__(self, ref: Policy, source: str) -> None:
        self.integration = ref.slug
        self.environment = ref.environment or "sandbox"
        self._sink = None
        self.calls = CALLS
        self.ref = ref
        self.source = source
        self._record = recorder.get().record

    def event(
        self,
        method: str,
        url: str,
        wall: float,
        latency_ms: float,
        status: int | None,
        request_bytes: int | None,
        headers: dict[str, str] | None,
        call_id: str,
        attempt: int,
        backoff_ms: float,
        facts: dict | None = None,
    ) -> dict:
        # The SDK's event, but the time stays epoch seconds: it never leaves the process.
        event = {
            "method": method,
            "url": url,
            "time": wall,
            "status": status,
            "latency_ms": latency_ms,
            "request_bytes": request_bytes,
            "response_bytes": None,
            "response_headers": headers,
            "call_id": call_id,
            "attempt": attempt,
            "backoff_ms": backoff_ms,
            "streamed": False,
        }
        if facts:
            event.update(facts)
        return event

    @property
    def success_bodies(self) -> bool:
        # The integration's policy says whether its API answers errors with a 2xx.
        return bool(getattr(self.ref, "success_bodies", False))

    def submit(self, event: dict | Meter) -> None:
        try:
            if event.__class__ is dict:
                self._record(self._attempt(event))
            else:  # a Meter: the SDK's record of a response
                self._record(self._meter_attempt(event))
        except Exception:  # recording must never break the caller's call
            logger.exception("Upstream: an attempt was not recorded")

    def _meter_attempt(self, meter: Meter) -> Attempt:
        found = meter_attempt(meter, self.ref, self.ref.ident, self.source)
        return found if found is not None else self._attempt(meter.event())

    def _attempt(self, event: dict) -> Attempt:
        ref = self.ref
        scheme, host, port, path, query = _split(event["url"])
        if query and ref.redact_names:
            query = ref.redact_query(query)
        headers = event["response_headers"]  # the writer keeps what it parses
        content_type = None
        status = event["status"]
        body = event.get("error_body")
        message = None
        if body is not None:
            if status is None:
                message, body = ref.redactor.text(body)[:500], None
            else:
                body, content_type = ref.scrub_body(
                    body.encode(), (headers or {}).get("content-type")
                )
        given = {
            "first_byte_ms": event.get("first_byte_ms"),
            "duration_ms": event.get("duration_ms"),
        }
        if event["streamed"]:
            given["streamed"] = True
        if "stream_error" in event:
            given["error_code"] = event["stream_error"]
        for name in ("key_fingerprint", "version_header", "token_age_s", "batch_size", "ok_body"):
            if name in event:
                given[name] = event[name]
        return _new_attempt(Attempt, (
            ref.ident, self.source, event["time"], event["latency_ms"], event["method"], scheme,
            host, port, path, query or None, status, event.get("outcome"),
            event["request_bytes"], event["response_bytes"], headers, event["call_id"],
            event["attempt"], event["backoff_ms"], message, body, content_type, given,
        ))  # fmt: skip


def meter_attempt(meter: Meter, ref: Policy, ident: Any, source: str) -> Attempt | None:
    """The Attempt of an httpx/httpx2 response's record, straight from what the caller's
    thread kept (no event dict): the headers the writer parses, the request's facts, the
    body's times. None when the record needs its full event (a failure, a body sample, a
    requests record): then build it from ``meter.event()``."""
    head = meter.head
    if head.__class__ is dict or head[11] != HTTPX or meter.error is not None:
        return None
    if meter.body is not None:
        return None
    (
        method, url, wall, latency_ms, status, request_bytes, headers, request_headers,
        call_id, attempt, backoff_ms, _, extra,
    ) = head  # fmt: skip
    scheme, host, port, path, query = _split(url)
    if query and ref.redact_names:
        query = ref.redact_query(query)
    start, end = meter._start, meter.end
    given = {
        "first_byte_ms": (meter.first - start) * 1000.0 if meter.first else None,
        "duration_ms": (end - start) * 1000.0 if end else latency_ms,
    }
    sse = meter.sse
    if sse or (sse is None and sse_of(headers)):
        given["streamed"] = True
    if request_headers:
        found = facts.of_triples(request_headers, wall)
        if found:
            given.update(found)
    if extra:
        given.update(extra)
    return _new_attempt(Attempt, (
        ident, source, wall, latency_ms, method, scheme, host, port, path, query or None,
        status, None, request_bytes, meter.nbytes,
        ref.kept_headers(headers) if headers else None, call_id or new_call_id(), attempt,
        backoff_ms, None, None, None, given,
    ))  # fmt: skip


# --- the transport -----------------------------------------------------------------------------


class MonitoringTransport(TransportCore, httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps an httpx or httpx2 transport (sync or async): records every attempt, retries,
    throttles.

    ``integration`` is a slug (created as a sandbox integration on first use unless
    ``environment`` says otherwise) or an ``Integration``. ``throttle`` (0–1): when the
    provider reports less than that fraction of its quota left, calls are spaced out until
    the reset instead of burning what is left (this parses rate-limit headers on the
    caller's thread, so it costs a few µs per call). ``source`` is stored on every row.
    ``retry`` never stacks on an SDK that retries by itself (see ``RetryPolicy``).
    """

    _admitting = True  # the https rule and the throttle run before every call

    def __init__(
        self,
        wrapped: Any = None,
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
        self._ref = _ref or attempts.policy_for(integration, environment, base_url)
        self._source = str(source)
        try:
            self._setup(
                wrapped, self._ref.slug, None, retry, None, _Recorded(self._ref, self._source)
            )
        except TypeError:  # a transport of neither library: the first request says which
            self._setup(None, self._ref.slug, None, retry, None, _Recorded(self._ref, self._source))
            self._wrapped = wrapped
        self._throttle = throttle
        self._observing = bool(throttle)
        self._quota: tuple[int, int, float] | None = None  # remaining, limit, reset epoch
        self._next_slot = 0.0

    @property
    def integration_id(self) -> int | None:
        return self._ref.id

    # -- the hooks of the SDK's capture ------------------------------------------------------

    def _admit(self, request: Any, url: str) -> float:
        parts = request.url._uri_reference
        if parts.scheme == "http" and self._ref.require_https and not is_loopback(parts.host):
            self._refuse(request, parts)
        return self._throttle_wait() if self._throttle else 0.0

    def _observe(self, headers: dict[str, str] | None, wall: float) -> None:
        limits = parsing.parse_rate_limit(headers or {}, wall)
        if limits.limit and limits.remaining is not None and limits.reset_at:
            self._quota = (limits.remaining, limits.limit, limits.reset_at)

    def _status_delay(self, retry, method, status, headers, attempt, total_wait, retryable):
        if status not in retry.retry_on or attempt >= retry.max_attempts or not retryable:
            return None
        now = time.time()
        delay = retry.backoff_for(attempt)
        limits = parsing.parse_rate_limit(headers or {}, now)
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

    def _refuse(self, request: Any, url: Any) -> None:
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
        recorder.get().record(
            _new_attempt(Attempt, (
                ref.ident, self._source, time.time(), 0.0, request.method, url.scheme,
                url.host, url.port, url.path,
                ref.redact_query(url.query) if url.query else None, None,
                Outcome.BLOCKED.value, _request_bytes(request), None, None,
                new_call_id(), 1, 0.0, message[:500], None, None, None,
            ))
        )  # fmt: skip
        raise InsecureRequestRefused(message, request=request)


_flagged: dict[tuple[str, str], bool] = {}


class _RedactHttpxLog(logging.Filter):
    """httpx and httpx2 log each request's URL at INFO; userinfo and secret query values
    must not reach the logs either."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and hasattr(args[1], "_uri_reference"):
            record.args = (args[0], _LOG_REDACTOR.url(str(args[1])), *args[2:])
        return True


_LOG_REDACTOR = Redactor()
logging.getLogger("httpx").addFilter(_RedactHttpxLog())
logging.getLogger("httpx2").addFilter(_RedactHttpxLog())


def _request_bytes(request: Any) -> int | None:
    try:
        return len(request.content)
    except (httpx.RequestNotRead, Exception):
        return None  # a streamed upload: its size is not known up front


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
