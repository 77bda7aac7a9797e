"""Capture for requests (Stripe's default HTTP client, Twilio …): ``Session`` and ``mount``.

    session = upstream_client.requests.Session(integration="twilio")
    upstream_client.requests.mount(existing_session, integration="stripe")

``mount`` wraps every adapter a session already has (an SDK's own, with its retries and
pool settings) in a capturing ``HTTPAdapter``; the responses and exceptions stay requests'.
"""

from __future__ import annotations

import time
from functools import lru_cache
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.models import CONTENT_CHUNK_SIZE

from upstream_client import facts
from upstream_client._capture import (
    HINT_NAMES,
    MAPPING,
    NO_MARKS,
    Capture,
    Meter,
    is_stream_type,
    marks_from_pairs,
    new_call_id,
    scrub_body,
    should_retry,
    url_text,
)
from upstream_client.bodies import batch_items
from upstream_client.redact import kept_mapping
from upstream_client.retry import RetryPolicy, method_retryable
from upstream_client.sink import Sink

__all__ = ["CaptureAdapter", "Session", "mount"]

_MARK_NAMES = ("x-stainless-retry-count", "idempotency-key", "x-stripe-client-user-agent")
_MARK_SET = frozenset(_MARK_NAMES)
_RETRY_ERRORS = (requests.ConnectionError, requests.Timeout)


@lru_cache(maxsize=1024)
def _url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return url_text(parts.scheme, netloc, parts.path, parts.query)


def _request_bytes(body: Any) -> int | None:
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    return None  # a file or generator: not known up front, and not sent twice


class _RawMeter:
    """Stands in for urllib3's response: measures the body as requests reads it."""

    def __init__(self, raw: Any, meter: Meter) -> None:
        self._raw = raw
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        if name in ("_raw", "_meter"):
            raise AttributeError(name)
        return getattr(self._raw, name)

    def _wire_bytes(self) -> int | None:
        # urllib3 counts the bytes it read off the wire (compressed), but not in chunked
        # bodies: then what was read counts.
        try:
            return int(self._raw.tell()) or None
        except Exception:
            return None

    def stream(self, amt: int = 2**16, decode_content: bool | None = None):
        meter = self._meter
        try:
            for chunk in self._raw.stream(amt, decode_content=decode_content):
                meter.chunk(chunk)
                yield chunk
        except Exception as exc:
            meter.broken(exc)
            raise
        meter.complete = True
        meter.finish(self._wire_bytes())

    def read(self, amt: int | None = None, *args: Any, **kwargs: Any) -> bytes:
        meter = self._meter
        try:
            data = self._raw.read(amt, *args, **kwargs)
        except Exception as exc:
            meter.broken(exc)
            raise
        if data:
            meter.chunk(data)
        if amt is None or not data:
            meter.complete = True
            meter.finish(self._wire_bytes())
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            self._meter.finish(self._wire_bytes())

    def release_conn(self) -> None:
        try:
            self._raw.release_conn()
        finally:
            self._meter.finish(self._wire_bytes())


def _adapter_retries(adapter: Any) -> bool:
    retries = getattr(adapter, "max_retries", None)
    total = getattr(retries, "total", 0)
    return bool(total) and total is not True


class CaptureAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` around another adapter that captures every attempt.

    Attributes it does not define (``max_retries``, ``poolmanager`` …) are the wrapped
    adapter's, so code that inspects a session's adapters still finds what it set.
    """

    def __init__(
        self,
        wrapped: BaseAdapter | None = None,
        *,
        integration: str,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        sink: Sink | None = None,
        success_bodies: bool = False,
        _capture: Capture | None = None,
    ) -> None:
        # Not HTTPAdapter.__init__: the pool is the wrapped adapter's.
        self._wrapped = wrapped if wrapped is not None else HTTPAdapter()
        self._capture = _capture or Capture(integration, environment, sink, success_bodies)
        self._retry = None if retry is None or _adapter_retries(self._wrapped) else retry

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_wrapped", "_capture", "_retry"):
            raise AttributeError(name)
        return getattr(self._wrapped, name)

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def capture(self) -> Capture:
        return self._capture

    @property
    def wrapped(self) -> BaseAdapter:
        return self._wrapped

    def close(self) -> None:
        self._wrapped.close()

    def send(self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any):
        capture = self._capture
        method = request.method or "GET"
        url = _url(request.url or "")
        headers = request.headers
        store = getattr(headers, "_store", None)  # lower-case names: a C set test
        marks = NO_MARKS
        if (store is None or not _MARK_SET.isdisjoint(store)) and any(
            name in headers for name in _MARK_NAMES
        ):
            marks = marks_from_pairs(
                (name, headers[name]) for name in _MARK_NAMES if name in headers
            )
        body = request.body
        request_bytes = _request_bytes(body)
        batch = _batch(request, body) if method == "POST" else None
        retry = None if marks.sdk else self._retry
        retryable = (
            retry is not None
            and request_bytes is not None
            and method_retryable(method, bool(marks.idempotency_key))
        )
        calls = capture.calls
        if marks is NO_MARKS and not calls.pending:
            call_id, attempt, backoff_ms = None, 1, 0.0  # drawn when first needed
        else:
            call_id, attempt, backoff_ms = calls.begin(method, url, marks, perf_counter())
        total_wait = 0.0
        while True:
            wall = time.time()
            start = perf_counter()
            try:
                response = self._wrapped.send(request, stream=True, **kwargs)
            except Exception as exc:
                elapsed = perf_counter() - start
                if call_id is None:
                    call_id = new_call_id()
                capture.submit(
                    capture.error_event(
                        exc, method, url, wall, elapsed, request_bytes, call_id, attempt,
                        backoff_ms, _facts(headers, wall, batch),
                    )
                )  # fmt: skip
                calls.end(method, url, marks, call_id, attempt, True, False)
                delay = None
                if retry is not None and isinstance(exc, _RETRY_ERRORS):
                    delay = retry.error_delay(attempt, total_wait, retryable)
                if delay is None:
                    raise
                time.sleep(delay)
                total_wait += delay
                attempt, backoff_ms = attempt + 1, delay * 1000.0
                continue
            latency_ms = (perf_counter() - start) * 1000.0
            status = response.status_code
            answer = response.headers
            if status < 400:
                # The hot path: references only; the sink's thread builds the event.
                found = getattr(answer, "_store", None)
                hinted = False
                if found is None or not HINT_NAMES.isdisjoint(found):
                    hinted = should_retry(kept_mapping(answer))
                if found is not None:
                    content_type = found.get("content-type")
                    content_type = content_type[1] if content_type else None
                    length = found.get("content-length")
                    length = length[1] if length else None
                else:
                    content_type = answer.get("content-type")
                    length = answer.get("content-length")
                track = marks is not NO_MARKS or hinted or calls.pending
                if track and call_id is None:
                    call_id = new_call_id()
                meter = Meter(
                    capture,
                    (
                        method, url, wall, latency_ms, status, request_bytes, answer, headers,
                        call_id, attempt, backoff_ms, MAPPING, batch,
                    ),
                    start,
                    content_type is not None and is_stream_type(content_type),
                )  # fmt: skip
                if capture.success_bodies and status < 300:
                    meter.body = []
                if not hasattr(response.raw, "stream"):
                    meter.finish()  # an adapter without a urllib3 body (a test double)
                elif not stream and _one_chunk(length):
                    # Read here, as Session.send would, in the one chunk requests reads a
                    # body this small in: the same first byte, end and bytes the wrapped
                    # raw would record, without a generator layer per read.
                    _read_whole(response, meter)
                else:
                    response.raw = _RawMeter(response.raw, meter)
                    if not stream:
                        response.content  # noqa: B018 - read here, as Session.send would
                if track:
                    calls.end(method, url, marks, call_id, attempt, False, hinted)
                return response
            if call_id is None:
                call_id = new_call_id()
            kept = kept_mapping(answer)
            hinted = should_retry(kept)
            event = capture.event(
                method, url, wall, latency_ms, status, request_bytes, kept, call_id, attempt,
                backoff_ms, _facts(headers, wall, batch),
            )  # fmt: skip
            content_type = kept.get("content-type") if kept else None
            meter = Meter(capture, event, start, is_stream_type(content_type))
            raw = response.raw
            try:
                content = response.content
            except Exception as exc:
                meter.broken(exc)
                raise
            event["response_bytes"] = _tell(raw, len(content))
            event["duration_ms"] = (perf_counter() - start) * 1000.0
            event["error_body"] = scrub_body(content, content_type)
            meter.done = True
            capture.submit(event)
            calls.end(method, url, marks, call_id, attempt, True, hinted)
            delay = None
            if retry is not None:
                delay = retry.status_delay(method, status, kept, attempt, total_wait, retryable)
            if delay is None:
                return response
            response.close()
            time.sleep(delay)
            total_wait += delay
            attempt, backoff_ms = attempt + 1, delay * 1000.0


def _one_chunk(length: str | None) -> bool:
    """Whether a body of this Content-Length comes in one of requests' reads."""
    return length is not None and length.isdigit() and int(length) <= CONTENT_CHUNK_SIZE


def _read_whole(response: requests.Response, meter: Meter) -> None:
    """Read a small body at once and account for it as the one chunk it is."""
    raw = response.raw
    try:
        content = response.content
    except Exception as exc:
        # What urllib3 raised, as the wrapped raw sees it, not requests' translation.
        context = exc.__context__
        meter.broken(context if isinstance(exc, requests.RequestException) and context else exc)
        raise
    if content:
        meter.chunk(content)
    meter.complete = True
    meter.finish(_tell(raw, len(content)))


def _batch(request: requests.PreparedRequest, body: Any) -> dict | None:
    """A bulk POST's ``batch_size`` (None at once unless the path names a bulk endpoint)."""
    if isinstance(body, str):
        body = body.encode()
    size = batch_items(
        "POST", urlsplit(request.url or "").path, request.headers.get("content-type"), body
    )
    return None if size is None else {"batch_size": size}


def _facts(headers: Any, wall: float, batch: dict | None) -> dict | None:
    found = facts.of_mapping(headers, wall)
    if batch:
        return {**found, **batch} if found else batch
    return found


def _tell(raw: Any, fallback: int) -> int:
    try:
        return int(raw.tell()) or fallback
    except Exception:
        return fallback


def mount(
    session: requests.Session,
    *,
    integration: str,
    environment: str | None = None,
    retry: RetryPolicy | None = None,
    sink: Sink | None = None,
    success_bodies: bool = False,
) -> requests.Session:
    """Capture every call of an existing session (its adapters wrapped, settings kept);
    ``success_bodies`` keeps a scrubbed sample of small JSON 2xx bodies."""
    capture = Capture(integration, environment, sink, success_bodies)
    for prefix, adapter in list(session.adapters.items()):
        if isinstance(adapter, CaptureAdapter):
            continue
        session.mount(
            prefix,
            CaptureAdapter(
                adapter, integration=integration, environment=environment, retry=retry,
                _capture=capture,
            ),
        )  # fmt: skip
    return session


class Session(requests.Session):
    """A ``requests.Session`` whose every attempt is captured; see ``upstream_client.Client``."""

    def __init__(
        self,
        *,
        integration: str,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        sink: Sink | None = None,
        success_bodies: bool = False,
    ) -> None:
        super().__init__()
        mount(
            self, integration=integration, environment=environment, retry=retry, sink=sink,
            success_bodies=success_bodies,
        )  # fmt: skip
