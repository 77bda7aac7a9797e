"""Capture for httpx, httpx2 and requests against a real loopback HTTP server (no Django)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import httpx2
import pytest
import requests
import upstream_client
import upstream_client.httpx2
import upstream_client.requests
from requests.adapters import HTTPAdapter
from upstream_client import RetryPolicy
from upstream_client._capture import classify

SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz0123456789"
STRIPE_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
FAST = RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.02, jitter=None)


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def submit(self, event: dict) -> None:
        self.events.append(event)


# --- the loopback provider ------------------------------------------------------------------


class Provider:
    """A loopback API: JSON answers, scripted status sequences, SSE streams cut or erroring
    as OpenAI and Anthropic send them, and a slow endpoint."""

    def __init__(self) -> None:
        self.plans: dict[str, list[int]] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.seen: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                provider.route(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                provider.route(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, h: BaseHTTPRequestHandler) -> None:
        self.seen.append({k.lower(): v for k, v in h.headers.items()})
        path = h.path.split("?")[0]
        self.hits[path] += 1
        if path.startswith("/sse/"):
            return self.sse(h, path.removeprefix("/sse/"))
        if path == "/slow":
            time.sleep(1.0)
        if path == "/short":  # a small JSON body the provider cuts off after 100 bytes
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "500")
            h.end_headers()
            h.wfile.write(b'{"data": "' + b"x" * 90)
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        status = 200
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
        elif path.startswith("/plan/"):
            plan = self.plans.get(path, [200])
            status = plan[min(self.hits[path] - 1, len(plan) - 1)]
        if status < 400 and path == "/ok-secret":
            body = json.dumps({"ok": True, "api_key": SECRET, "note": f"key {STRIPE_KEY}"}).encode()
        elif status < 400:
            body = json.dumps({"ok": True, "data": [1, 2, 3]}).encode()
        else:
            body = json.dumps(
                {"error": {"type": "invalid_request_error", "message": f"Bad key {STRIPE_KEY}"}}
            ).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        h.send_header("x-ratelimit-limit-requests", "100")
        h.send_header("x-ratelimit-remaining-requests", "99")
        h.send_header("anthropic-ratelimit-output-tokens-remaining", "4000")
        h.send_header("set-cookie", f"session={SECRET}")
        h.send_header("x-request-id", "req_123")
        h.send_header("link", f'<{self.url}/ok?cursor={SECRET}>; rel="next"')
        if status == 429:
            h.send_header("retry-after", "0")
        if path.startswith("/plan/stripe"):
            h.send_header("stripe-should-retry", "true" if status >= 400 else "false")
        h.end_headers()
        h.wfile.write(body)

    def sse(self, h: BaseHTTPRequestHandler, kind: str) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream; charset=utf-8")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        for i in range(50):
            if i == 10 and kind == "cut":
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
                return
            if i == 10 and kind == "openai_error":
                chunk = (
                    b'data: {"error": {"message": "The server had an error",'
                    b' "type": "server_error"}}\n\n'
                )
            elif i == 10 and kind == "anthropic_error":
                # Split over two writes: the marker and its data arrive in different chunks.
                self._chunk(h, b"event: error\n")
                chunk = (
                    b'data: {"type": "error", "error": {"type": "overloaded_error",'
                    b' "message": "Overloaded"}}\n\n'
                )
            elif kind == "chatty":
                chunk = b'data: {"delta": "the word \\"error\\" in the text"}\n\n'
            else:
                chunk = b'data: {"delta": "token %d"}\n\n' % i
            self._chunk(h, chunk)
            if i == 10 and kind.endswith("_error"):
                break
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    @staticmethod
    def _chunk(h: BaseHTTPRequestHandler, data: bytes) -> None:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        h.wfile.flush()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A caller closing a stream early resets the connection mid-write: what the
        # early-close tests do. Anything else still prints.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def provider():
    running = Provider()
    yield running
    running.close()


@pytest.fixture
def events():
    return ListSink()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- one driver per library: the same calls, each library's own way ---------------------------


class Driver:
    """Calls through one library's captured client; returns (status, body bytes)."""

    name = ""
    exc_module = ""

    def __init__(self, sink: ListSink, **options: Any) -> None:
        self.sink = sink
        self.options = options

    def get(self, url: str, headers: dict | None = None) -> tuple[int, bytes]:
        raise NotImplementedError

    def stream(self, url: str, lines: int | None = None) -> int:
        """Read SSE lines (all, or only the first ``lines`` then close); returns lines read."""
        raise NotImplementedError


class HttpxDriver(Driver):
    name, exc_module, module = "httpx", "httpx", httpx

    def client(self) -> Any:
        return upstream_client.Client(integration="acme", sink=self.sink, **self.options)

    def get(self, url, headers=None):
        with self.client() as client:
            response = client.get(url, headers=headers)
            return response.status_code, response.content

    def stream(self, url, lines=None):
        read = 0
        with self.client() as client, client.stream("GET", url) as response:
            for line in response.iter_lines():
                if not line:
                    continue
                read += 1
                if lines is not None and read >= lines:
                    break
        return read


class AsyncHttpxDriver(HttpxDriver):
    name = "httpx-async"

    def client(self) -> Any:
        return upstream_client.AsyncClient(integration="acme", sink=self.sink, **self.options)

    def get(self, url, headers=None):
        async def run():
            async with self.client() as client:
                response = await client.get(url, headers=headers)
                return response.status_code, response.content

        return asyncio.run(run())

    def stream(self, url, lines=None):
        async def run():
            read = 0
            async with self.client() as client, client.stream("GET", url) as response:
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    read += 1
                    if lines is not None and read >= lines:
                        break
            return read

        return asyncio.run(run())


class Httpx2Driver(HttpxDriver):
    name, exc_module, module = "httpx2", "httpx2", httpx2

    def client(self) -> Any:
        return upstream_client.httpx2.Client(integration="acme", sink=self.sink, **self.options)


class AsyncHttpx2Driver(AsyncHttpxDriver):
    name, exc_module, module = "httpx2-async", "httpx2", httpx2

    def client(self) -> Any:
        return upstream_client.httpx2.AsyncClient(
            integration="acme", sink=self.sink, **self.options
        )


class Httpx2TransportDriver(Httpx2Driver):
    """A plain ``httpx2.Client`` given ``upstream_client.transport(wrapped=…)``: how SDKs
    that build their own client (openai's DefaultHttpxClient) are captured."""

    name = "httpx2-transport"

    def client(self) -> Any:
        wrapped = upstream_client.transport(
            wrapped=httpx2.HTTPTransport(), integration="acme", sink=self.sink, **self.options
        )
        return httpx2.Client(transport=wrapped)


class RequestsDriver(Driver):
    name, exc_module = "requests", "requests"

    def session(self) -> requests.Session:
        return upstream_client.requests.Session(integration="acme", sink=self.sink, **self.options)

    def get(self, url, headers=None):
        with self.session() as session:
            response = session.get(url, headers=headers)
            return response.status_code, response.content

    def stream(self, url, lines=None):
        read = 0
        with self.session() as session:
            response = session.get(url, stream=True)
            try:
                for line in response.iter_lines():
                    if not line:
                        continue
                    read += 1
                    if lines is not None and read >= lines:
                        break
            finally:
                response.close()
        return read


DRIVERS = [
    HttpxDriver,
    AsyncHttpxDriver,
    Httpx2Driver,
    AsyncHttpx2Driver,
    Httpx2TransportDriver,
    RequestsDriver,
]


@pytest.fixture(params=DRIVERS, ids=lambda d: d.name)
def driver(request, events):
    return request.param(events)


# --- events ------------------------------------------------------------------------------------


def test_a_call_becomes_one_event_in_the_ingest_format(driver, provider, events, monkeypatch):
    monkeypatch.delenv("UPSTREAM_ENVIRONMENT", raising=False)
    status, body = driver.get(f"{provider.url}/v1/items/42?limit=5&api_key={SECRET}")
    assert status == 200 and json.loads(body)["ok"] is True
    (event,) = events.events
    assert event["integration"] == "acme"
    assert event["environment"] == "production"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["time"])
    assert event["method"] == "GET"
    assert event["url"] == f"{provider.url}/v1/items/42?limit=5&api_key=[redacted]"
    assert event["status"] == 200 and "outcome" not in event
    assert event["response_bytes"] == len(body)
    assert event["attempt"] == 1 and event["backoff_ms"] == 0.0
    assert 16 < len(event["call_id"]) <= 32
    assert 0 < event["latency_ms"] <= event["duration_ms"]
    assert event["first_byte_ms"] <= event["duration_ms"]
    assert event["streamed"] is False
    headers = event["response_headers"]
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "4000"
    assert headers["x-request-id"] == "req_123"
    assert "set-cookie" not in headers and "link" not in headers  # a pagination link: dropped


def test_the_environment_comes_from_the_argument_then_the_variable(provider, monkeypatch):
    sink = ListSink()
    monkeypatch.setenv("UPSTREAM_ENVIRONMENT", "staging")
    with upstream_client.Client(integration="acme", sink=sink) as client:
        client.get(f"{provider.url}/ok")
    with upstream_client.Client(integration="acme", environment="sandbox", sink=sink) as client:
        client.get(f"{provider.url}/ok")
    assert [e["environment"] for e in sink.events] == ["staging", "sandbox"]
    with pytest.raises(ValueError, match="environment"):
        upstream_client.Client(integration="acme", environment="prod")


def test_a_failure_keeps_its_scrubbed_body(driver, provider, events):
    status, body = driver.get(f"{provider.url}/status/401")
    assert status == 401 and STRIPE_KEY.encode() in body  # the caller sees the real body
    (event,) = events.events
    assert event["status"] == 401
    assert "invalid_request_error" in event["error_body"]
    assert STRIPE_KEY not in event["error_body"] and "[redacted]" in event["error_body"]
    assert event["response_bytes"] == len(body)


def test_no_credential_reaches_any_event(driver, provider, events):
    url = provider.url.replace("http://", f"http://deploy:{SECRET}@")
    if driver.name == "requests":
        url = provider.url  # requests turns userinfo into an Authorization header
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "X-Api-Key": SECRET,
        "Cookie": f"session={SECRET}",
    }
    driver.get(f"{url}/status/403?token={SECRET}&key={STRIPE_KEY}", headers=headers)
    driver.get(f"{url}/ok?access_token={SECRET}", headers=headers)
    text = json.dumps(events.events)
    assert len(events.events) == 2
    assert SECRET not in text and STRIPE_KEY not in text and "deploy" not in text
    assert provider.seen[-1]["x-api-key"] == SECRET  # but it was sent


def test_a_transport_error_is_classified_and_raised_as_the_librarys_own(driver, events):
    with pytest.raises(Exception) as raised:
        driver.get(f"http://127.0.0.1:{closed_port()}/v1/x")
    assert type(raised.value).__module__.partition(".")[0] == driver.exc_module
    (event,) = events.events
    assert event["status"] is None and event["outcome"] == "connect_error"
    assert event["error_body"].startswith(type(raised.value).__name__)


def test_a_timeout_is_a_timeout(provider, events):
    for client in (
        upstream_client.Client(integration="acme", sink=events, timeout=0.2),
        upstream_client.httpx2.Client(integration="acme", sink=events, timeout=0.2),
    ):
        with client, pytest.raises((httpx.ReadTimeout, httpx2.ReadTimeout)):
            client.get(f"{provider.url}/slow")
    session = upstream_client.requests.Session(integration="acme", sink=events)
    with pytest.raises(requests.ReadTimeout):
        session.get(f"{provider.url}/slow", timeout=0.2)
    assert [e["outcome"] for e in events.events] == ["timeout"] * 3


# --- streams -----------------------------------------------------------------------------------


def test_a_stream_read_to_its_end_records_first_byte_duration_and_bytes(driver, provider, events):
    assert driver.stream(f"{provider.url}/sse/full") == 50
    (event,) = events.events
    assert event["streamed"] is True and event["status"] == 200 and "outcome" not in event
    assert 0 < event["latency_ms"] <= event["first_byte_ms"] <= event["duration_ms"]
    assert event["response_bytes"] >= 50 * len(b'data: {"delta": "token 0"}\n\n')


def test_a_stream_the_caller_closes_early_is_not_a_failure(driver, provider, events):
    assert driver.stream(f"{provider.url}/sse/full", lines=3) == 3
    (event,) = events.events
    assert event["streamed"] is True and "outcome" not in event and "stream_error" not in event
    assert event["duration_ms"] >= event["latency_ms"]


def test_a_stream_the_provider_cuts_is_a_failure(driver, provider, events):
    with pytest.raises(Exception) as raised:
        driver.stream(f"{provider.url}/sse/cut")
    assert type(raised.value).__module__.partition(".")[0] == driver.exc_module
    (event,) = events.events
    assert event["status"] == 200
    assert event["outcome"] in ("protocol_error", "read_error")
    assert event["stream_error"] == "connection_dropped"
    assert event["response_bytes"] > 0


def test_a_small_body_the_provider_cuts_is_a_failure(driver, provider, events):
    # requests reads a body this small in one go (not through the wrapped raw): the same
    # outcome as the streams above, classed by what urllib3 raised.
    with pytest.raises(Exception) as raised:
        driver.get(f"{provider.url}/short")
    assert type(raised.value).__module__.partition(".")[0] == driver.exc_module
    (event,) = events.events
    assert event["status"] == 200 and event["streamed"] is False
    assert event["outcome"] in ("protocol_error", "read_error")
    assert event["stream_error"] == "connection_dropped"


@pytest.mark.parametrize(
    ("kind", "code"),
    [("openai_error", "server_error"), ("anthropic_error", "overloaded_error")],
)
def test_an_sse_error_event_is_a_failure(driver, provider, events, kind, code):
    driver.stream(f"{provider.url}/sse/{kind}")
    (event,) = events.events
    assert (event["status"], event["outcome"], event["stream_error"]) == (200, "server_error", code)
    assert "error" in json.loads(event["error_body"])


def test_the_word_error_inside_stream_content_is_not_an_error_event(provider, events):
    assert HttpxDriver(events).stream(f"{provider.url}/sse/chatty") == 50
    (event,) = events.events
    assert "outcome" not in event


def test_httpx2_keeps_its_own_stream_and_exception_types(provider, events):
    transport = upstream_client.transport(
        wrapped=httpx2.HTTPTransport(), integration="acme", sink=events
    )
    assert isinstance(transport, httpx2.BaseTransport)
    assert not isinstance(transport, httpx.BaseTransport)
    with httpx2.Client(transport=transport) as client:
        response = client.get(f"{provider.url}/status/404")  # no AssertionError, no retry
        assert response.status_code == 404 and response.json()["error"]
        with client.stream("GET", f"{provider.url}/sse/full") as streamed:
            raw = streamed.stream
            assert isinstance(raw, httpx2.SyncByteStream)
            streamed.read()
        with pytest.raises(httpx2.ConnectError):
            client.get(f"http://127.0.0.1:{closed_port()}/")
    assert [e["status"] for e in events.events] == [404, 200, None]
    assert events.events[2]["outcome"] == "connect_error"


def test_transport_detects_the_library_of_what_it_wraps(events):
    plain = upstream_client.transport(integration="acme", sink=events)
    assert isinstance(plain, httpx.BaseTransport) and isinstance(plain, httpx.AsyncBaseTransport)
    wrapped = upstream_client.transport(
        wrapped=httpx2.AsyncHTTPTransport(), integration="acme", sink=events
    )
    assert isinstance(wrapped, httpx2.AsyncBaseTransport)
    with pytest.raises(TypeError):
        upstream_client.transport(wrapped=object(), integration="acme")


def test_outcome_classes_of_each_librarys_errors():
    import urllib3.exceptions

    assert classify(httpx.ConnectTimeout("x")) == "timeout"
    assert classify(httpx2.ReadTimeout("x")) == "timeout"
    assert classify(httpx2.ConnectError("refused")) == "connect_error"
    assert classify(httpx2.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]")) == "tls_error"
    assert classify(httpx2.RemoteProtocolError("x")) == "protocol_error"
    assert classify(httpx2.ReadError("x")) == "read_error"
    assert classify(requests.exceptions.SSLError("x")) == "tls_error"
    assert classify(requests.exceptions.ChunkedEncodingError("x")) == "read_error"
    assert classify(requests.ConnectionError("x")) == "connect_error"
    assert classify(urllib3.exceptions.ReadTimeoutError(None, "/", "x")) == "timeout"
    assert classify(ValueError("x")) == "other_error"


# --- SDK retries --------------------------------------------------------------------------------


def _stainless(driver_cls, provider, events, path, count):
    driver = driver_cls(events)
    return driver.get(f"{provider.url}{path}", headers={"x-stainless-retry-count": str(count)})


@pytest.mark.parametrize("driver_cls", DRIVERS, ids=lambda d: d.name)
def test_stainless_retries_are_attempts_of_one_call(driver_cls, provider, events):
    path = f"/plan/stainless-{driver_cls.name}"
    provider.plans[path] = [429, 429, 200]
    statuses = [_stainless(driver_cls, provider, events, path, n)[0] for n in range(3)]
    assert statuses == [429, 429, 200]
    assert len({e["call_id"] for e in events.events}) == 1
    assert [e["attempt"] for e in events.events] == [1, 2, 3]
    assert events.events[0]["backoff_ms"] == 0 and events.events[1]["backoff_ms"] > 0
    # The next call (retry count 0 again) is a new call.
    _stainless(driver_cls, provider, events, path, 0)
    assert events.events[3]["attempt"] == 1
    assert events.events[3]["call_id"] != events.events[0]["call_id"]


def test_the_same_idempotency_key_again_is_a_retry(provider, events):
    with upstream_client.Client(integration="stripe", sink=events) as client:
        for key in ("ik-1", "ik-1", "ik-2"):
            client.post(f"{provider.url}/v1/charges", headers={"Idempotency-Key": key})
    assert [e["attempt"] for e in events.events] == [1, 2, 1]
    ids = [e["call_id"] for e in events.events]
    assert ids[0] == ids[1] != ids[2]


def test_a_request_after_stripe_should_retry_is_its_retry(provider, events):
    path = "/plan/stripe-get"
    provider.plans[path] = [503, 200]
    with upstream_client.requests.Session(integration="stripe", sink=events) as session:
        statuses = [session.get(f"{provider.url}{path}").status_code for _ in range(3)]
    assert statuses == [503, 200, 200]
    assert [e["attempt"] for e in events.events] == [1, 2, 1]


def test_plain_repeated_calls_are_separate_calls(provider, events):
    with upstream_client.Client(integration="acme", sink=events) as client:
        for _ in range(3):
            client.get(f"{provider.url}/status/500")
    assert [e["attempt"] for e in events.events] == [1, 1, 1]
    assert len({e["call_id"] for e in events.events}) == 3


# --- RetryPolicy -------------------------------------------------------------------------------


def test_retry_policy_is_off_unless_asked(provider, events):
    path = "/plan/off"
    provider.plans[path] = [503, 200]
    with upstream_client.Client(integration="acme", sink=events) as client:
        assert client.get(f"{provider.url}{path}").status_code == 503
    assert provider.hits[path] == 1


@pytest.mark.parametrize("driver_cls", DRIVERS, ids=lambda d: d.name)
def test_retry_policy_retries_as_attempts_of_one_call(driver_cls, provider, events):
    path = f"/plan/policy-{driver_cls.name}"
    provider.plans[path] = [503, 429, 200]
    status, _ = driver_cls(events, retry=FAST).get(f"{provider.url}{path}")
    assert status == 200 and provider.hits[path] == 3
    assert [e["attempt"] for e in events.events] == [1, 2, 3]
    assert len({e["call_id"] for e in events.events}) == 1
    assert all(e["backoff_ms"] > 0 for e in events.events[1:])


@pytest.mark.parametrize("driver_cls", DRIVERS, ids=lambda d: d.name)
def test_retry_policy_never_stacks_on_an_sdk_that_retries(driver_cls, provider, events):
    path = f"/plan/stacked-{driver_cls.name}"
    provider.plans[path] = [503, 503, 503, 503]
    driver = driver_cls(events, retry=FAST)
    for count in range(3):  # the SDK's own three tries
        driver.get(f"{provider.url}{path}", headers={"x-stainless-retry-count": str(count)})
    assert provider.hits[path] == 3  # not 9
    assert [e["attempt"] for e in events.events] == [1, 2, 3]


def test_retry_policy_stays_off_over_a_transport_or_adapter_that_retries(provider, events):
    path = "/plan/own-retries"
    provider.plans[path] = [503, 200]
    transport = upstream_client.transport(
        wrapped=httpx.HTTPTransport(retries=2), integration="acme", retry=FAST, sink=events
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(f"{provider.url}{path}").status_code == 503
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=2))
    upstream_client.requests.mount(session, integration="acme", retry=FAST, sink=events)
    assert session.get(f"{provider.url}{path}").status_code == 200
    assert provider.hits[path] == 2


def test_retry_policy_retries_connect_errors_of_idempotent_requests(events):
    with upstream_client.httpx2.Client(integration="acme", retry=FAST, sink=events) as client:
        with pytest.raises(httpx2.ConnectError):
            client.get(f"http://127.0.0.1:{closed_port()}/")
        with pytest.raises(httpx2.ConnectError):
            client.post(f"http://127.0.0.1:{closed_port()}/", content=b"x")
    assert [e["attempt"] for e in events.events] == [1, 2, 3, 1]


# --- requests: mount keeps what the session had ------------------------------------------------


def test_mount_wraps_existing_adapters_and_keeps_their_settings(provider, events):
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=5, pool_maxsize=3))
    upstream_client.requests.mount(session, integration="stripe", sink=events)
    upstream_client.requests.mount(session, integration="stripe", sink=events)  # idempotent
    adapter = session.get_adapter(f"{provider.url}/")
    assert isinstance(adapter, HTTPAdapter)
    assert isinstance(adapter.wrapped, HTTPAdapter)
    assert not isinstance(adapter.wrapped, upstream_client.requests.CaptureAdapter)
    assert adapter.max_retries.total == 5 and adapter._pool_maxsize == 3
    assert session.get(f"{provider.url}/ok").json()["ok"] is True
    assert len(events.events) == 1


# --- the caller never waits ---------------------------------------------------------------------


def test_constructing_clients_does_no_io(monkeypatch):
    """Making any client touches no network (and the SDK has no database)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network touched while constructing a client")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)

    async def build():
        upstream_client.AsyncClient(integration="new-in-a-loop")
        upstream_client.httpx2.AsyncClient(integration="new-in-a-loop")

    asyncio.run(build())
    upstream_client.Client(integration="another")
    upstream_client.requests.Session(integration="another")


def test_a_failing_sink_never_breaks_the_call(provider):
    class Broken:
        def submit(self, event: dict) -> None:
            raise RuntimeError("sink down")

    with upstream_client.Client(integration="acme", sink=Broken()) as client:
        assert client.get(f"{provider.url}/ok").status_code == 200


def test_without_a_sink_argument_the_default_sink_is_asked_at_send_time(provider, monkeypatch):
    from upstream_client import sink

    later = ListSink()
    client = upstream_client.Client(integration="acme")
    monkeypatch.setattr(sink, "_default", later)
    with client:
        client.get(f"{provider.url}/ok")
    assert len(later.events) == 1


def test_openais_default_http_client_takes_the_transport(provider, events):
    """openai 3.x's own client class (an httpx2.Client) with a captured transport."""
    import openai

    transport = upstream_client.transport(
        wrapped=httpx2.HTTPTransport(), integration="openai", sink=events
    )
    with openai.DefaultHttpxClient(transport=transport) as client:
        assert client.get(f"{provider.url}/status/429").status_code == 429
        with pytest.raises(httpx2.ConnectError):
            client.get(f"http://127.0.0.1:{closed_port()}/")
    assert [(e["status"], e.get("outcome")) for e in events.events] == [
        (429, None),
        (None, "connect_error"),
    ]
