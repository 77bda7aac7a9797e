"""The signature schemes: published test vectors, the providers' own signers, fuzzed headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
import svix
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.models import WebhookScheme
from monitoring.webhooks import schemes
from monitoring.webhooks.schemes import BadSignature, Expired, Malformed, Settings, WebhookError

# Standard Webhooks' published vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# GitHub's published vector.
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

STANDARD = schemes.get("standard")
SVIX = schemes.get("svix")
STRIPE = schemes.get("stripe")
GITHUB = schemes.get("github")
HMAC = schemes.get("hmac_sha256")
WINDOW = Settings(replay_window_s=300)


def _sw_headers(signature: str = SW_SIGNATURE, prefix: str = "webhook-", ts: int = SW_TS):
    return {f"{prefix}id": SW_ID, f"{prefix}timestamp": str(ts), f"{prefix}signature": signature}


def test_the_registry_matches_the_model_choices():
    assert set(schemes.SCHEMES) == set(WebhookScheme.values)
    assert all(scheme.key == key for key, scheme in schemes.SCHEMES.items())


# --- Standard Webhooks and Svix ------------------------------------------------------------


def test_standard_webhooks_published_vector_verifies():
    verified = STANDARD.verify(_sw_headers(), SW_BODY, [SW_SECRET], WINDOW, SW_TS + 10)
    assert verified == schemes.Verified(SW_ID, SW_TS, "")


def test_standard_webhooks_vector_signed_by_the_reference_library_agrees():
    signed = standardwebhooks.Webhook(SW_SECRET).sign(
        SW_ID, datetime.fromtimestamp(SW_TS, tz=UTC), SW_BODY.decode()
    )
    assert signed == SW_SIGNATURE


def test_a_space_separated_list_matches_on_any_entry_and_skips_unknown_versions():
    listed = f"v2,abc v1,{base64.b64encode(b'x' * 32).decode()} {SW_SIGNATURE}"
    assert STANDARD.verify(_sw_headers(listed), SW_BODY, [SW_SECRET], WINDOW, SW_TS).timestamp


def test_rotation_any_secret_may_verify():
    other = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert STANDARD.verify(_sw_headers(), SW_BODY, [other, SW_SECRET], WINDOW, SW_TS)
    with pytest.raises(BadSignature):
        STANDARD.verify(_sw_headers(), SW_BODY, [other], WINDOW, SW_TS)


def test_a_changed_body_or_id_fails():
    with pytest.raises(BadSignature):
        STANDARD.verify(_sw_headers(), SW_BODY + b" ", [SW_SECRET], WINDOW, SW_TS)
    headers = _sw_headers() | {"webhook-id": "msg_other"}
    with pytest.raises(BadSignature):
        STANDARD.verify(headers, SW_BODY, [SW_SECRET], WINDOW, SW_TS)


def test_the_window_holds_in_both_directions_for_standard_webhooks():
    with pytest.raises(Expired, match="outside the 300 s replay window"):
        STANDARD.verify(_sw_headers(), SW_BODY, [SW_SECRET], WINDOW, SW_TS + 301)
    with pytest.raises(Expired, match="in the future"):
        STANDARD.verify(_sw_headers(), SW_BODY, [SW_SECRET], WINDOW, SW_TS - 301)
    assert STANDARD.verify(_sw_headers(), SW_BODY, [SW_SECRET], WINDOW, SW_TS - 299)


def test_a_bad_signature_is_reported_before_an_old_timestamp():
    # Expired must mean "genuine but late": a forgery with an old timestamp is a forgery.
    with pytest.raises(BadSignature):
        STANDARD.verify(_sw_headers(), SW_BODY, ["whsec_" + "A" * 32], WINDOW, SW_TS + 9999)


def test_missing_signature_is_401_and_missing_id_is_400():
    with pytest.raises(BadSignature) as caught:
        STANDARD.verify({"webhook-id": SW_ID, "webhook-timestamp": "1"}, b"", [], WINDOW, 1)
    assert caught.value.status == 401
    with pytest.raises(Malformed) as caught:
        STANDARD.verify({"webhook-signature": SW_SIGNATURE}, b"", [SW_SECRET], WINDOW, 1)
    assert caught.value.status == 400


def test_svix_uses_its_own_header_prefix_and_its_library_signs():
    secret = "whsec_" + base64.b64encode(b"svix-test-secret-32-bytes-long!!").decode()
    body = json.dumps({"type": "invoice.paid", "id": "evt_1"})
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    signature = svix.Webhook(secret).sign("msg_1", now, body)
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    }
    assert (
        SVIX.verify(headers, body.encode(), [secret], WINDOW, now.timestamp()).delivery_id
        == "msg_1"
    )
    with pytest.raises(BadSignature):  # the webhook- names are not Svix's
        STANDARD.verify(headers, body.encode(), [secret], WINDOW, now.timestamp())


def _ed25519_pair():
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, "whpk_" + base64.b64encode(raw).decode()


def test_v1a_ed25519_signatures_verify_with_a_whpk_key():
    private, public = _ed25519_pair()
    signature = base64.b64encode(private.sign(f"{SW_ID}.{SW_TS}.".encode() + SW_BODY)).decode()
    headers = _sw_headers(f"v1a,{signature}")
    assert STANDARD.verify(headers, SW_BODY, [public], WINDOW, SW_TS)
    _, stranger = _ed25519_pair()
    with pytest.raises(BadSignature):
        STANDARD.verify(headers, SW_BODY, [stranger, SW_SECRET], WINDOW, SW_TS)
    assert STANDARD.check_secret(public) is None
    assert STANDARD.check_secret("whpk_abc")


# --- Stripe ----------------------------------------------------------------------------------


def test_stripe_header_from_stripes_own_helper_verifies():
    secret = "whsec_test_stripe_secret"
    body = json.dumps({"id": "evt_1", "type": "charge.succeeded"})
    header = stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=1_700_000_000
    )
    # Stripe's own verifier agrees with the header (we sign as Stripe signs).
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
    verified = STRIPE.verify(
        {"stripe-signature": header}, body.encode(), [secret], WINDOW, 1_700_000_100
    )
    assert verified.timestamp == 1_700_000_000


def test_stripe_any_v1_may_match_and_the_window_is_past_only():
    secret = "whsec_s"
    body = b'{"id": "evt_2"}'
    good = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    header = f"t=1700000000,v1={'0' * 64},v0={'1' * 64},v1={good}"
    headers = {"stripe-signature": header}
    assert STRIPE.verify(headers, body, [secret], WINDOW, 1_700_000_000 - 10_000)  # future: fine
    with pytest.raises(Expired, match="replay window"):
        STRIPE.verify(headers, body, [secret], WINDOW, 1_700_000_301)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("", BadSignature),
        (f"t=1,v0={'a' * 64}", BadSignature),
        ("v1=" + "a" * 64, Malformed),
        ("t=abc,v1=" + "a" * 64, Malformed),
        ("t=1,v1=zz", Malformed),
        ("garbage", Malformed),
        ("t=1,t=2,v1=" + "a" * 64, Malformed),
    ],
)
def test_stripe_header_problems(header, error):
    with pytest.raises(error):
        STRIPE.verify({"stripe-signature": header}, b"{}", ["whsec_s"], WINDOW, 1)


# --- GitHub and generic HMAC -----------------------------------------------------------------


def test_github_published_vector_verifies():
    headers = {
        "x-hub-signature-256": GH_SIGNATURE,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-github-event": "push",
    }
    verified = GITHUB.verify(headers, GH_BODY, [GH_SECRET], WINDOW, 0)
    assert verified == schemes.Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", None, "push")
    with pytest.raises(BadSignature):
        GITHUB.verify(headers, GH_BODY, ["another secret"], WINDOW, 0)
    with pytest.raises(Malformed):
        GITHUB.verify({"x-hub-signature-256": "sha1=abc"}, GH_BODY, [GH_SECRET], WINDOW, 0)


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_generic_hmac_in_either_encoding_with_a_timestamp(encoding):
    secret, body = "generic-secret", b'{"type": "mail.delivered"}'
    digest = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).digest()
    value = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    conf = Settings(300, "X-Signature", encoding, "X-Timestamp")
    headers = {"x-signature": value, "x-timestamp": "1700000000"}
    assert HMAC.verify(headers, body, [secret], conf, 1_700_000_010).timestamp == 1_700_000_000
    with pytest.raises(Expired):
        HMAC.verify(headers, body, [secret], conf, 1_700_000_400)
    with pytest.raises(Malformed):
        HMAC.verify({"x-signature": value}, body, [secret], conf, 1_700_000_010)


def test_generic_hmac_without_a_timestamp_and_with_a_sha256_prefix():
    secret, body = "s3cret", b"plain"
    value = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    conf = Settings(300, "X-Sig", "hex", "")
    assert HMAC.verify({"x-sig": value}, body, [secret], conf, 0).timestamp is None
    assert HMAC.check_settings(Settings(300, "", "hex", "")) == ["header name is required"]


def test_none_accepts_anything():
    assert schemes.get("none").verify({}, b"anything", [], WINDOW, 0) == schemes.Verified()


# --- fuzzing: every header parser raises its own errors or nothing ---------------------------

_values = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="v1a,=t0123456789abcdefABCDEF+/ sha", max_size=200),
    st.sampled_from(["", " ", "v1,", "v1a,", "t=", "sha256=", "=", ",", "t=1,v1=" + "a" * 64]),
)
_NAMES = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "stripe-signature",
    "x-hub-signature-256",
    "x-github-delivery",
    "x-github-event",
    "x-signature",
    "x-timestamp",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(sorted(schemes.SCHEMES)),
    headers=st.dictionaries(st.sampled_from(_NAMES), _values, max_size=8),
    body=st.binary(max_size=200),
    encoding=st.sampled_from(["hex", "base64"]),
    now=st.floats(min_value=-1e12, max_value=1e13, allow_nan=False),
)
def test_fuzzed_headers_raise_only_the_schemes_own_errors(key, headers, body, encoding, now):
    conf = Settings(300, "X-Signature", encoding, "X-Timestamp")
    _, public = _ED25519
    try:
        schemes.get(key).verify(headers, body, [SW_SECRET, "plain", public], conf, now)
    except WebhookError as exc:
        assert exc.status in (400, 401) and exc.code and str(exc)


_ED25519 = _ed25519_pair()


@settings(max_examples=200, deadline=None)
@given(
    timestamp=st.integers(min_value=0, max_value=10**12),
    signatures=st.lists(
        st.tuples(st.sampled_from(["v1", "v1a", "v2", ""]), st.binary(max_size=80)), max_size=4
    ),
)
def test_fuzzed_standard_signature_lists(timestamp, signatures):
    header = " ".join(f"{v},{base64.b64encode(b).decode()}" for v, b in signatures)
    headers = {
        "webhook-id": "msg",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": header,
    }
    with pytest.raises(WebhookError):
        STANDARD.verify(headers, b"{}", [SW_SECRET, _ED25519[1]], WINDOW, timestamp)


def test_too_many_signatures_are_refused_before_any_is_checked():
    many = " ".join([SW_SIGNATURE] * (schemes.MAX_SIGNATURES + 1))
    with pytest.raises(Malformed, match="More than"):
        STANDARD.verify(_sw_headers(many), SW_BODY, [SW_SECRET], WINDOW, SW_TS)
    header = "t=1," + ",".join(["v1=" + "a" * 64] * (schemes.MAX_SIGNATURES + 3))
    with pytest.raises(Malformed, match="More than"):
        STRIPE.verify({"stripe-signature": header}, b"{}", ["whsec_s"], WINDOW, 1)


def test_the_system_check_catches_a_registry_out_of_step(monkeypatch):
    from monitoring.checks import check_webhook_schemes

    assert check_webhook_schemes(None) == []
    monkeypatch.setitem(schemes.SCHEMES, "rot13", schemes.NoSignature())
    [error] = check_webhook_schemes(None)
    assert error.id == "upstream.E040" and "rot13" in error.msg
