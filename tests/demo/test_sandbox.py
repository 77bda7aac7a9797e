"""Drives the fake provider over real loopback HTTP, the way the client and probes meet it."""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from demo.sandbox import Sandbox, SandboxConfig
from demo.sandbox.server import auth_burst_scheduled, outage_scheduled

REPO = Path(__file__).resolve().parents[2]
KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
QUIET = {"latency_scale": 0.0, "error_rate": 0.0}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=1, **QUIET)) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=10) as c:
        yield c


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_health_answers_ok_with_api_version(client: httpx.Client) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "2026-01-01"}
    assert response.headers["API-Version"] == "2026-01-01"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/health"),
        ("GET", "/v1/customers"),
        ("GET", "/v1/status/502"),
        ("GET", "/v1/nowhere"),
        ("DELETE", "/v1/charges"),
        ("HEAD", "/v1/health"),
    ],
)
def test_every_response_has_request_id_json_type_and_rate_limit_headers(
    client: httpx.Client, method: str, path: str
) -> None:
    response = client.request(method, path)
    assert response.headers["X-Request-Id"].startswith("req_")
    assert response.headers["Content-Type"] == "application/json"
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert response.headers[name].isdigit()
    if method != "HEAD":
        assert int(response.headers["Content-Length"]) == len(response.content)
        json.loads(response.content)


def test_request_ids_differ_between_requests(client: httpx.Client) -> None:
    ids = {client.get("/v1/health").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_unknown_method_on_known_path_is_405_with_allow(client: httpx.Client) -> None:
    response = client.delete("/v1/charges")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_it_keeps_the_connection_alive_between_requests(client: httpx.Client) -> None:
    ports = set()
    for _ in range(3):
        response = client.get("/v1/health")
        stream = response.extensions["network_stream"]
        ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1


def test_a_request_the_parser_refuses_still_gets_a_json_error(sandbox: Sandbox) -> None:
    host, port = sandbox.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        oversized_header = b"X-Junk: " + b"a" * 70_000 + b"\r\n"
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + oversized_header + b"\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["error"]["code"] == "invalid_request"


def test_it_rejects_a_missing_key_with_401_missing_api_key(sandbox: Sandbox) -> None:
    response = httpx.get(f"{sandbox.url}/v1/customers")
    assert response.status_code == 401
    assert error_code(response) == "missing_api_key"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["sk_test_revoked", "sk_live_abcdefghijkl", "pk_test_123"])
def test_it_rejects_revoked_or_foreign_keys_with_401_invalid_api_key(
    sandbox: Sandbox, key: str
) -> None:
    response = httpx.get(f"{sandbox.url}/v1/customers", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_invalid_key_message_never_echoes_the_whole_key(sandbox: Sandbox) -> None:
    key = "sk_live_0123456789abcdefSECRET"
    response = httpx.get(f"{sandbox.url}/v1/customers", headers={"Authorization": f"Bearer {key}"})
    assert key not in response.text
    assert "****" in response.json()["error"]["message"]


def test_readonly_key_reads_but_gets_403_insufficient_scope_on_writes(sandbox: Sandbox) -> None:
    headers = {"Authorization": "Bearer sk_test_reports_readonly"}
    with httpx.Client(base_url=sandbox.url, headers=headers) as readonly:
        assert readonly.get("/v1/customers").status_code == 200
        response = readonly.post("/v1/charges", json={"amount": 500, "currency": "usd"})
        assert response.status_code == 403
        assert error_code(response) == "insufficient_scope"
        assert readonly.post("/v1/messages", json={"to": "a@b.c"}).status_code == 403


def test_rate_limit_counts_down_then_429_with_retry_after() -> None:
    config = SandboxConfig(seed=1, quota=5, quota_window_s=3600, **QUIET)
    with Sandbox(config) as sb, httpx.Client(base_url=sb.url) as c:
        headers = {"Authorization": f"Bearer {KEY}"}
        remaining = []
        for _ in range(5):
            response = c.get("/v1/customers", headers=headers)
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]

        limited = c.get("/v1/customers", headers=headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 3600
        assert int(limited.headers["X-RateLimit-Reset"]) > time.time()
        assert limited.headers["Content-Type"] == "application/problem+json"
        problem = limited.json()
        assert problem["status"] == 429
        assert problem["title"] == "Too Many Requests"

        # The quota is per key: another key still has its whole window.
        other = c.get("/v1/customers", headers={"Authorization": "Bearer sk_test_other"})
        assert other.status_code == 200
        assert other.headers["X-RateLimit-Remaining"] == "4"


def test_set_mode_quota_applies_to_the_current_window(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    client.get("/v1/health")
    sandbox.set_mode(quota=1)
    assert client.get("/v1/health").status_code == 429


def test_pagination_walks_all_customers_through_link_headers(client: httpx.Client) -> None:
    ids: list[str] = []
    url: str | None = "/v1/customers"
    pages = 0
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        ids += [customer["id"] for customer in response.json()["data"]]
        url = response.links.get("next", {}).get("url")
        pages += 1
        assert pages <= 10, "pagination does not end"
    assert pages == 5
    assert len(ids) == len(set(ids)) == 50


def test_pagination_walks_all_customers_through_next_cursor(client: httpx.Client) -> None:
    ids: list[str] = []
    params: dict[str, str | int] = {"limit": 10}
    while True:
        page = client.get("/v1/customers", params=params).json()
        ids += [customer["id"] for customer in page["data"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 10, "cursor": page["next_cursor"]}
        assert len(ids) <= 50
    assert len(set(ids)) == 50
    last = client.get("/v1/customers", params={"limit": 10, "cursor": params["cursor"]})
    assert "Link" not in last.headers


def test_bad_cursor_or_limit_is_a_400_naming_the_parameter(client: httpx.Client) -> None:
    bad_cursor = client.get("/v1/customers", params={"cursor": "!!not-a-cursor"})
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["error"]["param"] == "cursor"
    bad_limit = client.get("/v1/customers", params={"limit": "1000"})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["param"] == "limit"


def test_customer_lookup_finds_listed_ids_and_404s_unknown(client: httpx.Client) -> None:
    first = client.get("/v1/customers", params={"limit": 1}).json()["data"][0]
    assert client.get(f"/v1/customers/{first['id']}").json() == first
    missing = client.get("/v1/customers/cus_nope")
    assert missing.status_code == 404
    assert error_code(missing) == "resource_missing"


def test_legacy_report_announces_deprecation_and_sunset(client: httpx.Client) -> None:
    response = client.get("/v1/legacy/report")
    assert response.status_code == 200
    now = datetime.now(UTC)

    deprecation = response.headers["Deprecation"]
    assert deprecation.startswith("@")
    deprecated_at = datetime.fromtimestamp(int(deprecation[1:]), UTC)
    assert deprecated_at < now

    sunset = email.utils.parsedate_to_datetime(response.headers["Sunset"])
    assert timedelta(days=55) < sunset - now < timedelta(days=65)

    migrate = response.links["deprecation"]["url"]
    assert migrate.endswith("/docs/migrate")
    assert client.get(migrate).status_code == 200


def test_forced_outage_answers_503_everywhere_until_lifted(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_mode(outage=True)
    for path in ("/v1/health", "/v1/customers", "/v1/status/200"):
        response = client.get(path)
        assert response.status_code == 503
        assert error_code(response) == "service_unavailable"
        assert "Retry-After" in response.headers
    sandbox.set_mode(outage=False)
    assert client.get("/v1/health").status_code == 200


def test_scheduled_outage_window_answers_503() -> None:
    config = SandboxConfig(seed=1, outage_windows=((0.0, 3600.0),), **QUIET)
    with Sandbox(config) as sb:
        assert httpx.get(f"{sb.url}/v1/health").status_code == 503


def test_outage_schedule_covers_only_its_windows() -> None:
    config = SandboxConfig(outage_windows=((600.0, 120.0), (3600.0, 60.0)))
    assert not outage_scheduled(config, 599.0)
    assert outage_scheduled(config, 600.0)
    assert outage_scheduled(config, 719.0)
    assert not outage_scheduled(config, 720.0)
    assert outage_scheduled(config, 3630.0)


def test_forced_auth_burst_fails_keyed_calls_while_health_passes(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_mode(auth_burst=True)
    burst = client.get("/v1/customers")
    assert burst.status_code == 401
    assert error_code(burst) == "invalid_api_key"
    # The provider itself is fine: that difference is what the monitor must spot.
    assert client.get("/v1/health").status_code == 200
    sandbox.set_mode(auth_burst=False)
    assert client.get("/v1/customers").status_code == 200


def burst_intervals(seed: int, config: SandboxConfig, until_s: int) -> list[tuple[int, int]]:
    intervals: list[tuple[int, int]] = []
    start = None
    for second in range(until_s):
        on = auth_burst_scheduled(config, seed, float(second))
        if on and start is None:
            start = second
        elif not on and start is not None:
            intervals.append((start, second))
            start = None
    return intervals


def test_auth_burst_schedule_is_45_seconds_about_every_20_minutes() -> None:
    config = SandboxConfig()
    intervals = burst_intervals(seed=3, config=config, until_s=110 * 60)
    assert len(intervals) == 5
    assert all(end - start in (45, 46) for start, end in intervals)
    starts = [start for start, _ in intervals]
    assert 18 * 60 <= starts[0] <= 22 * 60
    assert all(16 * 60 <= b - a <= 24 * 60 for a, b in itertools.pairwise(starts))
    assert burst_intervals(seed=4, config=config, until_s=110 * 60) != intervals


def test_auth_burst_schedule_can_be_turned_off() -> None:
    config = SandboxConfig(auth_burst_every_s=None)
    assert burst_intervals(seed=3, config=config, until_s=3 * 3600) == []


def test_error_rate_one_fails_every_api_call_with_a_5xx_body(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_mode(error_rate=1.0)
    seen = set()
    for _ in range(30):
        response = client.get("/v1/customers")
        assert response.status_code in (500, 502, 503)
        assert error_code(response)
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"
        seen.add(response.status_code)
    assert seen == {500, 502, 503}
    # Test tools answer exactly what was asked even then.
    assert client.get("/v1/status/200").status_code == 200


def test_same_seed_gives_same_data_and_same_fault_sequence() -> None:
    def session(seed: int) -> tuple[list[int], list[dict]]:
        config = SandboxConfig(seed=seed, latency_scale=0.0, error_rate=0.3)
        with Sandbox(config) as sb, httpx.Client(base_url=sb.url) as c:
            statuses = [c.get("/v1/health").status_code for _ in range(40)]
            sb.set_mode(error_rate=0.0)
            customers = c.get(
                "/v1/customers", params={"limit": 50}, headers={"Authorization": f"Bearer {KEY}"}
            ).json()["data"]
        return statuses, customers

    first, again, other = session(7), session(7), session(8)
    assert first == again
    assert set(first[0]) - {200}, "error_rate=0.3 over 40 calls should produce some faults"
    assert other[1] != first[1]


def test_slow_endpoint_outlasts_a_short_client_timeout(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v1/slow", params={"ms": 5000}, timeout=0.2)
    assert client.get("/v1/slow", params={"ms": 10}).json() == {"slept_ms": 10}


@pytest.mark.parametrize(
    ("code", "error"),
    [(400, "invalid_request"), (404, "resource_missing"), (429, "rate_limited"), (504, None)],
)
def test_status_endpoint_returns_that_status_with_an_error_body(
    client: httpx.Client, code: int, error: str | None
) -> None:
    response = client.get(f"/v1/status/{code}")
    assert response.status_code == code
    assert error_code(response) == (error or "gateway_timeout")
    if code == 429:
        assert response.headers["Retry-After"] == "1"


def test_status_endpoint_sends_no_body_for_204_and_rejects_nonsense(client: httpx.Client) -> None:
    empty = client.get("/v1/status/204")
    assert empty.status_code == 204
    assert empty.content == b""
    assert client.get("/v1/status/teapot").status_code == 400


def test_charges_validate_and_replay_on_the_same_idempotency_key(client: httpx.Client) -> None:
    bad = client.post("/v1/charges", json={"amount": -5, "currency": "usd"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "amount"

    headers = {"Idempotency-Key": "order-42"}
    body = {"amount": 1999, "currency": "eur"}
    first = client.post("/v1/charges", json=body, headers=headers)
    again = client.post("/v1/charges", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/v1/charges", json=body).json()["id"] != first.json()["id"]


def test_messages_are_queued_then_readable(client: httpx.Client) -> None:
    sent = client.post("/v1/messages", json={"to": "ops@example.com", "subject": "Hi"})
    assert sent.status_code == 202
    assert sent.json()["status"] == "queued"
    fetched = client.get(f"/v1/messages/{sent.json()['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["to"] == "ops@example.com"
    assert client.get("/v1/messages/msg_unknown").status_code == 404
    invalid = client.post("/v1/messages", content=b"{not json", headers={"Content-Type": "x"})
    assert error_code(invalid) == "invalid_json"


def test_requests_log_records_method_target_and_headers(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    client.post("/v1/messages?trace=1", json={"to": "a@example.com"}, headers={"X-Trace": "t1"})
    method, path, headers = sandbox.requests[-1]
    assert (method, path) == ("POST", "/v1/messages?trace=1")
    assert headers["x-trace"] == "t1"
    assert headers["authorization"] == f"Bearer {KEY}"


def test_latency_is_lognormal_around_80_ms_when_unscaled() -> None:
    # Draws only: nothing sleeps, so this says nothing about wall-clock speed.
    sb = Sandbox(SandboxConfig(seed=5))
    draws = sorted(sb._draw_latency() * 1000 for _ in range(4000))
    assert 65 <= draws[len(draws) // 2] <= 95
    assert draws[int(len(draws) * 0.99)] > 400
    assert max(draws) <= 2000


def test_stop_ends_a_request_that_is_sleeping() -> None:
    sb = Sandbox(SandboxConfig(seed=1, **QUIET)).start()
    with httpx.Client(base_url=sb.url, timeout=20) as c:

        def call() -> None:
            with contextlib.suppress(httpx.HTTPError):  # cut off or answered: either ends it
                c.get("/v1/slow", params={"ms": 30000})

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while not sb.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        sb.stop()
        caller.join(timeout=15)
        assert not caller.is_alive()


def test_cli_prints_its_url_and_exits_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.sandbox", "--port", "0", "--seed", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "sandbox did not announce itself"
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        url = line.removeprefix("sandbox listening on ")
        assert httpx.get(f"{url}/v1/health", timeout=10).status_code in (200, 500, 502, 503)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == "", "the sandbox should not log requests by default"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
