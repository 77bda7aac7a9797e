"""The sandbox's TLS port: a certificate for loopback from a CA made at start-up."""

from __future__ import annotations

import os
import select
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from demo.sandbox import Sandbox, SandboxConfig
from demo.sandbox.tls import client_context

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(tmp_path):
    config = SandboxConfig(
        seed=2, latency_scale=0, error_rate=0, auth_burst_every_s=None, tls_port=0,
        ca_file=str(tmp_path / "ca.pem"),
    )  # fmt: skip
    with Sandbox(config) as running:
        yield running


def test_the_tls_port_answers_with_a_certificate_the_demo_ca_verifies(sandbox):
    # The CA certificate written for other processes is what verifies the port.
    verify = client_context(sandbox.config.ca_file)
    with httpx.Client(base_url=sandbox.tls_url, verify=verify) as client:
        health = client.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    host, port = sandbox.tls_url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        verify.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
    # Only the certificate was written: no key beside it.
    assert "PRIVATE KEY" not in Path(sandbox.config.ca_file).read_text()
    assert list(Path(sandbox.config.ca_file).parent.iterdir()) == [Path(sandbox.config.ca_file)]


def test_a_client_without_the_demo_ca_is_refused(sandbox):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{sandbox.tls_url}/v1/health", timeout=10)  # the public CAs only
    # A refused handshake costs the server nothing: the next client is served.
    verify = sandbox.ca.client_context()
    assert httpx.get(f"{sandbox.tls_url}/v1/health", verify=verify).status_code == 200


def test_both_ports_are_one_provider_and_links_keep_the_callers_scheme(sandbox):
    verify = sandbox.ca.client_context()
    key = {"Authorization": "Bearer sk_test_demo_tls"}
    with httpx.Client(base_url=sandbox.tls_url, verify=verify, headers=key) as tls:
        page = tls.get("/v1/customers", params={"limit": 10})
        assert page.links["next"]["url"].startswith(sandbox.tls_url + "/v1/customers?")
        charge = tls.post(
            "/v1/charges", json={"amount": 100, "currency": "usd"},
            headers={"Idempotency-Key": "same-key"},
        )  # fmt: skip
    with httpx.Client(base_url=sandbox.url, headers=key) as plain:
        assert plain.get("/v1/customers").links["next"]["url"].startswith(sandbox.url)
        replay = plain.post(
            "/v1/charges", json={"amount": 100, "currency": "usd"},
            headers={"Idempotency-Key": "same-key"},
        )  # fmt: skip
    # One provider behind both ports: the charge made over TLS replays over plain http.
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == charge.json()["id"]
    assert [r.path for r in sandbox.requests if r.method == "POST"] == ["/v1/charges"] * 2


def test_each_start_makes_a_new_ca(tmp_path):
    config = SandboxConfig(seed=1, latency_scale=0, tls_port=0, ca_file=str(tmp_path / "ca.pem"))
    with Sandbox(config) as first:
        old = first.ca.certificate_pem
    with Sandbox(config) as second:
        assert second.ca.certificate_pem != old
        assert Path(config.ca_file).read_bytes() == second.ca.certificate_pem
        with pytest.raises(ssl.SSLError):
            old_trust = ssl.create_default_context(cadata=old.decode())
            host, port = second.tls_url.removeprefix("https://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                old_trust.wrap_socket(raw, server_hostname=host)


def test_without_a_tls_port_there_is_no_tls_url():
    with Sandbox(SandboxConfig(latency_scale=0)) as plain:
        assert plain.ca is None
        with pytest.raises(RuntimeError, match="TLS port"):
            _ = plain.tls_url


def test_cli_serves_tls_and_writes_the_ca_certificate(tmp_path):
    ca_file = tmp_path / "var" / "ca.pem"
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.sandbox", "--port", "0", "--tls-port", "0",
         "--ca-file", str(ca_file), "--seed", "1", "--error-rate", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "sandbox did not announce itself"
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        assert f"(CA certificate in {ca_file})" in line
        tls_url = line.split(" and ")[1].split(" ")[0]
        assert tls_url.startswith("https://127.0.0.1:")
        verify = client_context(ca_file)
        assert httpx.get(f"{tls_url}/v1/health", verify=verify, timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
