"""OTLP/HTTP traces: decoding (protobuf, JSON, gzip), spans → attempts, unmapped hosts."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.db import connection
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api import events, otlp, views_otlp
from api.body import gunzip
from api.problems import Problem
from monitoring import attempts, hostmap, recorder
from monitoring.models import Integration, JobState, RequestLog, UnmappedHost

TRACE = "5b8efff798038103d269b633813fc60c"


@pytest.fixture(autouse=True)
def _fresh_caches():
    hostmap.clear()
    attempts.clear_policies()
    yield
    hostmap.clear()
    attempts.clear_policies()


@pytest.fixture
def stripe(db):
    return Integration.objects.create(
        name="Stripe", slug="stripe", environment="production", host_patterns="api.stripe.com"
    )


def _attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        # OTLP JSON writes 64-bit integers as strings.
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _json_export(spans, resource=None):
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        _attr(k, v) for k, v in (resource or {"service.name": "shop"}).items()
                    ]
                },
                "scopeSpans": [{"scope": {"name": "hand"}, "spans": spans}],
            }
        ]
    }


def _span(attrs, kind=3, start=1_700_000_000_000_000_000, took_ms=120, **extra):
    return {
        "traceId": TRACE,
        "spanId": "eee19b7ec3c1b174",
        "name": "GET",
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + took_ms * 1_000_000),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        **extra,
    }


def _convert_json(document, **kwargs):
    body = json.dumps(document).encode()
    return otlp.convert(otlp.decode(body, otlp.JSON), **kwargs)


STABLE = {
    "http.request.method": "POST",
    "url.full": "https://api.stripe.com/v1/charges/ch_123?api_key=sk_live_abc",
    "server.address": "api.stripe.com",
    "http.response.status_code": 402,
    "http.request.resend_count": 1,
}


def test_json_client_spans_with_stable_names_become_attempts(stripe):
    captured = {"http.response.header.retry-after": "7", "http.response.header.set-cookie": "s=1"}
    batch = _convert_json(_json_export([_span({**STABLE, **captured})]))
    assert (batch.rejected, dict(batch.ignored), batch.unmapped) == (0, {}, {})
    [attempt] = batch.attempts
    row = attempts.to_row(attempt)
    assert row["integration_id"] == stripe.pk
    assert row["source"] == "otlp"
    assert (row["method"], row["host"], row["status"]) == ("POST", "api.stripe.com", 402)
    assert row["outcome"] == "client_error"
    assert row["latency_ms"] == pytest.approx(120)
    assert row["attempt"] == 2
    assert row["call_id"] == TRACE
    assert "sk_live_abc" not in row["query"]
    assert row["created"].timestamp() == pytest.approx(1_700_000_000)
    assert row["retry_after_s"] == 7
    assert b"set-cookie" not in dict(attempt.headers)


def test_old_attribute_names_and_url_template_are_read(stripe):
    old = {
        "http.method": "get",
        "http.url": "https://api.stripe.com/v1/customers/cus_9",
        "net.peer.name": "api.stripe.com",
        "http.status_code": 200,
        "url.template": "/v1/customers/{id}",
    }
    [attempt] = _convert_json(_json_export([_span(old)])).attempts
    row = attempts.to_row(attempt)
    assert (row["method"], row["path"], row["status"], row["outcome"]) == (
        "GET",
        "/v1/customers/{id}",
        200,
        "ok",
    )


def test_a_transport_error_is_classified_from_error_type(stripe):
    attrs = {"http.request.method": "GET", "url.full": "https://api.stripe.com/v1/x"}
    attrs["error.type"] = "httpx.ConnectTimeout"
    [attempt] = _convert_json(_json_export([_span(attrs, status={"code": 2})])).attempts
    row = attempts.to_row(attempt)
    assert (row["status"], row["outcome"]) == (None, "timeout")


def test_the_integration_attribute_wins_over_host_patterns(db, stripe):
    other = Integration.objects.create(name="Pay", slug="pay", environment="staging")
    attrs = {**STABLE, "upstream.integration": "pay"}
    batch = _convert_json(
        _json_export(
            [_span(attrs)], {"service.name": "shop", "deployment.environment.name": "staging"}
        )
    )
    assert attempts.to_row(batch.attempts[0])["integration_id"] == other.pk


def test_an_unknown_integration_is_rejected_unless_creation_is_allowed(db):
    attrs = {**STABLE, "upstream.integration": "brand-new", "upstream.environment": "staging"}
    batch = _convert_json(_json_export([_span(attrs)]))
    assert (batch.rejected, batch.attempts) == (1, [])
    assert "unknown integration 'brand-new'" in batch.errors[0]
    batch = _convert_json(_json_export([_span(attrs)]), may_create=True)
    assert len(batch.attempts) == 1
    assert Integration.objects.filter(slug="brand-new", environment="staging").exists()


def test_an_integration_the_sender_may_not_write_is_rejected(stripe):
    batch = _convert_json(_json_export([_span(STABLE)]), may_write=lambda i: False)
    assert (batch.rejected, batch.attempts) == (1, [])
    assert "may not write 'stripe'" in batch.errors[0]


def test_unmapped_hosts_are_counted_and_other_kinds_ignored(stripe):
    unclaimed = {
        **STABLE,
        "url.full": "https://api.nobody.io/v1",
        "server.address": "api.nobody.io",
    }
    spans = [
        _span(unclaimed),
        _span(unclaimed),
        _span(STABLE, kind=2),
        _span({}, kind=1),
        _span({"db.system": "postgresql"}),
    ]
    batch = _convert_json(_json_export(spans))
    assert batch.attempts == []
    assert batch.unmapped == {"api.nobody.io": [2, "shop"]}
    assert dict(batch.ignored) == {"server": 1, "internal": 1, "client_not_http": 1}
    batch.count_unmapped()
    assert UnmappedHost.objects.get().spans == 2


def test_bad_spans_are_rejected_beside_good_ones(stripe):
    spans = [
        _span(STABLE),
        _span({"http.request.method": "GET"}),
        _span({**STABLE, "http.response.status_code": 999}),
    ]
    batch = _convert_json(_json_export(spans))
    assert (len(batch.attempts), batch.rejected) == (1, 2)
    reply = ExportTraceServiceResponse()
    reply.ParseFromString(otlp.answer(batch, otlp.PROTOBUF))
    assert reply.partial_success.rejected_spans == 2
    assert "url.full or server.address" in reply.partial_success.error_message
    as_json = json.loads(otlp.answer(batch, otlp.JSON))
    assert as_json["partialSuccess"]["rejectedSpans"] == "2"


def test_a_full_success_answers_without_partial_success(stripe):
    batch = _convert_json(_json_export([_span(STABLE)]))
    assert json.loads(otlp.answer(batch, otlp.JSON)) == {}
    assert otlp.answer(batch, otlp.PROTOBUF) == b""


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (b"\xff\xfe not protobuf", otlp.PROTOBUF),
        (b"{not json", otlp.JSON),
        (b"[1, 2]", otlp.JSON),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}
            ).encode(),
            otlp.JSON,
        ),
        (json.dumps({"resourceSpans": "nope"}).encode(), otlp.JSON),
    ],
)
def test_bad_bodies_raise_bad_request(body, media_type):
    with pytest.raises(otlp.BadRequest):
        otlp.decode(body, media_type)


def test_gzip_is_inflated_and_a_bomb_refused():
    # One reader (api.body) serves /api/v1/events and OTLP alike.
    assert gunzip(gzip.compress(b"abc"), 10) == b"abc"
    with pytest.raises(Problem, match="once decompressed") as bomb:
        gunzip(gzip.compress(b"\0" * 10_000_000), 1_000_000)
    assert bomb.value.status == 413
    with pytest.raises(Problem, match="corrupt") as plain:
        gunzip(b"plain", 100)
    assert plain.value.status == 400
    with pytest.raises(Problem, match="truncated"):
        gunzip(gzip.compress(b"abc" * 100)[:-12], 1000)


def _sdk_spans(url: str, resource: dict | None = None):
    """Real spans: the OpenTelemetry SDK and its httpx instrumentation calling a server."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503))) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        client.get(url)
    return exporter.get_finished_spans()


def test_protobuf_from_the_sdk_encoder_round_trips(stripe):
    spans = _sdk_spans("https://api.stripe.com/v1/balance")
    body = encode_spans(spans).SerializeToString()
    batch = otlp.convert(otlp.decode(body, otlp.PROTOBUF))
    [attempt] = batch.attempts
    row = attempts.to_row(attempt)
    assert (row["integration_id"], row["status"], row["outcome"]) == (
        stripe.pk,
        503,
        "server_error",
    )
    assert row["path"] == "/v1/balance"


# --- over real HTTP ------------------------------------------------------------------------
# The api app's authentication wraps ``views_otlp.export`` in the project's URLs; these tests
# mount the bare view (an unrestricted sender) to exercise the HTTP side on its own.


@csrf_exempt
def _open_export(request):
    return views_otlp.export(
        request, may_create=True, store=lambda rows, batch_id: events.store(rows, None, "")
    )


urlpatterns = [path("otlp/v1/traces", _open_export)]


def _recorded():
    recorder.flush(10)
    return list(RequestLog.objects.order_by("id"))


@pytest.mark.urls(__name__)
def test_the_sdk_exporter_sends_real_spans(live_server, stripe):
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/otlp/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    transport = httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "7"}))
    with httpx.Client(transport=transport) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        client.get("https://api.stripe.com/v1/charges?limit=3")
        client.get("https://unclaimed.example.org/x")
    provider.shutdown()
    [row] = _recorded()
    assert (row.integration_id, row.source, row.status) == (stripe.pk, "otlp", 429)
    assert UnmappedHost.objects.get().host == "unclaimed.example.org"


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("gzipped", [False, True])
def test_json_posted_by_hand_answers_partial_success_in_json(live_server, stripe, gzipped):
    spans = [_span(STABLE), _span({"http.request.method": "GET"}), _span(STABLE, kind=2)]
    body = json.dumps(_json_export(spans))
    headers = {"Content-Type": "application/json"}
    data = body.encode()
    if gzipped:
        data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
    response = httpx.post(f"{live_server.url}/otlp/v1/traces", content=data, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert len(_recorded()) == 1
    assert JobState.objects.get(name="otlp.ignored.server").value == 1


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{oops", {"Content-Type": "application/json"}, 400),
        (b"\xff\xff\xff", {"Content-Type": "application/x-protobuf"}, 400),
        (b"plain", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
    ],
)
def test_bad_bodies_get_problem_json(live_server, db, content, headers, status):
    response = httpx.post(f"{live_server.url}/otlp/v1/traces", content=content, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


@pytest.mark.urls(__name__)
def test_an_oversize_body_is_refused(live_server, db, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "OTLP_MAX_BYTES": 1000}
    response = httpx.post(
        f"{live_server.url}/otlp/v1/traces",
        content=gzip.compress(b" " * 5000),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    assert "once decompressed" in response.json()["detail"]
    response = httpx.post(
        f"{live_server.url}/otlp/v1/traces",
        content=b" " * 5000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


def _chunked_post(
    port: int,
    body: bytes,
    content_type: str = otlp.PROTOBUF,
    key: str = "",
    path: str = "/otlp/v1/traces",
) -> bytes:
    """POST with Transfer-Encoding: chunked and no Content-Length, as the JS exporter does."""
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100])
        for i in range(0, len(body), 100)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: "
            + content_type.encode()
            + b"\r\n"
            + (b"Authorization: Bearer " + key.encode() + b"\r\n" if key else b"")
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    database = connection.settings_dict
    # Its own spool: the server must never replay (or fill) the real var/spool.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "UPSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
    }
    if database["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = database["NAME"]
        env.pop("DATABASE_URL", None)
    else:
        user, host, port = database["USER"], database["HOST"], database["PORT"] or 5432
        env["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{database['NAME']}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "dashboard.wsgi"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        child.terminate()
        child.wait(10)


def test_chunked_bodies_are_read_under_gunicorn(gunicorn, stripe):
    spans = _sdk_spans("https://api.stripe.com/v1/balance")
    body = encode_spans(spans).SerializeToString()
    answer = _chunked_post(gunicorn, body, key=_key()[1])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    rows = list(RequestLog.objects.all())
    assert [(r.integration_id, r.status, r.source) for r in rows] == [(stripe.pk, 503, "otlp")]


def test_chunked_event_batches_are_read_under_gunicorn_too(gunicorn, stripe):
    # The same body reader serves /api/v1/events: an SDK that streams its batch works.
    event = {"integration": "stripe", "method": "GET", "status": 200, "latency_ms": 3}
    event["url"] = "https://api.stripe.com/v1/balance"
    body = json.dumps({"batch_id": "chunked", "events": [event] * 3}).encode()
    answer = _chunked_post(gunicorn, body, otlp.JSON, _key()[1], "/api/v1/events")
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    assert b'"accepted": 3' in answer
    assert RequestLog.objects.filter(integration=stripe, source="ingest").count() == 3


@pytest.mark.urls(__name__)
def test_chunked_bodies_are_refused_clearly_by_the_dev_server(live_server, db):
    port = int(live_server.url.rsplit(":", 1)[1])
    answer = _chunked_post(port, b'{"resourceSpans": []}', otlp.JSON)
    assert answer.startswith(b"HTTP/1.1 411"), answer[:300]
    assert b"application/problem+json" in answer


# --- through the project's URL, with API keys -------------------------------------------------


def _key(**fields):
    from api.models import ApiKey

    fields.setdefault("scopes", ["ingest"])
    return ApiKey.issue(name="otel", **fields)


def test_the_sdk_exporter_with_an_ingest_key_reaches_the_real_endpoint(live_server, stripe):
    _, key = _key()
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/otlp/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        client.get("https://api.stripe.com/v1/balance")
    provider.shutdown()
    [row] = _recorded()
    assert (row.integration_id, row.source, row.status) == (stripe.pk, "otlp", 200)


@pytest.mark.parametrize(("scopes", "status"), [(None, 401), (["read"], 403)])
def test_a_missing_or_wrong_key_is_refused(live_server, stripe, scopes, status):
    headers = {"Content-Type": "application/json"}
    if scopes:
        headers["Authorization"] = f"Bearer {_key(scopes=scopes)[1]}"
    body = json.dumps(_json_export([_span(STABLE)]))
    response = httpx.post(f"{live_server.url}/otlp/v1/traces", content=body, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert _recorded() == []


def test_a_key_limited_to_other_integrations_gets_its_spans_rejected(live_server, stripe):
    other = Integration.objects.create(name="Other", slug="other")
    api_key, key = _key()
    api_key.integrations.add(other)
    body = json.dumps(_json_export([_span(STABLE)]))
    response = httpx.post(
        f"{live_server.url}/otlp/v1/traces",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert (partial["rejectedSpans"], partial["errorMessage"]) == ("1", "may not write 'stripe'")
    assert _recorded() == []


# --- an exporter that retries an export stores its spans once --------------------------------


class _LossyProxy(ThreadingHTTPServer):
    """A loopback hop in front of Upstream that forwards every export but loses Upstream's
    first answer (closes the connection, or answers as a gateway that timed out), as a
    load balancer does when the server is slow: the exporter then retries spans that are
    already stored."""

    daemon_threads = True

    def __init__(self, upstream: str, how: str) -> None:
        self.upstream, self.how, self.forwarded = upstream, how, 0
        super().__init__(("127.0.0.1", 0), _LossyHandler)


class _LossyHandler(BaseHTTPRequestHandler):
    server: _LossyProxy

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        answer = httpx.post(self.server.upstream + self.path, content=body, headers=headers)
        self.server.forwarded += 1
        if self.server.forwarded == 1:
            if self.server.how == "drop":
                self.close_connection = True
                return
            self.send_response(504)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Content-Length"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("how", ["drop", "504"])
def test_an_exporter_retrying_an_export_stores_its_spans_once(live_server, stripe, how):
    _, key = _key()
    proxy = _LossyProxy(live_server.url, how)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{proxy.server_address[1]}/otlp/v1/traces",
            headers={"Authorization": f"Bearer {key}"},
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
        transport = httpx.MockTransport(lambda r: httpx.Response(200))
        with httpx.Client(transport=transport) as client:
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
            for n in range(3):
                client.get(f"https://api.stripe.com/v1/charges/{n}")
        assert provider.force_flush(30_000)
        provider.shutdown()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.forwarded == 2  # the export, and the exporter's retry of it
    rows = _recorded()
    assert len(rows) == 3
    assert [row.path for row in rows] == ["/v1/charges/{id}"] * 3


def _post_export(url, key, spans):
    return httpx.post(
        f"{url}/otlp/v1/traces",
        content=json.dumps(_json_export(spans)),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )


def _numbered(n):
    return _span(STABLE, spanId=f"{n:016x}")


def test_a_resent_export_is_a_duplicate_even_when_the_cache_forgot(live_server, stripe):
    # The span-id window lives in the cache (per process without Redis); the export's
    # fingerprint is stored with its rows, so a resend to another worker is caught too.
    from django.core.cache import cache

    _, key = _key()
    spans = [_numbered(1), _numbered(2)]
    assert _post_export(live_server.url, key, spans).status_code == 200
    cache.clear()
    again = _post_export(live_server.url, key, spans[::-1])
    assert (again.status_code, again.json()) == (200, {})
    assert len(_recorded()) == 2


def test_spans_resent_in_a_differently_cut_batch_are_stored_once(live_server, stripe):
    _, key = _key()
    assert _post_export(live_server.url, key, [_numbered(1), _numbered(2)]).status_code == 200
    assert _post_export(live_server.url, key, [_numbered(2), _numbered(3)]).status_code == 200
    assert len(_recorded()) == 3
    # Another sender's span ids are its own: nothing of theirs is dropped.
    _, other = _key()
    assert _post_export(live_server.url, other, [_numbered(3)]).status_code == 200
    assert len(_recorded()) == 4


def test_spans_without_ids_are_never_taken_for_each_other(live_server, stripe):
    _, key = _key()
    for where in ("/v1/a", "/v1/b"):
        span = _span({**STABLE, "url.full": f"https://api.stripe.com{where}"})
        del span["traceId"], span["spanId"]
        assert _post_export(live_server.url, key, [span]).status_code == 200
    assert [row.path for row in _recorded()] == ["/v1/a", "/v1/b"]
