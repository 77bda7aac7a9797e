"""A unique secret sent every way a secret travels never reaches the database or spool bytes."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitoring import attempts, recorder
from monitoring.client import MonitoredClient
from monitoring.models import Integration, RequestLog
from tests.monitoring.conftest import stored_bytes

CANARY = "canary" + secrets.token_hex(20)


class _Leaky(BaseHTTPRequestHandler):
    """A provider that echoes the caller's secret back in every place it can."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        echoed = {
            "Set-Cookie": f"session={CANARY}; HttpOnly",
            "X-Echo-Authorization": self.headers.get("Authorization", ""),
            "Deprecation": "@1767225600",
            "Link": f'<https://docs.example.com/migrate?api_key={CANARY}>; rel="deprecation"',
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "42",
        }
        if self.path.startswith("/v1/ok"):
            self._reply(200, {"ok": True, "session": CANARY}, echoed)
            return
        error = {
            "error": {
                "code": "invalid_token",
                "message": f"Invalid API key provided: {CANARY}",
                "token": CANARY,
                "request": {"path": self.path},
            }
        }
        self._reply(401, error, echoed)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(400, {"error": {"message": f"bad payload {body.decode()}"}}, {})


@pytest.fixture
def leaky_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=100)
    yield tmp_path / "spool"
    recorder.configure()  # back to the settings' limits, flushing first


def _calls(host: str) -> None:
    with MonitoredClient(
        integration="canary",
        environment="production",
        base_url=f"http://deploy:{CANARY}@{host}",
        headers={"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY, "Cookie": CANARY},
    ) as api:
        assert api.get("/v1/secret", params={"api_key": CANARY, "limit": 1}).status_code == 401
        assert api.get("/v1/ok", params={"api_key": CANARY}).status_code == 200
        assert api.post("/v1/charges", json={"password": CANARY}).status_code == 400
        assert api.get(f"http://user:{CANARY}@{host}/v1/secret").status_code == 401


def test_the_canary_never_reaches_the_database_file(recording, leaky_server, caplog):
    Integration.objects.create(name="Canary", slug="canary", environment="production")
    caplog.set_level("INFO", logger="httpx")
    _calls(leaky_server)
    assert "HTTP Request: GET http://127.0.0.1" in caplog.text  # httpx logged each call
    assert CANARY not in caplog.text
    recorder.flush(timeout=30)

    logged = list(RequestLog.objects.filter(integration__slug="canary").order_by("id"))
    assert len(logged) == 4
    secret, ok, post, userinfo = logged
    assert secret.query == "api_key=[redacted]&limit=1"
    assert (secret.error_code, secret.status) == ("invalid_token", 401)
    assert "[redacted]" in secret.error_message
    assert '"token":"[redacted]"' in secret.error_body
    assert ok.deprecated and ok.ratelimit_remaining == 42
    assert ok.deprecation_link.startswith("https://docs.example.com/migrate?")
    assert "[redacted]" in ok.deprecation_link
    assert post.status == 400 and post.request_bytes > len(CANARY)
    assert userinfo.host == leaky_server
    # What the caller adds about its credential is a keyed hash, never the key (issue 18).
    from upstream_client.facts import fingerprint

    # httpx sends the URLs' userinfo as Basic credentials: those are the keys in use.
    basic = {
        fingerprint("Basic " + base64.b64encode(f"{user}:{CANARY}".encode()).decode())
        for user in ("deploy", "user")
    }
    assert {row.key_fingerprint for row in logged} == basic
    assert all(len(fp) == 16 and fp not in CANARY for fp in basic)

    stored = stored_bytes()
    assert b"invalid_token" in stored  # we are reading the right place
    assert CANARY.encode() not in stored


def test_the_canary_never_reaches_the_spool_when_the_database_is_away(
    recording, leaky_server, locked_database
):
    Integration.objects.create(name="Canary", slug="canary", environment="production")
    recorder.configure(
        spool_dir=recording, queue_size=2, batch_size=1, busy_timeout_ms=50, flush_interval_s=0.02
    )
    with MonitoredClient(integration="canary", environment="production") as warm:
        warm.get(f"http://{leaky_server}/v1/ok")  # the writer opens its connection
    recorder.flush(timeout=20)
    with locked_database:
        _calls(leaky_server)
        _calls(leaky_server)
        deadline = time.monotonic() + 10
        while recorder.stats()["spilled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        spooled = b"".join(path.read_bytes() for path in recording.glob("*.jsonl"))
    assert b'"integration_id"' in spooled
    assert CANARY.encode() not in spooled

    recorder.flush(timeout=30)
    assert RequestLog.objects.filter(integration__slug="canary").count() == 9
    assert list(recording.glob("*.jsonl")) == []
    assert CANARY.encode() not in stored_bytes()


# Every credential format the preset catalog sends (issue 14), as (preset, header, value).
_B64_BASIC = base64.b64encode(f"AC0123456789abcdef:{CANARY}".encode()).decode()
CATALOG_AUTH = [
    ("paubox", "Authorization", f"Token token={CANARY}"),
    ("paubox", "Authorization", f"Bearer {CANARY}"),
    ("openpanel", "Authorization", f"Bearer eyJhbGciOiJIUzI1NiJ9.{CANARY}.c2lnbmF0dXJl"),
    ("stripe", "Authorization", f"Bearer sk_live_{CANARY}"),
    ("github", "Authorization", f"token ghp_{CANARY}"),
    ("openai", "Authorization", f"Bearer sk-proj-{CANARY}"),
    ("anthropic", "x-api-key", f"sk-ant-api03-{CANARY}"),
    ("twilio", "Authorization", f"Basic {_B64_BASIC}"),
    ("sendgrid", "Authorization", f"Bearer SG.{CANARY}.{CANARY[:20]}"),
    ("slack", "Authorization", f"Bearer xoxb-1234-5678-{CANARY}"),
]


class _EchoAuth(BaseHTTPRequestHandler):
    """A provider that quotes the credential it was sent in its error body and headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        sent = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
        body = json.dumps(
            {
                "errors": [{"code": 401, "title": "Unauthorized", "details": f"bad {sent}"}],
                "error": {"type": "authentication_error", "message": f"Invalid: {sent}"},
                "message": f"credential {sent} rejected",
            }
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("WWW-Authenticate", f'Token realm="{sent}"')
        self.send_header("X-RateLimit-Remaining", "0")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_catalog_credential_format_reaches_the_database(recording, echo_server):
    for index, (preset, header, value) in enumerate(CATALOG_AUTH):
        Integration.objects.create(
            name=f"{preset} {index}", slug=f"{preset}-{index}", preset=preset,
            environment="production", require_https=False,
        )  # fmt: skip
        with MonitoredClient(
            integration=f"{preset}-{index}",
            environment="production",
            base_url=f"http://{echo_server}",
            headers={header: value},
        ) as api:
            assert api.get("/v1/me", params={"token": CANARY}).status_code == 401
    recorder.flush(timeout=30)
    rows = list(RequestLog.objects.order_by("id"))
    assert len(rows) == len(CATALOG_AUTH)
    assert all(r.status == 401 and r.error_message for r in rows)
    assert all(r.query == "token=[redacted]" for r in rows)
    stored = stored_bytes()
    assert b"Unauthorized" in stored or b"rejected" in stored  # we are reading the right place
    assert CANARY.encode() not in stored
    assert _B64_BASIC.encode() not in stored


def test_a_preset_probe_secret_never_reaches_the_database(recording, echo_server, settings,
                                                          monkeypatch):  # fmt: skip
    from io import StringIO

    from django.core.management import call_command

    from monitoring.models import Probe, ProbeResult
    from monitoring.probes.schedule import run_now

    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [echo_server]}
    call_command("add_integration", "--preset", "paubox", "--environment", "production",
                 "--base-url", f"http://{echo_server}/v1/acme", stdout=StringIO())  # fmt: skip
    monkeypatch.setenv("UPSTREAM_SECRET_PAUBOX_API_KEY", CANARY)
    results, busy = run_now(Probe.objects.filter(integration__slug="paubox"))
    assert not busy and [r.status for r in results] == [401]
    recorder.flush(timeout=30)
    assert ProbeResult.objects.count() == 1
    assert RequestLog.objects.filter(source="probe", status=401).exists()
    stored = stored_bytes()
    assert b"UPSTREAM_SECRET_PAUBOX_API_KEY" in stored  # the reference is stored, not the value
    assert CANARY.encode() not in stored
