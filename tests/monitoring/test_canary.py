"""A unique secret sent every way a secret travels never reaches the database or spool bytes."""

from __future__ import annotations

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
