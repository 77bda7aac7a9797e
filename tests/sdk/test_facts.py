"""upstream_client.facts: what a request says about its credential and version, never the
secret itself — unit tests of the pure logic, then one call through the real httpx client."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import upstream_client
from upstream_client import facts

KEY = "sk_live_51HxCanaryKeyThatMustNeverLeave"


def jwt(iat: float) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'sub': 'u', 'iat': iat})}.c2ln"


def test_a_fingerprint_is_a_keyed_hash_of_the_key_without_its_scheme():
    one = facts.fingerprint(f"Bearer {KEY}")
    assert len(one) == 16 and int(one, 16) >= 0
    assert one == facts.fingerprint(KEY) == facts.fingerprint(f"Token token={KEY}")
    assert one != facts.fingerprint(KEY + "x")
    assert KEY not in one and one not in KEY


def test_the_hash_key_comes_from_the_environment(monkeypatch):
    default = facts.fingerprint(KEY)
    monkeypatch.setenv("UPSTREAM_FINGERPRINT_KEY", "our own secret")
    assert facts.fingerprint(KEY) != default


def test_facts_name_the_version_header_but_never_its_value():
    found = facts.of_pairs([("authorization", f"Bearer {KEY}"), ("stripe-version", "2024-06-20")])
    assert found == {"key_fingerprint": facts.fingerprint(KEY), "version_header": "Stripe-Version"}
    assert "2024-06-20" not in json.dumps(found)
    assert facts.of_pairs([("accept", "application/json")]) is None


def test_a_jwt_bearer_token_gives_its_age_and_nothing_else():
    token = jwt(time.time() - 3600)
    found = facts.of_pairs([("authorization", f"Bearer {token}")])
    assert 3590 <= found["token_age_s"] <= 3700
    assert set(found) == {"key_fingerprint", "token_age_s"}
    opaque = facts.of_pairs([("authorization", "Bearer not.a-jwt")])
    assert "token_age_s" not in opaque


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _List:
    def __init__(self):
        self.events = []

    def submit(self, event):
        self.events.append(event)


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_the_clients_send_facts_and_never_the_key(server, library):
    sink = _List()
    headers = {"Authorization": f"Bearer {KEY}", "Stripe-Version": "2024-06-20"}
    if library == "httpx":
        with upstream_client.Client(integration="stripe", sink=sink, headers=headers) as client:
            client.get(f"{server}/v1/charges")
    else:
        import upstream_client.requests as up_requests

        with up_requests.Session(integration="stripe", sink=sink) as session:
            session.get(f"{server}/v1/charges", headers=headers)
    (event,) = sink.events
    assert event["key_fingerprint"] == facts.fingerprint(KEY)
    assert event["version_header"] == "Stripe-Version"
    assert KEY not in json.dumps(event) and "2024-06-20" not in json.dumps(event)
