"""An expired token told from a rejected one by the token's age, which the caller computes
(upstream_client.facts) and the writer hands to the preset's diagnosis: OpenPanel answers
the same "Missing or invalid token" to both."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitoring import attempts, recorder
from monitoring.client import MonitoredClient
from monitoring.models import Integration, RequestLog


def jwt(iat: float) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'sub': 'admin', 'iat': int(iat)})}.c2lnbmF0dXJl"


class _Panel(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"error":"Missing or invalid token"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def panel():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Panel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    yield
    recorder.configure()


@pytest.mark.parametrize(
    ("age_s", "code"), [(20 * 60, "token_expired"), (60, "credentials_rejected")]
)
def test_a_401_is_diagnosed_by_the_tokens_age(recording, panel, age_s, code):
    Integration.objects.create(
        name="OpenPanel", slug="openpanel", environment="production", preset="openpanel"
    )
    token = jwt(time.time() - age_s)
    with MonitoredClient(
        integration="openpanel", environment="production", base_url=panel,
        headers={"Authorization": f"Bearer {token}"},
    ) as api:  # fmt: skip
        assert api.get("/api/whoami").status_code == 401
    recorder.flush(timeout=30)
    row = RequestLog.objects.get()
    assert row.error_code == code
    assert age_s - 5 <= row.token_age_s <= age_s + 60
    assert token not in json.dumps(list(RequestLog.objects.values()), default=str)
