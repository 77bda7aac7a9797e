"""A fake payments/email provider on loopback: realistic latency, auth, rate limits and faults."""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import dataclasses
import email.utils
import json
import math
import random
import re
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

from demo.sandbox.personalities import PERSONALITIES

API_VERSION = "2026-01-01"
# Customer "created" stamps count back from here so generated data does not depend on today.
DATA_EPOCH = 1767225600  # 2026-01-01T00:00:00Z
MAX_BODY_BYTES = 1 << 20
MAX_SLOW_MS = 30_000
REQUEST_LOG_SIZE = 10_000
IDEMPOTENCY_CACHE_SIZE = 10_000

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_CURRENCIES = frozenset({"usd", "eur", "gbp", "jpy", "cad"})


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """How the fake provider behaves; every knob has a realistic default."""

    seed: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    latency_scale: float = 1.0
    latency_median_ms: float = 80.0
    latency_sigma: float = 1.0
    latency_max_ms: float = 2_000.0
    error_rate: float = 0.01
    quota: int = 600
    quota_window_s: int = 60
    revoked_keys: frozenset[str] = frozenset({"sk_test_revoked"})
    # A revoked-key burst roughly every auth_burst_every_s (±10 %), None to never have one.
    auth_burst_every_s: float | None = 20 * 60
    auth_burst_duration_s: float = 45.0
    # (start, duration) in seconds after the sandbox starts; every request gets 503 inside one.
    outage_windows: tuple[tuple[float, float], ...] = ()
    customers: int = 50
    page_size: int = 10
    verbose: bool = False
    # A second, TLS port (None: none; 0 picks a free one) with a certificate from a CA made
    # at start-up (demo.sandbox.tls); the same provider, state and all, behind both ports.
    tls_port: int | None = None
    # Where to write that CA's certificate for clients in other processes (never its key).
    ca_file: str | None = None


class RecordedRequest(NamedTuple):
    """One request as received: method, request target (path and query), lower-cased headers."""

    method: str
    path: str
    headers: dict[str, str]


def auth_burst_scheduled(config: SandboxConfig, seed: int, elapsed_s: float) -> bool:
    """Whether the revoked-key burst is on at elapsed_s seconds after start."""
    period = config.auth_burst_every_s
    if period is None or period <= 0 or elapsed_s < 0:
        return False
    n = int(elapsed_s // period)
    # Burst k starts near the end of period k; jitter can pull it back into the previous one.
    for k in (n - 1, n, n + 1):
        if k < 0:
            continue
        jitter = random.Random(f"{seed}:burst:{k}").uniform(-0.1, 0.1) * period
        start = (k + 1) * period + jitter
        if start <= elapsed_s < start + config.auth_burst_duration_s:
            return True
    return False


def outage_scheduled(config: SandboxConfig, elapsed_s: float) -> bool:
    """Whether a configured outage window covers elapsed_s seconds after start."""
    return any(start <= elapsed_s < start + length for start, length in config.outage_windows)


def _random_id(rng: random.Random, prefix: str, length: int = 14) -> str:
    return prefix + "".join(rng.choice(_ALNUM) for _ in range(length))


def _make_customers(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:customers")
    customers = []
    created = DATA_EPOCH
    for _ in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        created -= rng.randint(600, 5 * 86_400)
        customers.append(
            {
                "id": _random_id(rng, "cus_"),
                "object": "customer",
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com",
                "currency": rng.choice(sorted(_CURRENCIES)),
                "balance": rng.randint(-5_000, 50_000),
                "created": created,
            }
        )
    return customers  # newest first, as list endpoints of real providers return them


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not raw.startswith("o:") or not _is_number(raw[2:]):
        return None
    return int(raw[2:])


def _is_number(raw: str) -> bool:
    # str.isdigit() alone lets "²" through, which int() then rejects.
    return raw.isascii() and raw.isdigit() and len(raw) <= 9


def _mask(key: str) -> str:
    return f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


class ApiError(Exception):
    """Raised by endpoint code to answer with a JSON error."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error(code, message, **extra)
        self.headers = headers or {}


_FAULT_BODIES = {
    500: ("internal_error", "An unexpected error occurred on our side."),
    502: ("bad_gateway", "Upstream gateway returned an invalid response."),
    503: ("service_unavailable", "The service is temporarily overloaded; retry shortly."),
}
_STATUS_CODES = {
    400: ("invalid_request", "The request was malformed."),
    401: ("invalid_api_key", "Invalid API key provided."),
    402: ("card_declined", "The card was declined."),
    403: ("insufficient_scope", "This key may not perform this action."),
    404: ("resource_missing", "No such resource."),
    405: ("method_not_allowed", "Method not allowed."),
    408: ("request_timeout", "The request took too long."),
    409: ("conflict", "The request conflicts with another request."),
    410: ("gone", "This resource is gone."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("rate_limited", "Too many requests."),
    **_FAULT_BODIES,
    504: ("gateway_timeout", "Upstream gateway timed out."),
}


class _Route(NamedTuple):
    method: str
    pattern: re.Pattern[str]
    handler: str
    auth: str | None  # None, "read" or "write"
    faults: bool  # whether random 5xx may hit it; test tools answer exactly as asked


_ROUTES = [
    _Route("GET", re.compile(r"/v1/health"), "_health", None, True),
    _Route("GET", re.compile(r"/v1/customers"), "_list_customers", "read", True),
    _Route("GET", re.compile(r"/v1/customers/(?P<id>[^/]+)"), "_get_customer", "read", True),
    _Route("POST", re.compile(r"/v1/charges"), "_create_charge", "write", True),
    _Route("POST", re.compile(r"/v1/messages"), "_create_message", "write", True),
    _Route("GET", re.compile(r"/v1/messages/(?P<id>[^/]+)"), "_get_message", "read", True),
    _Route("GET", re.compile(r"/v1/legacy/report"), "_legacy_report", "read", True),
    _Route("GET", re.compile(r"/v1/slow"), "_slow", None, False),
    _Route("GET", re.compile(r"/v1/status/(?P<code>[^/]+)"), "_status", None, False),
    _Route("GET", re.compile(r"/docs/migrate"), "_docs_migrate", None, False),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: Sandbox
    scheme = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is normal traffic, not a server fault.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError) and not self.sandbox.config.verbose:
            return
        super().handle_error(request, client_address)

    def origin(self, handler: _Handler) -> str:
        """Scheme and host the client called, for absolute links in answers."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{self.scheme}://{handler.headers.get('Host') or f'{host}:{port}'}"


class _TLSServer(_Server):
    """The TLS port: each connection's handshake runs on its own handler thread, so one slow
    or broken client never holds up the accept loop."""

    scheme = "https"
    tls: ssl.SSLContext
    HANDSHAKE_TIMEOUT_S = 10

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.HANDSHAKE_TIMEOUT_S)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except OSError as exc:  # ssl.SSLError among them: a client that does not trust us
            if self.sandbox.config.verbose:
                print(f"sandbox: TLS handshake with {client_address[0]} failed: {exc}",
                      file=sys.stderr)  # fmt: skip
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox/1"
    sys_version = ""
    # Headers and body go out in separate writes; without this, Nagle plus delayed ACK
    # adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this, as real servers do.
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.sandbox._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.config.verbose:
            super().log_message(format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by the base class for unparseable requests; keep the JSON promise there too.
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._request_id = self.server.sandbox._next_id("req_", 16)
        self.close_connection = True
        self._send(code, _error("invalid_request", message or phrase), {"Connection": "close"})

    def _send(
        self, status: int, payload: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", "application/json")
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", getattr(self, "_request_id", "") or "req_unparsed")
        self.send_header("API-Version", API_VERSION)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        self._request_id = sandbox._next_id("req_", 16)
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(411, _error("length_required", "Send a Content-Length."))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(400, _error("invalid_request", "Bad or oversized Content-Length."))
            return
        body = self.rfile.read(length) if length else b""
        received = {name.lower(): value for name, value in self.headers.items()}
        sandbox._record(RecordedRequest(self.command, self.path, received))
        try:
            status, payload, headers = sandbox._respond(self, body)
        except Exception:
            # A bug here must still give the client a well-formed reply, and be seen.
            self.log_error("sandbox handler crashed:\n%s", traceback.format_exc())
            status, payload, headers = 500, _error("internal_error", "Sandbox bug."), {}
        self._send(status, payload, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


@dataclasses.dataclass
class _Mode:
    error_rate: float
    latency_scale: float
    quota: int
    auth_burst: bool | None = None  # None follows the schedule
    outage: bool | None = None


class Sandbox:
    """Runs the fake provider in a background thread on a free loopback port."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.seed = self.config.seed if self.config.seed is not None else random.randrange(2**31)
        self._lock = threading.Lock()
        self._mode = _Mode(
            error_rate=self.config.error_rate,
            latency_scale=self.config.latency_scale,
            quota=self.config.quota,
        )
        # Separate streams so that, say, changing latency does not shift which calls fail.
        self._latency_rng = random.Random(f"{self.seed}:latency")
        self._fault_rng = random.Random(f"{self.seed}:faults")
        self._id_rng = random.Random(f"{self.seed}:ids")
        self._customers = _make_customers(self.seed, self.config.customers)
        self._customers_by_id = {c["id"]: c for c in self._customers}
        self._messages: dict[str, dict[str, Any]] = {}
        # Providers with their own contract, each under its path prefix (/openpanel, /paubox).
        self.personalities = {cls.prefix: cls() for cls in PERSONALITIES}
        self._idempotent: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # bucket -> (window index, count)
        self._log: collections.deque[RecordedRequest] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tls_server: _TLSServer | None = None
        self._tls_thread: threading.Thread | None = None
        self.ca = None  # demo.sandbox.tls.DemoCA once a TLS port is up
        self._started_mono = 0.0
        self._started_epoch = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread; returns self."""
        server = _Server((self.config.host, self.config.port), _Handler)
        server.sandbox = self
        tls_server = None
        if self.config.tls_port is not None:
            # Imported here: plain http needs nothing outside the standard library.
            from demo.sandbox.tls import DemoCA

            self.ca = DemoCA()
            try:
                tls_server = _TLSServer((self.config.host, self.config.tls_port), _Handler)
            except OSError:
                server.server_close()
                raise
            tls_server.sandbox = self
            tls_server.tls = self.ca.server_context()
            if self.config.ca_file:
                # Before either port answers: a client that reached us finds the new CA.
                self.ca.write_certificate(self.config.ca_file)
        self._server, self._tls_server = server, tls_server
        self._started_mono = time.monotonic()
        self._started_epoch = int(time.time())
        self._thread = self._serve(server)
        if tls_server is not None:
            self._tls_thread = self._serve(tls_server)
        return self

    @staticmethod
    def _serve(server: _Server) -> threading.Thread:
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and wake sleeping handlers."""
        if self._server is None:
            return
        self._stopping.set()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # the client may have gone already
                conn.shutdown(socket.SHUT_RDWR)
        for thread in (self._thread, self._tls_thread):
            if thread is not None:
                thread.join()
        self._server = self._tls_server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("sandbox is not running")
        return _url(self._server)

    @property
    def tls_url(self) -> str:
        """Base URL of the TLS port, e.g. https://127.0.0.1:54322 (if it has one)."""
        if self._tls_server is None:
            raise RuntimeError("sandbox is not running with a TLS port")
        return _url(self._tls_server)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far (the last 10 000)."""
        with self._lock:
            return list(self._log)

    def set_mode(
        self,
        *,
        auth_burst: bool | None = None,
        outage: bool | None = None,
        error_rate: float | None = None,
        latency_scale: float | None = None,
        quota: int | None = None,
    ) -> None:
        """Force behaviours; True/False override the schedule for good, None leaves a knob alone."""
        with self._lock:
            if auth_burst is not None:
                self._mode.auth_burst = auth_burst
            if outage is not None:
                self._mode.outage = outage
            if error_rate is not None:
                self._mode.error_rate = error_rate
            if latency_scale is not None:
                self._mode.latency_scale = latency_scale
            if quota is not None:
                self._mode.quota = quota

    # -- shared state used by handler threads ----------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)

    def _next_id(self, prefix: str, length: int = 14) -> str:
        with self._lock:
            return _random_id(self._id_rng, prefix, length)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started_mono

    def _consume_quota(self, bucket: str) -> tuple[int, int, int, bool]:
        """Count one request in bucket's fixed window: (limit, remaining, reset epoch, over?)."""
        window = self.config.quota_window_s
        now = time.time()
        index = int((now - self._started_epoch) // window)
        with self._lock:
            limit = self._mode.quota
            seen_index, count = self._windows.get(bucket, (index, 0))
            count = count + 1 if seen_index == index else 1
            self._windows[bucket] = (index, count)
        reset = self._started_epoch + (index + 1) * window
        return limit, max(0, limit - count), reset, count > limit

    def _draw_latency(self) -> float:
        with self._lock:
            scale = self._mode.latency_scale
            if scale <= 0:
                return 0.0
            ms = self._latency_rng.lognormvariate(
                math.log(self.config.latency_median_ms), self.config.latency_sigma
            )
        return min(ms, self.config.latency_max_ms) * scale / 1000

    def _draw_fault(self) -> int | None:
        with self._lock:
            rate = self._mode.error_rate
            if rate <= 0:
                return None
            if self._fault_rng.random() >= rate:
                return None
            return self._fault_rng.choice((500, 502, 503))

    def _outage_on(self) -> bool:
        with self._lock:
            forced = self._mode.outage
        return forced if forced is not None else outage_scheduled(self.config, self._elapsed())

    def _auth_burst_on(self) -> bool:
        with self._lock:
            forced = self._mode.auth_burst
        if forced is not None:
            return forced
        return auth_burst_scheduled(self.config, self.seed, self._elapsed())

    # -- request handling --------------------------------------------------------------------

    def _respond(
        self, handler: _Handler, body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        for prefix, personality in self.personalities.items():
            if parts.path == prefix or parts.path.startswith(prefix + "/"):
                self._stopping.wait(self._draw_latency())
                received = {name.lower(): value for name, value in handler.headers.items()}
                return personality.respond(
                    handler.command, parts.path[len(prefix) :] or "/", received, body,
                    handler.client_address[0], query=query,
                )  # fmt: skip
        auth = handler.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        bucket = key or f"anon:{handler.client_address[0]}"
        limit, remaining, reset, over = self._consume_quota(bucket)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        self._stopping.wait(self._draw_latency())

        if self._outage_on():
            headers["Retry-After"] = "5"
            message = "The service is unavailable due to an ongoing incident."
            return 503, _error("service_unavailable", message), headers
        if over:
            retry_after = max(1, math.ceil(reset - time.time()))
            headers["Retry-After"] = str(retry_after)
            headers["Content-Type"] = "application/problem+json"
            detail = (
                f"Rate limit of {limit} requests per {self.config.quota_window_s} s exceeded; "
                f"retry after {retry_after} s."
            )
            problem = {
                "type": "about:blank",
                "title": "Too Many Requests",
                "status": 429,
                "detail": detail,
                "instance": parts.path,
                "code": "rate_limited",
            }
            return 429, problem, headers

        route, params, allowed = self._match(handler.command, parts.path)
        if route is None:
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
                message = f"{handler.command} is not allowed on {parts.path}."
                return 405, _error("method_not_allowed", message), headers
            message = f"Unrecognized request URL ({handler.command}: {parts.path})."
            return 404, _error("not_found", message), headers

        try:
            if route.auth is not None:
                self._authorize(key, route.auth)
            if route.faults and (status := self._draw_fault()) is not None:
                if status == 503:
                    headers["Retry-After"] = "1"
                return status, _error(*_FAULT_BODIES[status]), headers
            endpoint: Callable[..., tuple[int, dict[str, Any] | None, dict[str, str]]]
            endpoint = getattr(self, route.handler)
            status, payload, extra = endpoint(
                params=params, query=query, body=body, key=key, handler=handler
            )
        except ApiError as exc:
            headers.update(exc.headers)
            return exc.status, exc.body, headers
        headers.update(extra)
        return status, payload, headers

    @staticmethod
    def _match(method: str, path: str) -> tuple[_Route | None, dict[str, str], set[str]]:
        allowed = set()
        for route in _ROUTES:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, m.groupdict(), set()
            allowed.add(route.method)
        return None, {}, allowed

    def _authorize(self, key: str, scope: str) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="sandbox"'}
        if not key:
            message = "No API key provided. Send 'Authorization: Bearer <key>'."
            raise ApiError(401, "missing_api_key", message, challenge)
        if not key.startswith("sk_test_") or key in self.config.revoked_keys:
            message = f"Invalid API key provided: {_mask(key)}."
            raise ApiError(401, "invalid_api_key", message, challenge)
        if self._auth_burst_on():
            message = f"The API key {_mask(key)} has been revoked."
            raise ApiError(401, "invalid_api_key", message, challenge)
        if scope == "write" and key.endswith("_readonly"):
            message = "This key is read-only and may not perform writes."
            raise ApiError(403, "insufficient_scope", message)

    # -- endpoints: each returns (status, payload, extra headers) ----------------------------

    def _health(self, **_: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"status": "ok", "version": API_VERSION}, {}

    def _list_customers(
        self, *, query: dict[str, str], handler: _Handler, **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        limit_raw = query.get("limit", str(self.config.page_size))
        if not _is_number(limit_raw) or not 1 <= int(limit_raw) <= 100:
            raise ApiError(
                400, "parameter_invalid", "limit must be between 1 and 100.", param="limit"
            )
        limit = int(limit_raw)
        offset = 0
        if query.get("cursor"):
            decoded = _decode_cursor(query["cursor"])
            if decoded is None or decoded > len(self._customers):
                raise ApiError(400, "invalid_cursor", "The cursor is not valid.", param="cursor")
            offset = decoded
        page = self._customers[offset : offset + limit]
        end = offset + len(page)
        next_cursor = _encode_cursor(end) if end < len(self._customers) else None
        headers = {}
        if next_cursor is not None:
            query_string = urlencode({"cursor": next_cursor, "limit": limit})
            origin = handler.server.origin(handler)
            headers["Link"] = f'<{origin}/v1/customers?{query_string}>; rel="next"'
        return 200, {"object": "list", "data": page, "next_cursor": next_cursor}, headers

    def _get_customer(
        self, *, params: dict[str, str], **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        customer = self._customers_by_id.get(params["id"])
        if customer is None:
            raise ApiError(404, "resource_missing", f"No such customer: '{params['id']}'.")
        return 200, customer, {}

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
        return data

    def _idempotent_replay(
        self, handler: _Handler, key: str
    ) -> tuple[tuple[str, str] | None, tuple[int, dict[str, Any]] | None]:
        idem = handler.headers.get("Idempotency-Key")
        if not idem:
            return None, None
        cache_key = (key, f"{handler.path}:{idem}")
        with self._lock:
            return cache_key, self._idempotent.get(cache_key)

    def _remember(self, cache_key: tuple[str, str] | None, status: int, obj: dict) -> None:
        if cache_key is None:
            return
        with self._lock:
            self._idempotent[cache_key] = (status, obj)
            while len(self._idempotent) > IDEMPOTENCY_CACHE_SIZE:
                del self._idempotent[next(iter(self._idempotent))]

    def _create_charge(
        self, *, body: bytes, key: str, handler: _Handler, **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        cache_key, replay = self._idempotent_replay(handler, key)
        if replay is not None:
            return replay[0], replay[1], {"Idempotent-Replayed": "true"}
        data = self._json_body(body)
        amount = data.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            message = "amount must be a positive integer in the smallest currency unit."
            raise ApiError(400, "parameter_invalid", message, param="amount")
        currency = data.get("currency")
        if currency not in _CURRENCIES:
            message = f"currency must be one of {', '.join(sorted(_CURRENCIES))}."
            raise ApiError(400, "parameter_invalid", message, param="currency")
        customer = data.get("customer")
        if customer is not None and customer not in self._customers_by_id:
            message = f"No such customer: '{customer}'."
            raise ApiError(400, "resource_missing", message, param="customer")
        charge = {
            "id": self._next_id("ch_"),
            "object": "charge",
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "status": "succeeded",
            "created": int(time.time()),
        }
        self._remember(cache_key, 201, charge)
        return 201, charge, {}

    def _create_message(
        self, *, body: bytes, key: str, handler: _Handler, **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        cache_key, replay = self._idempotent_replay(handler, key)
        if replay is not None:
            return replay[0], replay[1], {"Idempotent-Replayed": "true"}
        data = self._json_body(body)
        to = data.get("to")
        if not isinstance(to, str) or "@" not in to:
            raise ApiError(400, "parameter_invalid", "to must be an email address.", param="to")
        subject = data.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise ApiError(400, "parameter_missing", "subject is required.", param="subject")
        message = {
            "id": self._next_id("msg_"),
            "object": "message",
            "to": to,
            "subject": subject[:200],
            "status": "queued",
            "created": int(time.time()),
        }
        with self._lock:
            self._messages[message["id"]] = message
        self._remember(cache_key, 202, message)
        return 202, message, {}

    def _get_message(
        self, *, params: dict[str, str], **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            message = self._messages.get(params["id"])
            if message is not None:
                # Queued mail is "delivered" once someone looks again, like a real pipeline later.
                message["status"] = "delivered"
                message = dict(message)
        if message is None:
            raise ApiError(404, "resource_missing", f"No such message: '{params['id']}'.")
        return 200, message, {}

    def _legacy_report(
        self, *, handler: _Handler, **_: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        # Day-aligned so the headers stay identical for a whole day, as a real rollout would.
        midnight = self._started_epoch - self._started_epoch % 86_400
        deprecated_at = midnight - 30 * 86_400
        sunset_at = midnight + 60 * 86_400
        origin = handler.server.origin(handler)
        headers = {
            "Deprecation": f"@{deprecated_at}",
            "Sunset": email.utils.formatdate(sunset_at, usegmt=True),
            "Link": f'<{origin}/docs/migrate>; rel="deprecation"; type="text/html"',
        }
        report = {
            "object": "report",
            "period_start": midnight - 86_400,
            "period_end": midnight,
            "charges": len(self._customers) * 3,
            "gross_amount": sum(max(c["balance"], 0) for c in self._customers),
        }
        return 200, report, headers

    def _slow(self, *, query: dict[str, str], **_: Any) -> tuple[int, dict[str, Any], dict]:
        raw = query.get("ms", "1000")
        if not _is_number(raw):
            raise ApiError(400, "parameter_invalid", "ms must be a whole number.", param="ms")
        ms = min(int(raw), MAX_SLOW_MS)
        self._stopping.wait(ms / 1000)
        return 200, {"slept_ms": ms}, {}

    def _status(
        self, *, params: dict[str, str], **_: Any
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        raw = params["code"]
        if not _is_number(raw) or not 200 <= int(raw) <= 599:
            raise ApiError(400, "parameter_invalid", "code must be 200-599.", param="code")
        code = int(raw)
        headers: dict[str, str] = {}
        if code in (204, 304):
            return code, None, headers
        if code < 300:
            return code, {"status": code}, headers
        if code < 400:
            headers["Location"] = "/v1/health"
            return code, {"status": code, "location": "/v1/health"}, headers
        if code in (429, 503):
            headers["Retry-After"] = "1"
        if code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="sandbox"'
        err_code, message = _STATUS_CODES.get(code, ("error", f"Request failed with {code}."))
        return code, _error(err_code, message), headers

    def _docs_migrate(self, **_: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"title": "Migrating off /v1/legacy/report", "replacement": "/v1/reports"}, {}


def _url(server: _Server) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in str(host) else host
    return f"{server.scheme}://{host}:{port}"


__all__ = [
    "API_VERSION",
    "RecordedRequest",
    "Sandbox",
    "SandboxConfig",
    "auth_burst_scheduled",
    "outage_scheduled",
]
