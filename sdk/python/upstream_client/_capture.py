"""The capture core every library adapter shares: one event dict per HTTP attempt.

An adapter (httpx, httpx2, requests) measures an attempt and calls ``Capture`` here; this
module owns the event's shape (the ingest API's format), the SDK-retry bookkeeping (one
``call_id`` and attempts 1..n across an SDK's own retries), the stream meter (first byte,
duration, bytes, broken streams and SSE ``error`` events) and the outcome classes of
transport errors.

On the caller's thread a successful attempt costs a few time stamps and one ``Meter``
holding references (the URL string, the raw response and request header lists); the
event dict — header allowlisting and scrubbing, the credential fingerprint, the RFC 3339
time, bodies — is built by ``Meter.event()`` where the sink runs it: a sink with a
``submit_record`` method (the Shipper, on its sender thread, before it encodes anything)
gets the Meter itself; any other sink gets the finished dict from ``submit``. A Meter
never leaves the process: only its ``event()`` does, redacted.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import ssl
import time
import uuid
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from upstream_client import bodies, facts
from upstream_client import sink as _sink
from upstream_client.redact import (
    SCRUB_WINDOW,
    Redactor,
    kept_mapping,
    kept_triples,
    redact_query,
    scrub_message,
)

ENVIRONMENTS = ("production", "staging", "sandbox")

# Outcome classes (Upstream's ``Outcome`` values) an event may carry.
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
TLS_ERROR = "tls_error"
PROTOCOL_ERROR = "protocol_error"
READ_ERROR = "read_error"
SERVER_ERROR = "server_error"
OTHER_ERROR = "other_error"

# A failure body is scrubbed and kept up to this much (Upstream parses and caps it again).
ERROR_BODY_CAP = 8 * 1024
# A retry of an SDK (same Idempotency-Key, x-stainless-retry-count > 0, or after a
# ``Stripe-Should-Retry: true``) is tied to the call before it when it starts this soon
# after that attempt ended.
RETRY_WINDOW_S = 120.0
_MAX_TRACKED = 4096
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl")

_redactor = Redactor()


def environment_of(environment: str | None) -> str:
    """The argument, else ``UPSTREAM_ENVIRONMENT``, else production; never a silent sandbox."""
    value = environment or os.environ.get("UPSTREAM_ENVIRONMENT") or "production"
    if value not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}, not {value!r}")
    return value


# --- call ids and time stamps ----------------------------------------------------------------


def _call_ids() -> Iterator[str]:
    """Process prefix + a hex counter: ``next()`` of it runs in C, once per call."""
    return map(f"{uuid.uuid4().hex[:16]}{{:x}}".format, itertools.count(1))


_call_ids_left = _call_ids()


def new_call_id() -> str:
    return next(_call_ids_left)


# (epoch second, its formatted date and time), replaced whole so threads never mix them.
_stamp_cache: tuple[int, str] = (-1, "")


def stamp(wall: float) -> str:
    """RFC 3339 UTC with microseconds; the date part is formatted once a second."""
    global _stamp_cache
    second = int(wall)
    cached = _stamp_cache
    if cached[0] != second:
        cached = _stamp_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1] + ".%06dZ" % ((wall - second) * 1e6)  # noqa: UP031 - the fastest form


def _after_fork() -> None:
    global _call_ids_left
    _call_ids_left = _call_ids()


os.register_at_fork(after_in_child=_after_fork)


# --- outcome classes ----------------------------------------------------------------------------

_outcome_by_type: dict[type, str] = {}
_TLS_WORDS = ("ssl", "certificate", "tls", "handshake")


def classify(exc: BaseException) -> str:
    """The outcome class of a transport error of httpx, httpx2, requests or urllib3 (by the
    names in its class hierarchy, so each library keeps its own exception types)."""
    kind = type(exc)
    found = _outcome_by_type.get(kind)
    if found is None:
        found = _classify_type(kind)
        if len(_outcome_by_type) < 512:
            _outcome_by_type[kind] = found
    if found == CONNECT_ERROR and _is_tls(exc):
        return TLS_ERROR
    return found


def _classify_type(kind: type) -> str:
    names = {cls.__name__ for cls in kind.__mro__}
    if issubclass(kind, ssl.SSLError) or "SSLError" in names:
        return TLS_ERROR
    if issubclass(kind, TimeoutError) or names & {
        "TimeoutException",
        "Timeout",
        "TimeoutError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    }:
        return TIMEOUT
    if names & {"ChunkedEncodingError", "ReadError", "WriteError", "IncompleteRead"}:
        return READ_ERROR
    if names & {"ProtocolError", "LocalProtocolError", "RemoteProtocolError", "DecodeError"}:
        return PROTOCOL_ERROR
    if names & {
        "ConnectError",
        "ConnectionError",
        "NetworkError",
        "ProxyError",
        "NewConnectionError",
    }:
        return CONNECT_ERROR
    if issubclass(kind, ConnectionError | OSError):
        return CONNECT_ERROR
    return OTHER_ERROR


def _is_tls(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ssl.SSLError):
            return True
        text = str(current).lower()
        if any(word in text for word in _TLS_WORDS):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


# --- SDK retries ----------------------------------------------------------------------------


class Marks:
    """What a request says about an SDK's own retries (read once per request)."""

    __slots__ = ("idempotency_key", "retry_count", "sdk")

    def __init__(self, retry_count: int | None, idempotency_key: str | None, sdk: bool) -> None:
        #: ``x-stainless-retry-count`` (openai, anthropic): 0 on a first try.
        self.retry_count = retry_count
        self.idempotency_key = idempotency_key
        #: The request comes from an SDK that retries by itself (stainless, stripe).
        self.sdk = sdk


NO_MARKS = Marks(None, None, False)


def marks_from_pairs(pairs: Any) -> Marks:
    """Marks from (lower-case name, value) str pairs of the request headers."""
    count = key = None
    sdk = False
    for name, value in pairs:
        if name == "x-stainless-retry-count":
            sdk = True
            try:
                count = int(value)
            except ValueError:
                count = None
        elif name == "idempotency-key":
            key = value[:200]
        elif name == "x-stripe-client-user-agent":
            sdk = True
    if count is None and key is None and not sdk:
        return NO_MARKS
    return Marks(count, key, sdk)


class _Tracked:
    __slots__ = ("attempt", "call_id", "ended", "failed", "should_retry")

    def __init__(self, call_id: str, attempt: int, ended: float, failed: bool, retry: bool):
        self.call_id = call_id
        self.attempt = attempt
        self.ended = ended
        self.failed = failed
        self.should_retry = retry


class Calls:
    """Ties an SDK's retries together: which call an attempt belongs to, and which try."""

    def __init__(self) -> None:
        #: Attempts an SDK may retry, by (method, url) and by idempotency key; empty (so
        #: falsy, which the transports check first) until an SDK's request is seen.
        self.pending: dict[tuple, _Tracked] = {}

    def begin(self, method: str, url: str, marks: Marks, now: float) -> tuple[str, int, float]:
        """(call_id, attempt, backoff_ms) of an attempt starting at ``now`` (perf_counter)."""
        if marks is NO_MARKS:
            if not self.pending:
                return next(_call_ids_left), 1, 0.0
            found = self.pending.get((method, url))
            if found is None or not found.should_retry:
                return next(_call_ids_left), 1, 0.0
        elif marks.retry_count == 0:
            return next(_call_ids_left), 1, 0.0
        elif marks.idempotency_key:
            found = self.pending.get(("key", marks.idempotency_key))
        else:
            found = self.pending.get((method, url))
            if (
                found is not None
                and marks.retry_count is None
                and not (found.failed or found.should_retry)
            ):
                found = None  # a stripe GET after a success is a new call
        if found is not None and 0 <= now - found.ended <= RETRY_WINDOW_S:
            return found.call_id, found.attempt + 1, (now - found.ended) * 1000.0
        if marks.retry_count:
            return next(_call_ids_left), marks.retry_count + 1, 0.0
        return next(_call_ids_left), 1, 0.0

    def end(
        self,
        method: str,
        url: str,
        marks: Marks,
        call_id: str,
        attempt: int,
        failed: bool,
        should_retry: bool,
    ) -> None:
        """Remember an attempt that an SDK may retry."""
        seen = self.pending
        if marks is NO_MARKS and not should_retry:
            if seen:
                seen.pop((method, url), None)  # a success ends what a hint had begun
            return
        if len(seen) > _MAX_TRACKED:
            seen.clear()
        tracked = _Tracked(call_id, attempt, perf_counter(), failed, should_retry)
        if marks.idempotency_key:
            seen["key", marks.idempotency_key] = tracked
        seen[method, url] = tracked


CALLS = Calls()


HINT_NAMES = frozenset({"stripe-should-retry", "x-should-retry"})


def should_retry(headers: dict[str, str] | None) -> bool:
    """A provider's own "retry this" hint (``Stripe-Should-Retry``, ``X-Should-Retry``)."""
    if not headers:
        return False
    hint = headers.get("stripe-should-retry") or headers.get("x-should-retry")
    return hint == "true"


# --- the event ------------------------------------------------------------------------------


def url_text(scheme: str, netloc: str, path: str, query: str) -> str:
    """The URL as it leaves the process: no userinfo, no fragment, secret query values out."""
    if query:
        return f"{scheme}://{netloc}{path or '/'}?{redact_query(query)}"
    return f"{scheme}://{netloc}{path or '/'}"


def scrub_body(data: bytes, content_type: str | None) -> str:
    """A failure's body as scrubbed text (compact JSON when it parses), capped."""
    return _redactor.body(data[:SCRUB_WINDOW], content_type, cap=ERROR_BODY_CAP)


def is_stream_type(content_type: str | None) -> bool:
    if not content_type or not (
        "event-stream" in content_type or "ndjson" in content_type or "jsonl" in content_type
    ):
        return False  # the common case (application/json …), decided without splitting
    return content_type.split(";", 1)[0].strip().lower() in _STREAM_TYPES


class Capture:
    """One client's capture settings: where events go and what they say about it.

    ``sink`` is fixed when given; otherwise ``upstream_client.sink.default()`` is asked at
    send time (so a sink set after the client was made is used).
    """

    def __init__(
        self,
        integration: str,
        environment: str | None = None,
        sink: _sink.Sink | None = None,
        success_bodies: bool = False,
    ) -> None:
        if not isinstance(integration, str) or not integration.strip():
            raise ValueError("integration must be a non-empty slug")
        self.integration = integration.strip()
        self.environment = environment_of(environment)
        self._sink = sink
        # Process-wide: an SDK may retry through another client of the same provider.
        self.calls = CALLS
        #: Keep a scrubbed sample of small JSON 2xx bodies (``ok_body``) for Upstream, which
        #: tells an error answered with 200 from a success. Off: no body is kept.
        self.success_bodies = bool(success_bodies)

    def submit(self, item: dict | Meter) -> None:
        """Hand an event to the sink: a ``Meter`` as it is to a sink that builds events on
        its own thread (``submit_record``), else the event dict."""
        try:
            sink = self._sink or _sink.default()
            if item.__class__ is not dict:
                take = getattr(sink, "submit_record", None)
                if take is not None:
                    take(item)
                    return
                item = item.event()
            sink.submit(item)
        except Exception:  # noqa: S110 - a sink must never break the caller's call
            pass

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
        """The event of one attempt; end-of-body fields are added by ``Meter``/the caller.
        ``facts`` are the request's credential fingerprint and version header
        (``upstream_client.facts``)."""
        event = {
            "integration": self.integration,
            "environment": self.environment,
            "time": stamp(wall),
            "method": method,
            "url": url,
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

    def error_event(
        self,
        exc: BaseException,
        method: str,
        url: str,
        wall: float,
        elapsed: float,
        request_bytes: int | None,
        call_id: str,
        attempt: int,
        backoff_ms: float,
        facts: dict | None = None,
    ) -> dict:
        """The event of an attempt that got no response."""
        event = self.event(
            method, url, wall, elapsed * 1000.0, None, request_bytes, None, call_id, attempt,
            backoff_ms, facts,
        )  # fmt: skip
        event["outcome"] = classify(exc)
        event["error_body"] = scrub_message(f"{type(exc).__name__}: {exc}")
        event["duration_ms"] = elapsed * 1000.0
        return event


# --- streams -------------------------------------------------------------------------------

_SSE_ERROR = re.compile(rb"(?m)^(?:event:[ \t]*error[ \t]*\r?$|data:[ \t]*\{[ \t]*\"error\")")
_SSE_WINDOW = 8 * 1024


#: ``Meter.head`` kinds: how its header references are read.
HTTPX = 0  # httpx/httpx2 (raw name, lower name, value) triples
MAPPING = 1  # requests' case-insensitive mappings

SAMPLE_MAX = bodies.SAMPLE_BODY_MAX


class Meter:
    """One response's record: measures the body as the caller reads it, and submits itself
    when the body ends — exhausted, closed by the caller (early or not), broken, or
    garbage-collected unclosed (then with what was seen, like an early close).

    ``head`` is what the caller's thread knew at the headers: (method, url, wall,
    latency_ms, status, request_bytes, response headers, request headers, call_id,
    attempt, backoff_ms, kind, extra facts); or an event dict built already (a failure).
    ``event()`` turns it into the redacted event dict, on whichever thread the sink runs it.

    A body the provider breaks (the connection drops, or an SSE ``error`` event arrives) is
    a failure: the event gets an ``outcome`` and ``stream_error``. One the caller closes
    early is not.
    """

    __slots__ = (
        "_capture",
        "_start",
        "_tail",
        "body",
        "complete",
        "done",
        "end",
        "error",
        "first",
        "head",
        "last",
        "nbytes",
        "sse",
    )

    def __init__(self, capture: Capture, head: tuple | dict, start: float, sse: bool | None):
        self._capture = capture
        self.head = head
        self._start = start
        self.first = self.last = self.end = 0.0
        self.nbytes = 0
        self.done = self.complete = False
        self.error: tuple[str, str, str] | None = None  # outcome, stream_error, body
        self._tail = b""
        self.sse = sse
        #: The body's chunks while it may become a success sample (``success_bodies``).
        self.body: list[bytes] | None = None

    def __del__(self) -> None:
        # Dropped unclosed (a stream the caller never closed): what was seen is the event,
        # counted as closed early by the caller. Runs in a finalizer: never raise.
        if not self.done:
            self.done = True
            self.end = self.last
            self._capture.submit(self)  # which never raises

    def chunk(self, data: bytes) -> None:
        """Account for one chunk (the httpx streams do this inline, it runs per chunk)."""
        self.last = now = perf_counter()
        if not self.first:
            self.first = now
        self.nbytes += len(data)
        if self.sse:
            self.sse_chunk(data)
        if self.body is not None:
            self.keep(data)

    def keep(self, data: bytes) -> None:
        body = self.body
        if self.nbytes <= SAMPLE_MAX:
            body.append(data)
        else:
            self.body = None

    def sse_chunk(self, data: bytes) -> None:
        """Look for an SSE ``error`` event in one more chunk of an event stream."""
        if self.error is None:
            window = self._tail + data
            # Only the last few bytes are carried over (a marker cut between two chunks),
            # unless an error event has begun and waits for its end.
            self._tail = self._scan(window) if b"error" in window else window[-32:]

    def _scan(self, window: bytes) -> bytes:
        """Look for an SSE error event; what of ``window`` to carry into the next chunk."""
        match = _SSE_ERROR.search(window)
        if match is None:
            return window[-32:]
        block = window[match.start() : match.start() + _SSE_WINDOW]
        end = block.find(b"\n\n")
        if end < 0:
            end = block.find(b"\r\n\r\n")
        if end < 0 and len(block) < _SSE_WINDOW:
            return block  # the event is not complete yet: the next chunk brings the rest
        block = block[: end if end >= 0 else len(block)]
        data = b"\n".join(
            line.partition(b":")[2].strip()
            for line in block.splitlines()
            if line.startswith(b"data:")
        )
        code = "stream_error"
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            payload = None
        if isinstance(payload, dict):
            detail = payload.get("error")
            if isinstance(detail, dict):
                found = detail.get("type") or detail.get("code")
                if isinstance(found, str) and found:
                    code = scrub_message(found, 100)
            elif isinstance(detail, str) and detail:
                code = scrub_message(detail, 100)
        self.error = (SERVER_ERROR, code, scrub_body(data, "application/json"))
        return b""

    def broken(self, exc: BaseException) -> None:
        """The body could not be read to its end: the provider (or the network) broke it."""
        if self.error is None:
            message = scrub_message(f"{type(exc).__name__}: {exc}")
            self.error = (classify(exc), "connection_dropped", message)
        self.finish()

    def finish(self, nbytes: int | None = None) -> None:
        """The body ended (exhausted, closed or broken): submit the event, once."""
        if self.done:
            return
        self.done = True
        self.end = perf_counter()
        if nbytes is not None:
            self.nbytes = nbytes
        self._capture.submit(self)

    def _decoded(self, raw: bytes) -> bytes:
        """The body without its Content-Encoding (the httpx meters decode; requests reads
        decoded already)."""
        return raw

    # -- off the caller's thread -------------------------------------------------------------

    def event(self) -> dict:
        """The redacted event dict of this attempt (built once the body ended)."""
        head = self.head
        if head.__class__ is dict:
            event = head
            content_type = None
        else:
            (
                method, url, wall, latency_ms, status, request_bytes, headers,
                request_headers, call_id, attempt, backoff_ms, kind, extra,
            ) = head  # fmt: skip
            if kind == HTTPX:
                kept = kept_triples(headers) if headers else None
                request_facts = facts.of_triples(request_headers, wall) if request_headers else None
            else:
                kept = kept_mapping(headers) if headers else None
                request_facts = facts.of_mapping(request_headers, wall) if request_headers else None
            if extra:
                request_facts = {**request_facts, **extra} if request_facts else extra
            event = self._capture.event(
                method, url, wall, latency_ms, status, request_bytes, kept,
                call_id or next(_call_ids_left), attempt, backoff_ms, request_facts,
            )  # fmt: skip
            content_type = kept.get("content-type") if kept else None
            if self.sse is None:
                self.sse = is_stream_type(content_type)
        if self.sse:
            event["streamed"] = True
        start = self._start
        end = self.end
        event["duration_ms"] = (end - start) * 1000.0 if end else event["latency_ms"]
        if self.first:
            event["first_byte_ms"] = (self.first - start) * 1000.0
        event["response_bytes"] = self.nbytes
        if self.error is not None:
            event["outcome"], event["stream_error"], event["error_body"] = self.error
        elif self.body is not None and self.complete and not self.sse:
            sample = bodies.success_sample(content_type, self._decoded(b"".join(self.body)))
            if sample is not None:
                event["ok_body"] = sample
        return event


def content_type_of(triples: Any) -> bytes | None:
    """The raw Content-Type of httpx header triples (it comes early: the loop is short)."""
    for _, name, value in triples:
        if name == b"content-type":
            return value
    return None


def sse_of(triples: Any) -> bool:
    """Whether httpx header triples announce an event stream (read once per body)."""
    value = content_type_of(triples)
    return value is not None and is_stream_type(value.decode("latin-1"))


def with_batch(request_facts: dict | None, size: int | None) -> dict | None:
    """The request's facts plus its ``batch_size`` (when it is a bulk request)."""
    if size is None:
        return request_facts
    return {**request_facts, "batch_size": size} if request_facts else {"batch_size": size}
