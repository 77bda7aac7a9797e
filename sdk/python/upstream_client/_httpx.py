"""Capture for httpx and httpx2: a transport that wraps the library's own, keeping its types.

httpx2 (pydantic's fork, under openai 3.x and anthropic 2.x) has the same transport API as
httpx but its own classes: its client asserts that a response stream is *its*
``SyncByteStream``/``AsyncByteStream``, and its SDKs catch *its* exceptions. So everything
this module hands back is built from the library the request came from (``Lib``): the
response stream is that library's stream type, and the wrapped transport's exceptions pass
through untouched.
"""

from __future__ import annotations

import importlib
import time
from operator import itemgetter
from time import perf_counter
from typing import Any

import anyio

from upstream_client import facts
from upstream_client._capture import (
    HINT_NAMES,
    HTTPX,
    NO_MARKS,
    Capture,
    Marks,
    Meter,
    marks_from_pairs,
    new_call_id,
    scrub_body,
    should_retry,
    sse_of,
    url_text,
)
from upstream_client.bodies import batch_items
from upstream_client.redact import kept_triples
from upstream_client.retry import RetryPolicy, method_retryable
from upstream_client.sink import Sink


class Lib:
    """The classes of one httpx-like library (httpx or httpx2) that capture needs."""

    def __init__(self, name: str) -> None:
        module = importlib.import_module(name)
        self.name = name
        self.module = module
        self.BaseTransport = module.BaseTransport
        self.AsyncBaseTransport = module.AsyncBaseTransport
        self.HTTPTransport = module.HTTPTransport
        self.AsyncHTTPTransport = module.AsyncHTTPTransport
        self.ByteStream = module.ByteStream
        self.RequestNotRead = module.RequestNotRead
        self.DecodingError = module.DecodingError
        self.Response = module.Response
        self.retry_errors = (module.TimeoutException, module.ConnectError)
        self.SyncMeter, self.AsyncMeter = _meter_streams(module)
        self.Transport = _transport_class(self)


_LIBS: dict[str, Lib] = {}


def lib(name: str) -> Lib:
    found = _LIBS.get(name)
    if found is None:
        found = _LIBS[name] = Lib(name)
    return found


def lib_of(obj: Any) -> Lib:
    """The library an object (a transport, request or client) belongs to."""
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return lib(root)
    raise TypeError(f"{type(obj).__name__} is not an httpx or httpx2 object")


def _meter_streams(module: Any) -> tuple[type, type]:
    # One object per response: the Meter *is* the library's own stream type, and the record
    # the sink builds the event from.

    def decoded(self: Meter, raw: bytes) -> bytes:
        headers = self.head[6]
        if all(name != b"content-encoding" for _, name, _ in headers):
            return raw
        try:
            return module.Response(
                200, headers=[(n, v) for _, n, v in headers], stream=module.ByteStream(raw)
            ).read()
        except module.DecodingError:
            return raw

    class SyncMeter(Meter, module.SyncByteStream):
        """The library's own sync stream type, measuring the body as it is read."""

        __slots__ = ("_inner",)
        _decoded = decoded

        def __init__(self, inner: Any, capture: Capture, head: tuple, start: float, keep: bool):
            # Meter.__init__ inlined (one object, one frame per response).
            self._inner = inner
            self._capture = capture
            self.head = head
            self._start = start
            self.first = self.last = self.end = 0.0
            self.nbytes = 0
            self.done = self.complete = False
            self.error = None
            self._tail = b""
            self.sse = None
            self.body = [] if keep else None

        def __iter__(self):
            sse = self.sse
            if sse is None:
                sse = self.sse = sse_of(self.head[6])
            keep = self.body is not None
            try:
                for chunk in self._inner:
                    # Meter.chunk inlined: this runs for every chunk of every body.
                    self.last = now = perf_counter()
                    if not self.first:
                        self.first = now
                    self.nbytes += len(chunk)
                    if sse:
                        self.sse_chunk(chunk)
                    if keep and self.body is not None:
                        self.keep(chunk)
                    yield chunk
            except Exception as exc:
                self.broken(exc)
                raise
            self.complete = True
            self.finish()

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self.finish()

    class AsyncMeter(Meter, module.AsyncByteStream):
        """The library's own async stream type, measuring the body as it is read."""

        __slots__ = ("_inner",)
        _decoded = decoded

        def __init__(self, inner: Any, capture: Capture, head: tuple, start: float, keep: bool):
            # Meter.__init__ inlined (one object, one frame per response).
            self._inner = inner
            self._capture = capture
            self.head = head
            self._start = start
            self.first = self.last = self.end = 0.0
            self.nbytes = 0
            self.done = self.complete = False
            self.error = None
            self._tail = b""
            self.sse = None
            self.body = [] if keep else None

        async def __aiter__(self):
            sse = self.sse
            if sse is None:
                sse = self.sse = sse_of(self.head[6])
            keep = self.body is not None
            try:
                async for chunk in self._inner:
                    self.last = now = perf_counter()
                    if not self.first:
                        self.first = now
                    self.nbytes += len(chunk)
                    if sse:
                        self.sse_chunk(chunk)
                    if keep and self.body is not None:
                        self.keep(chunk)
                    yield chunk
            except Exception as exc:
                self.broken(exc)
                raise
            self.complete = True
            self.finish()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self.finish()

    return SyncMeter, AsyncMeter


def _request_bytes(request: Any, not_read: type) -> int | None:
    try:
        return len(request.content)
    except not_read:
        return None  # a streamed upload: its size is not known up front


_urls: dict[Any, str] = {}


def _url(request: Any) -> str:
    parts = request.url._uri_reference  # the parsed parts; the public properties cost 4×
    found = _urls.get(parts)  # a named tuple: the same endpoint is called again and again
    if found is None:
        found = url_text(parts.scheme, parts.netloc, parts.path, parts.query or "")
        if len(_urls) > 2048:
            _urls.clear()
        _urls[parts] = found
    return found


_NAME = itemgetter(1)  # a header triple's lower-case name; map() of it runs in C


def _marks(request: Any) -> Marks:
    lst = request.headers._list
    if _MARK_NAMES.isdisjoint(map(_NAME, lst)):
        return NO_MARKS
    return marks_from_pairs(
        (n.decode("latin-1"), v.decode("latin-1")) for _, n, v in lst if n in _MARK_NAMES
    )


_MARK_NAMES = frozenset(
    {b"x-stainless-retry-count", b"idempotency-key", b"x-stripe-client-user-agent"}
)
_HINT_NAMES_B = frozenset(name.encode() for name in HINT_NAMES)


def _batch(request: Any, content: bytes | None) -> dict | None:
    """A bulk POST's ``batch_size`` (``bodies.batch_items``: None at once for other paths)."""
    size = batch_items("POST", request.url.path, request.headers.get("content-type"), content)
    return None if size is None else {"batch_size": size}


def _facts(request: Any, wall: float, batch: dict | None) -> dict | None:
    found = facts.of_httpx(request, wall)
    if batch:
        return {**found, **batch} if found else batch
    return found


def wrapped_retries(transport: Any) -> bool:
    """Whether a wrapped transport retries by itself (httpx's ``retries=`` connect retries)."""
    pool = getattr(transport, "_pool", None)
    return bool(getattr(pool, "_retries", 0))


class TransportCore:
    """The capture logic of every ``Transport``, whatever its library.

    The library comes from the wrapped transport (or, with none, from the first request),
    so one instance hands back that library's own stream types. Subclasses may override
    the hooks ``_admit`` (before a call: refuse it, or say how long to wait first),
    ``_observe`` (after each response's headers) and ``_status_delay`` (whether and how
    long to wait before retrying a response).
    """

    _lib: Lib | None = None
    _wrapped: Any = None
    #: Set by subclasses that define ``_admit`` / ``_observe`` (skipped otherwise: hot path).
    _admitting = False
    _observing = False

    def _setup(
        self,
        wrapped: Any,
        integration: str,
        environment: str | None,
        retry: RetryPolicy | None,
        sink: Sink | None,
        capture: Capture | None,
        success_bodies: bool = False,
    ) -> None:
        self._wrapped = wrapped
        if wrapped is not None:
            self._lib = lib_of(wrapped)
        self._capture = capture or Capture(integration, environment, sink, success_bodies)
        self._retry = None if retry is None or wrapped_retries(wrapped) else retry

    @property
    def wrapped(self) -> Any:
        return self._wrapped

    @property
    def capture(self) -> Capture:
        return self._capture

    # -- hooks ---------------------------------------------------------------------------------

    def _admit(self, request: Any, url: str) -> float:
        """Seconds to wait before the first attempt (or raise to refuse the call)."""
        return 0.0

    def _observe(self, headers: dict[str, str] | None, wall: float) -> None:
        """Called with each response's kept headers when ``_observing`` is set."""

    def _status_delay(self, retry, method, status, headers, attempt, total_wait, retryable):
        return retry.status_delay(method, status, headers, attempt, total_wait, retryable)

    # -- the shared steps ----------------------------------------------------------------------

    def _lib_for(self, request: Any, sync: bool) -> tuple[Lib, Any]:
        lib_ = self._lib
        if lib_ is None:
            lib_ = self._lib = lib_of(request)
        wrapped = self._wrapped
        if wrapped is None:
            wrapped = self._wrapped = lib_.HTTPTransport() if sync else lib_.AsyncHTTPTransport()
        return lib_, wrapped

    def _retry_for(self, request: Any, marks: Marks, lib_: Lib) -> tuple:
        """(the policy, or None when the SDK retries by itself; whether this request may
        be sent again)."""
        if marks.sdk:
            return None, False  # never multiply an SDK's own attempts
        if not method_retryable(request.method, bool(marks.idempotency_key)):
            return self._retry, False
        try:
            request.content  # noqa: B018 - a streamed body cannot be sent twice
        except lib_.RequestNotRead:
            return self._retry, False
        return self._retry, True

    def _error(self, exc, request, url, marks, wall, start, call_id, attempt, backoff_ms, lib_,
               batch=None):  # fmt: skip
        capture = self._capture
        elapsed = perf_counter() - start
        request_bytes = _request_bytes(request, lib_.RequestNotRead)
        capture.submit(
            capture.error_event(
                exc, request.method, url, wall, elapsed, request_bytes, call_id, attempt,
                backoff_ms, _facts(request, wall, batch),
            )
        )  # fmt: skip
        capture.calls.end(request.method, url, marks, call_id, attempt, True, False)

    def _failure(self, response, raw, headers, request, url, wall, start, ids, lib_,
                 batch=None) -> None:  # fmt: skip
        """Submit the event of a response ≥ 400 whose body was read in full."""
        capture = self._capture
        call_id, attempt, backoff_ms, latency_ms = ids
        content_type = headers.get("content-type") if headers else None
        try:
            decoded = lib_.Response(
                response.status_code, headers=response.headers, stream=lib_.ByteStream(raw)
            ).read()
        except lib_.DecodingError:
            decoded = raw
        event = capture.event(
            request.method, url, wall, latency_ms, response.status_code,
            _request_bytes(request, lib_.RequestNotRead), headers, call_id, attempt, backoff_ms,
            _facts(request, wall, batch),
        )  # fmt: skip
        end = perf_counter()
        event["response_bytes"] = len(raw)
        event["duration_ms"] = (end - start) * 1000.0
        event["error_body"] = scrub_body(decoded, content_type)
        capture.submit(event)

    def _broken(self, exc, request, url, wall, start, latency_ms, status, headers,
                call_id, attempt, backoff_ms, lib_, batch=None) -> None:  # fmt: skip
        capture = self._capture
        event = capture.event(
            request.method, url, wall, latency_ms, status,
            _request_bytes(request, lib_.RequestNotRead), headers, call_id, attempt, backoff_ms,
            _facts(request, wall, batch),
        )  # fmt: skip
        Meter(capture, event, start, False).broken(exc)

    # -- sync ----------------------------------------------------------------------------------

    def handle_request(self, request):
        lib_, wrapped = self._lib, self._wrapped
        if lib_ is None or wrapped is None:
            lib_, wrapped = self._lib_for(request, True)
        capture = self._capture
        url = _url(request)
        marks = _marks(request)
        retry = self._retry
        retryable = False
        if retry is not None:
            retry, retryable = self._retry_for(request, marks, lib_)
        try:
            content = request.content
            request_bytes = len(content)
        except lib_.RequestNotRead:
            content = request_bytes = None  # a streamed upload: its size is not known up front
        method = request.method
        batch = _batch(request, content) if method == "POST" else None
        waited = self._admit(request, url) if self._admitting else 0.0
        if waited:
            time.sleep(waited)
        calls = capture.calls
        if marks is NO_MARKS and not calls.pending:
            # A fresh call: its id is drawn when it is first needed (often by the sink).
            call_id, attempt, backoff_ms = None, 1, waited * 1000.0
        else:
            call_id, attempt, backoff_ms = calls.begin(method, url, marks, perf_counter())
            backoff_ms += waited * 1000.0
        total_wait = waited
        while True:
            wall = time.time()
            start = perf_counter()
            try:
                response = wrapped.handle_request(request)
            except Exception as exc:
                if call_id is None:
                    call_id = new_call_id()
                self._error(
                    exc, request, url, marks, wall, start, call_id, attempt, backoff_ms, lib_,
                    batch,
                )  # fmt: skip
                delay = None
                if retry is not None and isinstance(exc, lib_.retry_errors):
                    delay = retry.error_delay(attempt, total_wait, retryable)
                if delay is None:
                    raise
                time.sleep(delay)
                total_wait += delay
                attempt, backoff_ms = attempt + 1, delay * 1000.0
                continue
            latency_ms = (perf_counter() - start) * 1000.0
            status = response.status_code
            lst = response.headers._list
            if status < 400:
                # The hot path: references only; the sink's thread builds the event.
                hinted = not _HINT_NAMES_B.isdisjoint(map(_NAME, lst)) and should_retry(
                    kept_triples(lst)
                )
                if self._observing:
                    self._observe(kept_triples(lst), wall)
                if marks is not NO_MARKS or hinted or calls.pending:
                    if call_id is None:
                        call_id = new_call_id()
                    calls.end(method, url, marks, call_id, attempt, False, hinted)
                response.stream = lib_.SyncMeter(
                    response.stream,
                    capture,
                    (
                        method, url, wall, latency_ms, status, request_bytes, lst,
                        request.headers._list, call_id, attempt, backoff_ms, HTTPX, batch,
                    ),
                    start,
                    capture.success_bodies and status < 300,
                )  # fmt: skip
                return response
            if call_id is None:
                call_id = new_call_id()
            headers = kept_triples(lst)
            hinted = (
                headers is not None and not HINT_NAMES.isdisjoint(headers) and should_retry(headers)
            )
            if self._observing:
                self._observe(headers, wall)
            stream = response.stream
            try:
                raw = b"".join(stream)
            except Exception as exc:
                self._broken(exc, request, url, wall, start, latency_ms, status, headers,
                             call_id, attempt, backoff_ms, lib_, batch)  # fmt: skip
                raise
            finally:
                stream.close()
            # The caller still reads the body (and the library still times it) as usual.
            response.stream = lib_.ByteStream(raw)
            self._failure(response, raw, headers, request, url, wall, start,
                          (call_id, attempt, backoff_ms, latency_ms), lib_, batch)  # fmt: skip
            calls.end(method, url, marks, call_id, attempt, True, hinted)
            delay = None
            if retry is not None:
                delay = self._status_delay(
                    retry, method, status, headers, attempt, total_wait, retryable
                )
            if delay is None:
                return response
            response.close()
            time.sleep(delay)
            total_wait += delay
            attempt, backoff_ms = attempt + 1, delay * 1000.0

    def close(self) -> None:
        wrapped = self._wrapped
        if wrapped is not None and hasattr(wrapped, "close"):
            wrapped.close()

    # -- async ---------------------------------------------------------------------------------

    async def handle_async_request(self, request):
        lib_, wrapped = self._lib, self._wrapped
        if lib_ is None or wrapped is None:
            lib_, wrapped = self._lib_for(request, False)
        capture = self._capture
        url = _url(request)
        marks = _marks(request)
        retry = self._retry
        retryable = False
        if retry is not None:
            retry, retryable = self._retry_for(request, marks, lib_)
        try:
            content = request.content
            request_bytes = len(content)
        except lib_.RequestNotRead:
            content = request_bytes = None  # a streamed upload: its size is not known up front
        method = request.method
        batch = _batch(request, content) if method == "POST" else None
        waited = self._admit(request, url) if self._admitting else 0.0
        if waited:
            await _sleep(waited)
        calls = capture.calls
        if marks is NO_MARKS and not calls.pending:
            # A fresh call: its id is drawn when it is first needed (often by the sink).
            call_id, attempt, backoff_ms = None, 1, waited * 1000.0
        else:
            call_id, attempt, backoff_ms = calls.begin(method, url, marks, perf_counter())
            backoff_ms += waited * 1000.0
        total_wait = waited
        while True:
            wall = time.time()
            start = perf_counter()
            try:
                response = await wrapped.handle_async_request(request)
            except Exception as exc:
                if call_id is None:
                    call_id = new_call_id()
                self._error(
                    exc, request, url, marks, wall, start, call_id, attempt, backoff_ms, lib_,
                    batch,
                )  # fmt: skip
                delay = None
                if retry is not None and isinstance(exc, lib_.retry_errors):
                    delay = retry.error_delay(attempt, total_wait, retryable)
                if delay is None:
                    raise
                await _sleep(delay)
                total_wait += delay
                attempt, backoff_ms = attempt + 1, delay * 1000.0
                continue
            latency_ms = (perf_counter() - start) * 1000.0
            status = response.status_code
            lst = response.headers._list
            if status < 400:
                # The hot path: references only; the sink's thread builds the event.
                hinted = not _HINT_NAMES_B.isdisjoint(map(_NAME, lst)) and should_retry(
                    kept_triples(lst)
                )
                if self._observing:
                    self._observe(kept_triples(lst), wall)
                if marks is not NO_MARKS or hinted or calls.pending:
                    if call_id is None:
                        call_id = new_call_id()
                    calls.end(method, url, marks, call_id, attempt, False, hinted)
                response.stream = lib_.AsyncMeter(
                    response.stream,
                    capture,
                    (
                        method, url, wall, latency_ms, status, request_bytes, lst,
                        request.headers._list, call_id, attempt, backoff_ms, HTTPX, batch,
                    ),
                    start,
                    capture.success_bodies and status < 300,
                )  # fmt: skip
                return response
            if call_id is None:
                call_id = new_call_id()
            headers = kept_triples(lst)
            hinted = (
                headers is not None and not HINT_NAMES.isdisjoint(headers) and should_retry(headers)
            )
            if self._observing:
                self._observe(headers, wall)
            stream = response.stream
            try:
                raw = b"".join([chunk async for chunk in stream])
            except Exception as exc:
                self._broken(exc, request, url, wall, start, latency_ms, status, headers,
                             call_id, attempt, backoff_ms, lib_, batch)  # fmt: skip
                raise
            finally:
                await stream.aclose()
            # The caller still reads the body (and the library still times it) as usual.
            response.stream = lib_.ByteStream(raw)
            self._failure(response, raw, headers, request, url, wall, start,
                          (call_id, attempt, backoff_ms, latency_ms), lib_, batch)  # fmt: skip
            calls.end(method, url, marks, call_id, attempt, True, hinted)
            delay = None
            if retry is not None:
                delay = self._status_delay(
                    retry, method, status, headers, attempt, total_wait, retryable
                )
            if delay is None:
                return response
            await response.aclose()
            await _sleep(delay)
            total_wait += delay
            attempt, backoff_ms = attempt + 1, delay * 1000.0

    async def aclose(self) -> None:
        wrapped = self._wrapped
        if wrapped is not None and hasattr(wrapped, "aclose"):
            await wrapped.aclose()


def _transport_class(lib_: Lib) -> type:
    """The capturing transport for one library: a subclass of its Base/AsyncBaseTransport
    (so ``isinstance`` checks of that library pass)."""

    class Transport(TransportCore, lib_.BaseTransport, lib_.AsyncBaseTransport):
        __doc__ = f"""Wraps a {lib_.name} transport (sync or async) and captures every attempt."""

        def __init__(
            self,
            wrapped: Any = None,
            *,
            integration: str,
            environment: str | None = None,
            retry: RetryPolicy | None = None,
            sink: Sink | None = None,
            success_bodies: bool = False,
            _capture: Capture | None = None,
        ) -> None:
            self._setup(wrapped, integration, environment, retry, sink, _capture, success_bodies)
            self._lib = self._lib or lib_

    Transport.__name__ = Transport.__qualname__ = "Transport"
    Transport.__module__ = f"upstream_client.{'httpx2' if lib_.name == 'httpx2' else '_httpx'}"
    return Transport


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)  # asyncio or trio, whichever runs the client


def transport(
    wrapped: Any = None,
    *,
    integration: str,
    environment: str | None = None,
    retry: RetryPolicy | None = None,
    sink: Sink | None = None,
    library: str | None = None,
    success_bodies: bool = False,
) -> Any:
    """A capturing transport around ``wrapped`` (an httpx or httpx2 transport, detected);
    without one, the library's default transport (``library=``: "httpx", the default, or
    "httpx2"). ``success_bodies``: keep a scrubbed sample of small JSON 2xx bodies."""
    chosen = lib_of(wrapped) if wrapped is not None else lib(library or "httpx")
    return chosen.Transport(
        wrapped, integration=integration, environment=environment, retry=retry, sink=sink,
        success_bodies=success_bodies,
    )  # fmt: skip


def wrap_client_transports(
    client: Any,
    lib_: Lib,
    integration: str,
    environment: str | None,
    retry: RetryPolicy | None,
    sink: Sink | None,
    success_bodies: bool = False,
) -> Capture:
    """Wrap the transports a client built for itself (TLS, limits, proxies from the
    environment all kept), mounts included."""
    capture = Capture(integration, environment, sink, success_bodies)

    def wrap(found: Any) -> Any:
        if found is None or isinstance(found, TransportCore):
            return found
        return lib_.Transport(
            found, integration=integration, environment=environment, retry=retry, _capture=capture
        )

    client._transport = wrap(client._transport)
    client._mounts = {pattern: wrap(found) for pattern, found in client._mounts.items()}
    return capture
