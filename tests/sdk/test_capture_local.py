"""Inside Upstream: the SDK's capture records through LocalSink, the recorder and the events API."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import threading
import venv
from pathlib import Path

import httpx
import pytest
import upstream_client
import upstream_client.httpx2
import upstream_client.requests
from django.db import connection
from upstream_client import sink

from monitoring import attempts, recorder
from monitoring.client import AsyncMonitoredClient, MonitoringTransport
from monitoring.local_sink import LocalSink
from monitoring.models import Integration, RequestLog
from tests.sdk.test_capture import SECRET, STRIPE_KEY, Provider

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()  # ids are reused once the test database is emptied
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    yield recorder
    recorder.flush(timeout=30)
    assert recorder.stats()["lost"] == 0


@pytest.fixture(scope="module")
def provider():
    running = Provider()
    yield running
    running.close()


def rows(slug: str) -> list[RequestLog]:
    recorder.flush(timeout=30)
    return list(RequestLog.objects.filter(integration__slug=slug).order_by("id"))


def test_upstream_makes_local_sink_the_default():
    assert isinstance(sink.default(), LocalSink)


def test_sdk_calls_become_rows_with_stream_fields(recording, provider):
    with upstream_client.Client(integration="llm", environment="staging") as client:
        client.get(f"{provider.url}/v1/files/file-abc123?api_key={SECRET}")
        with client.stream("GET", f"{provider.url}/sse/full") as response:
            response.read()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", f"{provider.url}/sse/cut") as response,
        ):
            response.read()
        with client.stream("GET", f"{provider.url}/sse/anthropic_error") as response:
            response.read()
    with upstream_client.requests.Session(integration="llm", environment="staging") as session:
        session.get(f"{provider.url}/status/401")
    found = rows("llm")
    assert len(found) == 5
    assert Integration.objects.get(slug="llm").environment == "staging"
    plain, full, cut, errored, failed = found
    assert plain.query == "api_key=[redacted]" and plain.status == 200 and plain.outcome == "ok"
    assert plain.streamed is False and plain.duration_ms >= plain.latency_ms
    assert full.streamed is True and full.outcome == "ok"
    assert full.latency_ms <= full.first_byte_ms <= full.duration_ms
    assert full.response_bytes > 1000
    assert (cut.status, cut.outcome, cut.error_code) == (
        200,
        "protocol_error",
        "connection_dropped",
    )
    assert (errored.status, errored.outcome, errored.error_code) == (
        200,
        "server_error",
        "overloaded_error",
    )
    assert failed.status == 401 and failed.error_code == "invalid_request_error"
    assert STRIPE_KEY not in failed.error_body
    assert plain.ratelimit_remaining == 99


def test_sdk_retries_are_attempts_of_one_call_in_the_request_log(recording, provider):
    path = "/plan/local-stainless"
    provider.plans[path] = [429, 200]
    with upstream_client.httpx2.Client(integration="openai-ish") as client:
        for count in range(2):
            client.get(f"{provider.url}{path}", headers={"x-stainless-retry-count": str(count)})
    first, second = rows("openai-ish")
    assert first.call_id == second.call_id
    assert (first.attempt, second.attempt) == (1, 2)
    assert (first.status, second.status) == (429, 200)


def test_a_transport_error_keeps_its_message_not_a_body(recording):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with upstream_client.Client(integration="down") as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")
    (row,) = rows("down")
    assert row.status is None and row.outcome == "connect_error"
    assert row.error_message.startswith("ConnectError") and row.error_body == ""


def _sdk_async(slug: str):
    return upstream_client.AsyncClient(integration=slug)


def _monitored_async(slug: str):
    return AsyncMonitoredClient(integration=slug, environment="production")


class DatabaseLock:
    """Another connection holding the lock a new integration's lookup would wait on:
    SQLite's write lock, or on PostgreSQL an exclusive lock on the integration table."""

    def __init__(self) -> None:
        settings = connection.settings_dict
        if connection.vendor == "sqlite":
            self.conn = sqlite3.connect(settings["NAME"], timeout=0, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.conn = psycopg.connect(
                dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"],
                port=settings["PORT"] or 5432, password=settings["PASSWORD"] or None,
            )  # fmt: skip
            self.conn.execute(f"LOCK TABLE {Integration._meta.db_table} IN ACCESS EXCLUSIVE MODE")

    @property
    def held(self) -> bool:
        if connection.vendor == "sqlite":
            return self.conn.in_transaction
        return self.conn.info.transaction_status != 0  # not idle: the lock is still held

    def release(self) -> None:
        self.conn.rollback() if connection.vendor != "sqlite" else self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.mark.parametrize("make", [_sdk_async, _monitored_async], ids=["sdk", "monitored"])
def test_an_async_client_for_a_new_integration_never_waits_on_a_locked_database(
    recording, provider, make
):
    """The database is locked (another process in the middle of a write): making a client
    for an integration Upstream has never seen, and calling through it, inside a running
    event loop, completes while the lock is still held."""
    Integration.objects.create(slug="warm", name="Warm")  # the database file exists
    lock = DatabaseLock()
    ticks: list[float] = []

    async def main() -> int:
        async def heartbeat() -> None:
            loop = asyncio.get_running_loop()
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(heartbeat())
        async with make("brand-new") as client:
            response = await client.get(f"{provider.url}/ok")
        beat.cancel()
        return response.status_code

    try:
        # If construction or the call waited for the database it would sit out the lock
        # (SQLite's 20 s busy timeout; PostgreSQL waits for ever); this bound only catches
        # that, it measures no speed.
        status = asyncio.run(asyncio.wait_for(main(), timeout=10))
        assert status == 200
        assert lock.held  # the call finished while the lock was held
        assert len(ticks) >= 1
    finally:
        lock.release()
    (row,) = rows("brand-new")
    assert row.integration.environment == "production"


def test_the_events_api_accepts_the_stream_fields(recording, client):
    from api.models import ApiKey

    _, secret = ApiKey.issue(name="sdk", scopes=["ingest"], allow_create=True)
    event = {
        "integration": "streamer",
        "environment": "production",
        "method": "POST",
        "url": "https://api.example.com/v1/messages",
        "status": 200,
        "latency_ms": 12.0,
        "first_byte_ms": 30.5,
        "duration_ms": 1026.0,
        "streamed": True,
        "stream_error": "overloaded_error",
        "outcome": "server_error",
    }
    bad = {**event, "streamed": "yes"}
    response = client.post(
        "/api/v1/events",
        {"events": [event, bad]},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 1 and body["errors"][0]["field"] == "streamed"
    (row,) = rows("streamer")
    assert (row.first_byte_ms, row.duration_ms, row.streamed) == (30.5, 1026.0, True)
    assert (row.outcome, row.error_code) == ("server_error", "overloaded_error")


def test_local_sink_never_raises():
    LocalSink().submit({"integration": "x"})  # no url, method …: dropped with a warning


@pytest.mark.slow
def test_the_package_installs_and_captures_in_a_fresh_virtualenv_without_django(tmp_path):
    source = tmp_path / "src"  # a copy: pip builds in the tree it installs
    shutil.copytree(
        ROOT / "sdk" / "python", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", ROOT / "constraints.txt", source],
        check=True,
        timeout=300,
    )  # fmt: skip
    script = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import upstream_client

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
class Sink:
    events = []
    def submit(self, event): self.events.append(event)
with upstream_client.Client(integration="x", sink=Sink()) as client:
    client.get(f"http://127.0.0.1:{server.server_port}/ok?token=abc")
assert "django" not in sys.modules, "django imported"
print(Sink.events[0]["url"].split("/", 3)[3], Sink.events[0]["status"])
"""
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")
    }
    done = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=60, env=clean, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok?token=[redacted]", "200"]
    found = subprocess.run(
        [python, "-c", "import django"], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert found.returncode != 0  # Django is not there at all


def test_the_local_sink_keeps_the_caller_off_the_database_thread(recording):
    """submit only queues: it runs no query on the caller's thread."""
    from django.db import connections

    seen: list[str] = []

    def watch(execute, sql, params, many, context):
        seen.append(threading.current_thread().name)
        return execute(sql, params, many, context)

    local = LocalSink()
    with connections["default"].execute_wrapper(watch):
        local.submit(
            {
                "integration": "quiet",
                "environment": "production",
                "time": "2026-12-01T10:00:00.000000Z",
                "method": "GET",
                "url": "https://api.example.com/v1/x",
                "status": 200,
                "latency_ms": 1.0,
            }
        )
    assert seen == []
    assert [row.status for row in rows("quiet")] == [200]


def test_monitoring_transport_works_inside_httpx2_with_httpx2s_own_types(recording, provider):
    """What the SDKs on httpx2 need: no AssertionError, no phantom rows, a 4xx is a response
    (not a connection error the SDK would retry), httpx2's own connect errors."""
    import socket

    import httpx2

    for wrapped in (httpx2.HTTPTransport(), None):
        transport = MonitoringTransport(wrapped, integration="anthropic-ish")
        with httpx2.Client(transport=transport) as client:
            response = client.get(f"{provider.url}/status/404")
            assert response.status_code == 404 and response.json()["error"]
            with client.stream("GET", f"{provider.url}/sse/full") as streamed:
                assert isinstance(streamed.stream, httpx2.SyncByteStream)
                streamed.read()
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            with pytest.raises(httpx2.ConnectError):
                client.get(f"http://127.0.0.1:{port}/")
    found = rows("anthropic-ish")
    assert [(r.status, r.outcome) for r in found] == [
        (404, "client_error"),
        (200, "ok"),
        (None, "connect_error"),
    ] * 2
    assert found[1].streamed is True and found[1].first_byte_ms <= found[1].duration_ms


def test_monitored_client_records_stream_timing(recording, provider):
    from monitoring.client import MonitoredClient

    with (
        MonitoredClient(integration="streams", environment="production") as client,
        client.stream("GET", f"{provider.url}/sse/openai_error") as response,
    ):
        response.read()
    (row,) = rows("streams")
    assert (row.status, row.outcome, row.error_code) == (200, "server_error", "server_error")
    assert row.streamed is True and row.latency_ms <= row.first_byte_ms <= row.duration_ms
