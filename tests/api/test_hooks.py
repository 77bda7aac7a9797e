"""POST /hooks/<token>/ over real HTTP, with deliveries signed by the providers' own libraries."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from monitoring import attempts, recorder
from monitoring.models import RequestLog, WebhookEndpoint, WebhookSample, WebhookSeen
from monitoring.webhooks import dedupe
from tests.monitoring.conftest import stored_bytes
from tests.monitoring.webhooks.hookkit import (
    KEY,
    add_secret,
    body_of,
    make_endpoint,
    recorded,
    standard_headers,
    stripe_headers,
    whsec,
)


@pytest.fixture
def recording(live_server, tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", KEY)
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=1000)
    yield live_server.url
    recorder.configure()
    dedupe.stop()  # its connection must not outlive the test database


def _post(base: str, endpoint: WebhookEndpoint, body: str | bytes, headers: dict) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(f"{base}{endpoint.path}", content=data, headers=headers, timeout=10)


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_a_standard_webhooks_delivery_is_verified_and_recorded(recording):
    endpoint = make_endpoint("standard")
    secret = whsec()
    add_secret(endpoint, secret)
    body = body_of("invoice.paid")
    headers = standard_headers(secret, body, msg_id="msg_2Zq1", ts=time.time() - 2)
    response = _post(recording, endpoint, body, headers)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    [row] = recorded()
    assert (row.integration_id, row.method, row.host, row.path) == (
        endpoint.integration_id,
        "POST",
        "api.acme.test",
        "/invoice.paid",
    )
    assert (row.status, row.outcome, row.error_code, row.call_id) == (202, "ok", "", "msg_2Zq1")
    assert row.response_bytes == len(body)
    assert 1000 <= row.latency_ms < 60_000  # the delivery lag: signed about 2 s before receipt
    endpoint.refresh_from_db()
    assert endpoint.last_delivery_at is not None


def test_svix_deliveries_signed_by_svix_verify(recording, monkeypatch):
    endpoint = make_endpoint("svix")
    secret = whsec()
    add_secret(endpoint, secret, monkeypatch)  # a ${UPSTREAM_SECRET_…} reference
    body = body_of("message.attempt.exhausted")
    assert (
        _post(recording, endpoint, body, standard_headers(secret, body, prefix="svix-")).status_code
        == 202
    )
    # Svix's names are not Standard Webhooks': the webhook- headers alone carry no signature.
    plain = standard_headers(secret, body)
    assert _problem(_post(recording, endpoint, body, plain), 401)["code"] == "bad_signature"
    assert [r.status for r in recorded()] == [202, 401]


def test_stripe_deliveries_and_a_duplicate_event(recording):
    endpoint = make_endpoint("stripe")
    secret = "whsec_" + secrets.token_hex(16)
    add_secret(endpoint, secret)
    body = body_of("charge.succeeded", "evt_1Nx")
    assert _post(recording, endpoint, body, stripe_headers(secret, body)).status_code == 202
    # Stripe resends the same event (same id) with a fresh signature: answered, not re-run.
    again = _post(recording, endpoint, body, stripe_headers(secret, body))
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    first, second = recorded()
    assert (first.status, first.error_code, first.call_id) == (202, "", "evt_1Nx")
    assert (second.status, second.error_code, second.path) == (
        200,
        "duplicate",
        "/charge.succeeded",
    )
    assert WebhookSeen.objects.filter(endpoint=endpoint).count() == 1


def test_github_deliveries_dedupe_on_the_delivery_header(recording):
    endpoint = make_endpoint("github")
    secret = "It's a Secret to Everybody"
    add_secret(endpoint, secret)
    body = b'{"zen": "Keep it logically awesome."}'
    headers = {
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "ping",
        "Content-Type": "application/json",
    }
    assert _post(recording, endpoint, body, headers).status_code == 202
    assert _post(recording, endpoint, body, headers).status_code == 200
    rows = recorded()
    assert [(r.status, r.path, r.latency_ms) for r in rows] == [
        (202, "/ping", 0),
        (200, "/ping", 0),
    ]
    assert rows[0].call_id == "72d3162ecc7811e381ab4c9367dc0958"


def test_rotation_two_secrets_verify_until_the_old_one_ends(recording, monkeypatch):
    endpoint = make_endpoint("standard")
    old, new = whsec(), whsec()
    retiring = add_secret(endpoint, old, not_after=timezone.now() + timedelta(hours=1))
    add_secret(endpoint, new, monkeypatch)
    for secret in (old, new):
        body = body_of()
        assert _post(recording, endpoint, body, standard_headers(secret, body)).status_code == 202
    retiring.not_after = timezone.now() - timedelta(seconds=1)
    retiring.save()
    body = body_of()
    response = _post(recording, endpoint, body, standard_headers(old, body))
    assert _problem(response, 401)["code"] == "bad_signature"
    assert _post(recording, endpoint, body, standard_headers(new, body)).status_code == 202


def test_a_replay_outside_the_window_is_refused_with_a_reason(recording):
    endpoint = make_endpoint("standard", replay_window_s=60)
    secret = whsec()
    add_secret(endpoint, secret)
    body = body_of()
    response = _post(
        recording, endpoint, body, standard_headers(secret, body, ts=time.time() - 600)
    )
    detail = _problem(response, 401)
    assert detail["code"] == "expired" and "replay window" in detail["detail"]
    stale = stripe_headers("whsec_x", body, ts=int(time.time()) - 600)
    stripe_endpoint = make_endpoint("stripe", replay_window_s=60)
    add_secret(stripe_endpoint, "whsec_x")
    assert _problem(_post(recording, stripe_endpoint, body, stale), 401)["code"] == "expired"
    rows = recorded()
    assert [(r.status, r.error_code, r.path, r.latency_ms) for r in rows] == [
        (401, "expired", "/unknown", 0),
        (401, "expired", "/unknown", 0),
    ]


def test_bad_missing_and_malformed_signatures(recording):
    endpoint = make_endpoint("standard")
    secret = whsec()
    add_secret(endpoint, secret)
    body = body_of()
    forged = standard_headers(whsec(), body)
    assert _problem(_post(recording, endpoint, body, forged), 401)["code"] == "bad_signature"
    unsigned = {k: v for k, v in forged.items() if k != "webhook-signature"}
    assert _problem(_post(recording, endpoint, body, unsigned), 401)["code"] == "bad_signature"
    broken = forged | {"webhook-timestamp": "yesterday"}
    assert _problem(_post(recording, endpoint, body, broken), 400)["code"] == "malformed"
    changed = standard_headers(secret, body)
    assert _problem(_post(recording, endpoint, body + " ", changed), 401)["code"] == "bad_signature"
    assert [(r.status, r.error_code, r.outcome) for r in recorded()] == [
        (401, "bad_signature", "client_error"),
        (401, "bad_signature", "client_error"),
        (400, "malformed", "client_error"),
        (401, "bad_signature", "client_error"),
    ]


def test_size_cap_unknown_token_and_methods(recording, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "WEBHOOK_MAX_BODY_BYTES": 1000}
    endpoint = make_endpoint("none")
    assert _problem(_post(recording, endpoint, b"x" * 1001, {}), 413)["code"] == "too_large"
    assert _post(recording, endpoint, b"x" * 1000, {}).status_code == 202
    unknown = httpx.post(f"{recording}/hooks/{'A' * 43}/", content=b"{}")
    assert _problem(unknown, 404)["detail"]
    assert _problem(httpx.post(f"{recording}/hooks/short/", content=b"{}"), 404)
    assert _problem(httpx.post(f"{recording}/hooks/{endpoint.token}/x/y", content=b""), 404)
    got = httpx.get(f"{recording}{endpoint.path}")
    assert _problem(got, 405) and got.headers["allow"] == "POST"
    # Without the trailing slash too (no redirect a provider would not follow with its body).
    assert httpx.post(f"{recording}{endpoint.path.rstrip('/')}", content=b"{}").status_code == 202
    endpoint.active = False
    endpoint.save()
    assert _problem(_post(recording, endpoint, b"{}", {}), 404)
    assert [(r.status, r.error_code) for r in recorded()] == [
        (413, "too_large"),
        (202, ""),
        (202, ""),
    ]


class _Stream:
    """A request body with no Content-Length (chunked), as gunicorn hands it over."""

    META: dict = {}

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def read(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_the_cap_holds_while_reading_a_body_of_unknown_length():
    from api.views_hooks import _read, _TooLarge

    assert _read(_Stream([b"a" * 600, b"a" * 400]), 1000) == b"a" * 1000
    with pytest.raises(_TooLarge):
        _read(_Stream([b"a" * 600, b"a" * 600, b"a" * 600]), 1000)


def test_a_secret_url_endpoint_dedupes_on_the_body_id_and_keeps_opt_in_samples(recording):
    endpoint = make_endpoint("none", sample_bodies=True)
    body = json.dumps(
        {"id": "ev_9", "type": "mail.bounced", "to": "a@example.com", "password": "x1"}
    )
    assert _post(recording, endpoint, body, {"Content-Type": "application/json"}).status_code == 202
    assert _post(recording, endpoint, body, {"Content-Type": "application/json"}).status_code == 200
    sample = WebhookSample.objects.get(endpoint=endpoint)
    assert sample.event_type == "mail.bounced"
    assert '"password"' in sample.body and "x1" not in sample.body


def test_the_canary_secrets_and_signatures_never_reach_a_table_or_the_logs(
    recording, caplog, monkeypatch
):
    caplog.set_level("DEBUG")
    canary = "canary" + secrets.token_hex(16)
    reference_secret = "whsec_" + __import__("base64").b64encode(canary.encode()).decode()
    stored_secret = "whsec_" + __import__("base64").b64encode(canary[::-1].encode()).decode()
    endpoint = make_endpoint("standard")
    add_secret(endpoint, stored_secret)
    add_secret(endpoint, reference_secret, monkeypatch)
    signatures = []
    for secret in (stored_secret, reference_secret, whsec()):
        body = body_of()
        headers = standard_headers(secret, body)
        signatures.append(headers["webhook-signature"].split(",", 1)[1])
        _post(recording, endpoint, body, headers)
    assert [r.status for r in recorded()] == [202, 202, 401]
    stored = stored_bytes()
    assert b"invoice.paid" in stored  # we are reading the right place
    for needle in (canary, canary[::-1], stored_secret, reference_secret, *signatures):
        assert needle.encode() not in stored
        assert needle not in caplog.text
    assert RequestLog.objects.filter(error_body__contains="whsec").count() == 0


def test_cadence_is_learned_from_the_gaps(recording):
    endpoint = make_endpoint("none")
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        last_delivery_at=timezone.now() - timedelta(seconds=120)
    )
    assert _post(recording, endpoint, b"{}", {}).status_code == 202
    endpoint.refresh_from_db()
    assert 100 < endpoint.cadence_s < 200
    before = endpoint.last_delivery_at
    assert _post(recording, endpoint, b"{}", {}).status_code == 202
    endpoint.refresh_from_db()
    assert endpoint.last_delivery_at == before  # written at most once a minute


def test_the_receivers_header_lookup_agrees_with_django_request_headers():
    from django.test import RequestFactory

    from api.views_hooks import _Headers

    request = RequestFactory().post(
        "/hooks/x/",
        data=b"{}",
        content_type="application/json",
        headers={"Webhook-Id": "msg_1", "X-Hub-Signature-256": "sha256=ab", "Svix-Id": " s "},
    )
    mine = _Headers(request.META)
    names = ["webhook-id", "x-hub-signature-256", "svix-id", "content-type", "content-length"]
    names += ["webhook-signature", "x_hub_signature_256", "stripe-signature", ""]
    for name in names:
        assert mine.get(name) == request.headers.get(name), name
    assert mine.get("webhook-id") == "msg_1" and mine.get("cookie-less") is None
