"""One probe run against a real loopback server: assertions, failures, SSRF guard, secrets."""

from __future__ import annotations

import asyncio
import socket
import ssl
from urllib.parse import quote

import httpx
import pytest

from monitoring.probes.run import ProbeSpec, RunResult, execute, failed_run, make_client
from tests.monitoring.probes.probe_server import ProbeTarget

SECRET = "sk_live_probe_secret_value_9f8e7d"


def run(url: str, allowed: list[str], **spec) -> RunResult:
    fields = {
        "probe_id": 1, "integration_id": 1, "method": "GET", "url": url, "headers": {},
        "body": "", "timeout_s": 5.0, "assertions": {},
    }  # fmt: skip
    fields.update(spec)

    async def go() -> RunResult:
        async with make_client() as client:
            return await execute(ProbeSpec(**fields), client, allowed=allowed)

    return asyncio.run(go())


# --- assertions, each passing and failing ---------------------------------------------------

CASES = [
    ("/json", {"status": "200"}, True, ""),
    ("/status/503", {"status": "2xx"}, False, "status"),
    ("/status/404", {"status": "400-499"}, True, ""),
    ("/text", {"body_contains": "upstream"}, True, ""),
    ("/text", {"body_contains": "downstream"}, False, "body"),
    ("/text", {"body_regex": r"hello \w+ world"}, True, ""),
    ("/text", {"body_regex": r"^goodbye"}, False, "body"),
    ("/json", {"json_path": ['$.status == "ok"', "$.items[0].id exists"]}, True, ""),
    ("/json", {"json_path": ['$.status == "down"']}, False, "json_path"),
    ("/json", {"json_path": ["$.missing exists"]}, False, "json_path"),
    ("/json", {"header": {"name": "X-Version"}}, True, ""),
    ("/json", {"header": {"name": "X-Missing"}}, False, "header"),
    ("/json", {"header": {"name": "x-version", "regex": r"^2\."}}, True, ""),
    ("/json", {"header": {"name": "X-Version", "regex": r"^3\."}}, False, "header"),
    ("/json", {"https_only": True}, False, "https"),
    ("/json", {"latency_failed_ms": 20_000}, True, ""),
    ("/sleep?ms=250", {"latency_failed_ms": 100}, False, "latency"),
]


@pytest.mark.parametrize(("path", "assertions", "ok", "reason"), CASES)
def test_each_assertion_kind_passes_and_fails(target, allowed, path, assertions, ok, reason):
    result = run(target.url + path, allowed, assertions=assertions)
    assert (result.ok, result.reason) == (ok, reason), result.message
    assert result.status is not None
    assert result.outcome in {"ok", "client_error", "server_error"}


def test_latency_above_the_degraded_threshold_is_ok_but_degraded(target, allowed):
    result = run(
        target.url + "/sleep?ms=250",
        allowed,
        assertions={"latency_degraded_ms": 100, "latency_failed_ms": 20_000},
    )
    assert result.ok and result.degraded
    assert result.latency_ms >= 250
    assert "degraded" in result.message


def test_a_slow_server_times_out(target, allowed):
    result = run(target.url + "/sleep?ms=3000", allowed, timeout_s=0.3)
    assert (result.ok, result.reason, result.outcome) == (False, "timeout", "timeout")
    assert "0.3 s" in result.message


def test_a_reset_connection_is_a_connect_failure(target, allowed):
    result = run(target.url + "/reset", allowed)
    assert (result.ok, result.reason) == (False, "connect")
    assert result.outcome in {"read_error", "protocol_error"}
    assert result.status is None


def test_a_refused_connection_is_a_connect_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(f"http://127.0.0.1:{port}/", [f"127.0.0.1:{port}"])
    assert (result.reason, result.outcome) == ("connect", "connect_error")


def test_redirects_are_followed_and_post_becomes_get_after_303(target, allowed):
    result = run(
        target.url + "/redirect?code=303&to=/json", allowed, method="POST", body='{"a": 1}'
    )
    assert result.ok, result.message
    assert result.url == target.url + "/json"
    assert [(m, p) for m, p, _, _ in target.requests] == [
        ("POST", "/redirect?code=303&to=/json"),
        ("GET", "/json"),
    ]


def test_a_redirect_loop_stops_after_five_hops(target, allowed):
    result = run(target.url + "/loop", allowed)
    assert (result.ok, result.reason) == (False, "error")
    assert "more than 5 redirects" in result.message
    assert len(target.paths()) == 6


# --- SSRF guard --------------------------------------------------------------------------------


def test_loopback_is_refused_unless_allowlisted(target):
    result = run(target.url + "/json", allowed=[])
    assert (result.reason, result.outcome) == ("blocked", "blocked")
    assert "loopback" in result.message
    assert target.requests == []


def test_a_hostname_resolving_to_a_private_address_is_refused(target):
    result = run(f"http://localhost:{target.port}/json", allowed=[target.hostport])
    assert result.reason == "blocked"
    assert "resolves to" in result.message
    assert target.requests == []


def test_the_cloud_metadata_address_is_refused_without_a_connection():
    result = run("http://169.254.169.254/latest/meta-data/", allowed=[])
    assert result.reason == "blocked"
    assert "metadata" in result.message


def test_a_redirect_to_127_0_0_1_is_refused(target, allowed):
    with ProbeTarget() as inner:
        for to in (f"http://127.0.0.1:{inner.port}/json", f"http://localhost:{inner.port}/"):
            result = run(f"{target.url}/redirect?to={quote(to, safe='')}", allowed)
            assert result.reason == "blocked", result.message
        assert inner.requests == []


def test_a_cross_origin_redirect_drops_headers_from_the_environment(target, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_PROBE_TEST_KEY", SECRET)
    headers = {"Authorization": "Bearer ${UPSTREAM_SECRET_PROBE_TEST_KEY}", "X-Plain": "visible"}
    with ProbeTarget() as other:
        allowed = [target.hostport, other.hostport]
        to = quote(f"{other.url}/headers", safe="")
        result = run(f"{target.url}/redirect?to={to}", allowed, headers=headers)
        assert result.ok, result.message
        received = other.requests[0][2]
    assert target.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    assert "Authorization" not in received
    assert received["X-Plain"] == "visible"


# --- secrets ---------------------------------------------------------------------------------


def test_header_references_are_resolved_only_when_sent(target, allowed, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_PROBE_TEST_KEY", SECRET)
    headers = {"Authorization": "Bearer ${UPSTREAM_SECRET_PROBE_TEST_KEY}"}
    result = run(target.url + "/headers", allowed, headers=headers)
    assert result.ok
    assert target.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in result.message


def test_an_unset_variable_fails_the_run_without_a_request(target, allowed, monkeypatch):
    monkeypatch.delenv("UPSTREAM_SECRET_PROBE_TEST_KEY", raising=False)
    result = run(
        target.url + "/json", allowed, headers={"X-Key": "${UPSTREAM_SECRET_PROBE_TEST_KEY}"}
    )
    assert (result.ok, result.reason) == (False, "error")
    assert "UPSTREAM_SECRET_PROBE_TEST_KEY" in result.message
    assert target.requests == []


def test_a_secret_echoed_back_by_the_server_is_scrubbed_from_messages(target, allowed, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_PROBE_TEST_KEY", SECRET)
    result = run(
        target.url + "/headers",
        allowed,
        headers={"Authorization": "Bearer ${UPSTREAM_SECRET_PROBE_TEST_KEY}"},
        assertions={"json_path": ['$.Authorization == "nope"']},
    )
    assert (result.ok, result.reason) == (False, "json_path")
    assert SECRET not in result.message
    assert "Bearer [secret]" in result.message


def test_a_variable_holding_a_line_break_is_refused_without_showing_it(
    target, allowed, monkeypatch
):
    monkeypatch.setenv("UPSTREAM_SECRET_PROBE_TEST_KEY", SECRET + "\r\nX-Injected: 1")
    result = run(
        target.url + "/json", allowed, headers={"X-Key": "${UPSTREAM_SECRET_PROBE_TEST_KEY}"}
    )
    assert (result.ok, result.reason) == (False, "error")
    assert "UPSTREAM_SECRET_PROBE_TEST_KEY" in result.message and SECRET not in result.message
    assert target.requests == []


# --- how a failure is classified ----------------------------------------------------------------

SPEC = ProbeSpec(
    probe_id=1, integration_id=1, method="GET", url="https://api.example.com/", headers={},
    body="", timeout_s=2.0, assertions={},
)  # fmt: skip
_REQUEST = httpx.Request("GET", SPEC.url)


@pytest.mark.parametrize(
    ("exc", "reason", "outcome", "words"),
    [
        (httpx.ConnectTimeout("t", request=_REQUEST), "timeout", "timeout", "2 s connecting"),
        (httpx.ReadTimeout("t", request=_REQUEST), "timeout", "timeout", "waiting for a response"),
        (TimeoutError(), "timeout", "timeout", "timed out after 2 s"),
        (httpx.ConnectError("refused", request=_REQUEST), "connect", "connect_error", "refused"),
        (ConnectionRefusedError(111, "refused"), "connect", "connect_error", "connection failed"),
        (httpx.RemoteProtocolError("gone"), "connect", "protocol_error", "broken by the server"),
        (httpx.ReadError("reset", request=_REQUEST), "connect", "read_error", "connection reset"),
        (httpx.UnsupportedProtocol("ftp"), "error", "other_error", "UnsupportedProtocol: ftp"),
        (RuntimeError("bug"), "error", "other_error", "internal error: RuntimeError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_a_transport_failure_is_classified_as_the_client_classifies_it(exc, reason, outcome, words):
    from monitoring import parsing

    result = failed_run(SPEC, exc)
    assert (result.ok, result.reason, result.outcome) == (False, reason, outcome)
    assert result.outcome == parsing.classify_exception(exc)
    assert words in result.message


def test_a_certificate_failure_behind_a_connect_error_says_what_is_wrong():
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    cause.verify_message = "self-signed certificate in certificate chain"
    try:
        raise httpx.ConnectError("handshake failed", request=_REQUEST) from cause
    except httpx.ConnectError as exc:
        result = failed_run(SPEC, exc)
    assert (result.reason, result.outcome) == ("tls", "tls_error")
    assert result.message == (
        "TLS handshake failed: certificate verify failed: self-signed certificate in "
        "certificate chain"
    )
