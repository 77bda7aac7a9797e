"""Fuzzed headers and bodies at POST /hooks/<token>/: a 2xx, 400, 401 or 413, never a 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring import recorder
from monitoring.models import RequestLog
from monitoring.webhooks import dedupe
from tests.monitoring.webhooks.hookkit import KEY, add_secret, make_endpoint, whsec

_NAMES = [
    "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp",
    "svix-signature", "stripe-signature", "x-hub-signature-256", "x-github-delivery",
    "x-github-event", "x-signature", "x-timestamp", "content-type", "content-encoding",
]  # fmt: skip
_latin1 = st.text(
    alphabet=st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=120
)
_shaped = st.sampled_from(
    ["v1,", "v1a,AAAA", "t=1,v1=" + "a" * 64, "sha256=" + "0" * 64, "1614265330", "msg_1", ""]
)


@pytest.fixture
def endpoints(transactional_db, monkeypatch, settings):
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", KEY)
    settings.UPSTREAM = {**settings.UPSTREAM, "WEBHOOK_MAX_BODY_BYTES": 2048}
    made = []
    for scheme in ("standard", "svix", "stripe", "github", "hmac_sha256", "none"):
        extra = {"header_name": "X-Signature", "timestamp_header": "X-Timestamp"}
        endpoint = make_endpoint(scheme, **(extra if scheme == "hmac_sha256" else {}))
        if scheme != "none":
            add_secret(endpoint, whsec())
        made.append(endpoint)
    yield made
    recorder.flush(timeout=30)
    dedupe.stop()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.integers(min_value=0, max_value=5),
    headers=st.dictionaries(st.sampled_from(_NAMES), st.one_of(_latin1, _shaped), max_size=6),
    body=st.one_of(
        st.binary(max_size=3000),
        st.sampled_from([b"{}", b'{"id": 1, "type": null}', b'{"id": "x", "type": "a/b?c"}']),
        st.recursive(
            st.one_of(st.none(), st.integers(), st.text(max_size=20)),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda v: __import__("json").dumps({"id": v, "type": v}).encode()),
    ),
)
def test_no_header_or_body_makes_a_500(client, endpoints, which, headers, body):
    endpoint = endpoints[which]
    response = client.post(
        endpoint.path, data=body, content_type="application/json", headers=headers
    )
    assert response.status_code in (200, 202, 400, 401, 413), response.content
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] in ("malformed", "bad_signature", "expired", "too_large")


def test_fuzzed_deliveries_were_all_recorded(client, endpoints):
    for endpoint in endpoints:
        client.post(endpoint.path, data=b"{}", content_type="application/json", headers={})
    recorder.flush(timeout=30)
    assert RequestLog.objects.filter(source="webhook").count() == len(endpoints)
