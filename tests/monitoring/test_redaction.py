"""Tests for monitoring.redaction: nothing secret survives headers, URLs, text or bodies."""

from __future__ import annotations

import base64
import json
import string
import time
import uuid

import httpx
import pytest
from django.core.exceptions import ValidationError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitoring import audit
from monitoring.models import Probe
from monitoring.redaction import DEFAULT_DENYLIST, REDACTED, Redactor, is_secret_name

redactor = Redactor()

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


# --- names --------------------------------------------------------------------------------


def test_the_default_denylist_holds_the_required_words():
    required = {
        "password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "key", "auth",
        "credential", "signature", "sig", "session", "csrf", "private_key", "access_key",
        "awsaccesskeyid", "x-amz-signature", "x-goog-signature", "cookie",
    }  # fmt: skip
    assert required <= DEFAULT_DENYLIST


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "Password",
        "X-Api-Key",
        "api_key",
        "apiKey",
        "client_secret",
        "access_token",
        "X-Amz-Signature",
        "AWSAccessKeyId",
        "sessionid",
        "X-CSRF-Token",
        "private-key",
        "Private.Key",
        "sig",
        # Substring matching over-matches on purpose (see the module docstring).
        "monkey",
        "author",
        "max_tokens",
    ],
)
def test_it_recognises_secret_names(name):
    assert redactor.is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["content-type", "user", "email", "id", "x-request-id", "accept", "amount", "q"]
)
def test_it_leaves_ordinary_names_alone(name):
    assert not redactor.is_secret_name(name)


def test_per_integration_words_extend_the_denylist():
    custom = Redactor(["tenant-pin", "X_Partner_Ref"])
    assert custom.is_secret_name("X-Tenant_Pin")
    assert custom.is_secret_name("x-partner-ref")
    assert not redactor.is_secret_name("X-Tenant-Pin")
    assert custom.is_secret_name("password")  # defaults still apply


@pytest.mark.parametrize(
    "name", ["passwd", "session_key", "X-Amz-Credential", "client-secret", "Api.Key", "pwd"]
)
def test_audit_masking_and_probe_headers_use_the_one_secret_name_rule(name):
    # Names the audit log's and the probe form's own word lists used to let through.
    assert is_secret_name(name)
    assert audit._jsonable({name: "hunter2", "page": 2}) == {name: audit.MASK, "page": 2}
    probe = Probe(name="p", url="https://api.example.com/", headers={name: "hunter2"})
    with pytest.raises(ValidationError, match="environment variable"):
        probe.clean()
    Probe(name="p", url="https://api.example.com/", headers={name: "${SECRET}"}).clean()


@pytest.mark.parametrize("name", ["content-type", "page", "account", "x-request-id"])
def test_the_one_secret_name_rule_leaves_ordinary_names_alone(name):
    assert not is_secret_name(name)
    assert audit._jsonable({name: "v"}) == {name: "v"}


def test_blank_extra_words_do_not_make_every_name_secret():
    assert not Redactor(["", " - ", "_"]).is_secret_name("content-type")


# --- headers ------------------------------------------------------------------------------


def test_it_drops_credential_headers_entirely():
    headers = httpx.Headers(
        {
            "Authorization": "Bearer abc",
            "Proxy-Authorization": "Basic abc",
            "Cookie": "sid=1",
            "Set-Cookie": "sid=2",
            "X-Api-Key": "k",
            "X-Auth-Token": "t",
            "Stripe-Signature": "t=1,v1=abc",
            "Content-Type": "application/json",
            "X-Request-Id": "req_123",
        }
    )
    assert redactor.headers(headers) == {
        "content-type": "application/json",
        "x-request-id": "req_123",
    }


def test_it_drops_headers_named_by_the_integration():
    assert Redactor(["tenant-pin"]).headers({"X-Tenant-Pin": "1234", "Accept": "*/*"}) == {
        "accept": "*/*"
    }


def test_it_scrubs_secrets_out_of_kept_header_values():
    kept = redactor.headers({"X-Debug": "called with sk_live_51HqLyjWDarjtT1zdp7dc"})
    assert kept == {"x-debug": f"called with {REDACTED}"}


def test_it_keeps_authentication_challenges():
    challenge = 'Bearer realm="api", error="invalid_token", error_description="expired"'
    assert redactor.headers({"WWW-Authenticate": challenge}) == {"www-authenticate": challenge}


def test_it_caps_header_values():
    assert len(redactor.headers({"X-Long": "word " * 1000})["x-long"]) == 1024


# --- urls ---------------------------------------------------------------------------------


def test_it_removes_userinfo_and_fragment():
    url = "https://alice:s3cret@api.example.com:8443/v1/users#section"
    assert redactor.url(url) == "https://api.example.com:8443/v1/users"


def test_it_redacts_secret_query_values_keeping_keys_and_order():
    url = "https://api.example.com/v1/x?b=2&api_key=abc&a=1&X-Amz-Signature=ff00&access_token=t"
    assert redactor.url(url) == (
        "https://api.example.com/v1/x?b=2&api_key=[redacted]&a=1"
        "&X-Amz-Signature=[redacted]&access_token=[redacted]"
    )


def test_it_scrubs_secret_looking_query_values_under_innocent_keys():
    assert redactor.url(f"https://x.test/cb?state=ok&jwt_in={JWT}") == (
        "https://x.test/cb?state=ok&jwt_in=[redacted]"
    )


def test_it_redacts_path_segments_that_hold_secrets():
    url = "https://api.telegram.test/bot/sk_live_51HqLyjWDarjtT1zdp7dc/sendMessage"
    assert redactor.url(url) == "https://api.telegram.test/bot/[redacted]/sendMessage"


def test_it_leaves_ordinary_urls_alone():
    url = "https://api.stripe.com/v1/customers/cus_NffrFeUfNV2Hib/sources?limit=3&expand[]=data"
    assert redactor.url(url) == url


def test_it_redacts_relative_urls_too():
    assert redactor.url("/v1/x?token=abc&page=2") == "/v1/x?token=[redacted]&page=2"


def test_it_copes_with_urls_it_cannot_split():
    assert redactor.url("http://[::1/path?token=x#frag") == "http://[::1/path?token=[redacted]"


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123_x~+/==", f"Authorization: {REDACTED}"),
        ("sent Bearer abc.DEF-123_x~+/== to them", f"sent Bearer {REDACTED} to them"),
        ("hdr Basic " + base64.b64encode(b"user:pa55").decode(), f"hdr Basic {REDACTED}"),
        (f"token is {JWT}.", f"token is {REDACTED}."),
        (f"key:\n{PEM}\nafter", f"key:\n{REDACTED}\nafter"),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", f"cut {REDACTED}"),
        ("sk_live_51HqLyjWDarjtT1zdp7dc", REDACTED),
        ("sk_test_4eC39HqLyjWDarjtT1zdp7dc!", f"{REDACTED}!"),
        ("rk_live_51HqLyjWDarjtT1zdp7dcXYZ", REDACTED),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", REDACTED),
        ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", REDACTED),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a", REDACTED),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", REDACTED),
        ("slack xoxb-2634-5612-A8xkXq9sPp", f"slack {REDACTED}"),
        ("id AKIAIOSFODNN7EXAMPLE", f"id {REDACTED}"),
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", REDACTED),
        ("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", REDACTED),
        ("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234", REDACTED),
        ("password=hunter2&user=bob", f"password={REDACTED}&user=bob"),
        ('{"token": "tok with spaces", "id": 7}', f'{{"token": "{REDACTED}", "id": 7}}'),
        ("api_key: abc123 next", f"api_key: {REDACTED} next"),
        ("client_secret='it''s'", f"client_secret='{REDACTED}''s'"),
        (r'"password": "pa\"ss"', f'"password": "{REDACTED}"'),
        ("X-Api-Key=Token abc123", f"X-Api-Key={REDACTED}"),
        ("value Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg==", f"value {REDACTED}"),
        ("hex 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", f"hex {REDACTED}"),
        ("git https://deploy:ghs_abc@github.com/o/r", f"git https://{REDACTED}@github.com/o/r"),
    ],
)
def test_it_redacts_secrets_in_text(raw, expected):
    assert redactor.text(raw) == expected


@pytest.mark.parametrize(
    "prose",
    [
        "Missing Bearer token",
        'Bearer realm="example", error="invalid_token"',
        "This is a basic question about basic auth",
        "No such customer: 'cus_NffrFeUfNV2Hib'",
        "Invalid request: amount must be a positive integer (got -5)",
        "this_is_a_very_long_snake_case_identifier_without_numbers",
        "status=failed reason=card_declined",
        "See https://docs.example.com/errors/rate-limits for details",
        "Unauthorized: invalid credentials",
        "Authentication: required",
        "author=jane keyword=shoes",
    ],
)
def test_it_leaves_ordinary_prose_alone(prose):
    assert redactor.text(prose) == prose


def test_text_is_idempotent():
    once = redactor.text(f"password=x Bearer abcdefgh {JWT} sk_live_abcdef")
    assert redactor.text(once) == once


# --- json and bodies ----------------------------------------------------------------------


def test_it_redacts_json_values_under_secret_keys_recursively():
    payload = {
        "user": "bob",
        "token": {"value": "abc", "kind": "x"},
        "nested": [{"api_key": 12345}, {"note": "Bearer abcdefgh1"}],
        "password": None,
        "has_secret": True,
        "count": 3,
    }
    assert redactor.json(payload) == {
        "user": "bob",
        "token": REDACTED,
        "nested": [{"api_key": REDACTED}, {"note": f"Bearer {REDACTED}"}],
        "password": None,  # null and booleans carry nothing to hide
        "has_secret": True,
        "count": 3,
    }


def test_it_does_not_walk_json_deeper_than_it_inspects():
    deep: object = "sk_live_abcdef"
    for _ in range(100):
        deep = {"a": deep}
    assert "sk_live" not in json.dumps(redactor.json(deep))


def test_a_json_body_comes_back_compact_and_scrubbed():
    body = b'{"error": {"message": "bad key sk_live_51HqLyjW", "token": "abc"}, "n": 1}'
    assert redactor.body(body, "application/json") == (
        '{"error":{"message":"bad key [redacted]","token":"[redacted]"},"n":1}'
    )


def test_a_truncated_json_body_is_scrubbed_as_text():
    body = b'{"access_token": "abc.def", "refresh_token": "ghi", "x": "trunc'
    assert redactor.body(body, "application/json") == (
        '{"access_token": "[redacted]", "refresh_token": "[redacted]", "x": "trunc'
    )


def test_a_text_body_is_scrubbed_and_capped():
    body = b"Unauthorized: Bearer abcdefgh1234\n" + b"x" * 5000
    result = redactor.body(body, "text/plain", cap=100)
    assert result.startswith(f"Unauthorized: Bearer {REDACTED}\n")
    assert len(result) == 100


def test_the_cap_never_leaves_half_a_secret():
    body = ("x" * 2040 + " sk_live_51HqLyjWDarjtT1zdp7dc").encode()
    result = redactor.body(body, "text/plain", cap=2048)
    assert "sk_" not in result
    assert result == "x" * 2040 + " [redact"


def test_only_the_first_64_kb_of_a_body_is_read():
    body = b'{"a": "' + b"x" * 70000 + b'"}'
    # Read whole it would parse and come back compact; cut at 64 KB it is scrubbed as text.
    assert redactor.body(body, "application/json", cap=10) == '{"a": "xxx'


def test_a_body_uses_its_declared_charset():
    body = "passwort=geheim Grüße".encode("latin-1")
    assert redactor.body(body, "text/plain; charset=latin-1") == "passwort=geheim Grüße"
    assert Redactor(["passwort"]).body(body, "text/plain; charset=latin-1") == (
        f"passwort={REDACTED} Grüße"
    )


# --- canaries -----------------------------------------------------------------------------


def test_a_canary_secret_never_survives_anywhere():
    canary = f"Canary{uuid.uuid4().hex}"
    headers = {
        "Authorization": f"Bearer {canary}",
        "Cookie": f"session={canary}",
        "X-Custom-Token": canary,
        "X-Trace": f"token={canary}",
        "Accept": "application/json",
    }
    url = f"https://user:{canary}@api.example.com/v1/x?access_token={canary}&page=2#{canary}"
    body = json.dumps({"token": canary, "data": {"client_secret": canary}, "ok": False}).encode()
    stored = [
        json.dumps(redactor.headers(headers)),
        redactor.url(url),
        redactor.body(body, "application/json"),
        redactor.body(body[:-5], "application/json"),  # truncated: the text path
        redactor.text(f"curl -H 'Authorization: Bearer {canary}' -d password={canary}"),
    ]
    for value in stored:
        assert canary not in value
    assert "accept" in stored[0]  # the harmless header survived


# --- properties ---------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_B64URL = _ALNUM + "-_"
_SURROUNDINGS = st.text(max_size=60) | st.text(alphabet=_ALNUM + " =:\"'.-_/&", max_size=60)


@st.composite
def _planted(draw):
    """(secret as planted, the parts of it that must not survive)."""
    kind = draw(st.sampled_from(["stripe", "jwt", "bearer"]))
    if kind == "stripe":
        body = draw(st.text(alphabet=_ALNUM, min_size=24, max_size=24))
        return "sk_live_" + body, [body]
    if kind == "jwt":
        parts = [draw(st.text(alphabet=_B64URL, min_size=10, max_size=60)) for _ in range(3)]
        header = "eyJ" + parts[0]
        return f"{header}.{parts[1]}.{parts[2]}", [header, parts[1], parts[2]]
    token = draw(st.text(alphabet=_ALNUM + "-._~+/", min_size=16, max_size=64))
    scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER"]))
    return f"{scheme} {token}", [token]


@settings(max_examples=300)
@given(before=_SURROUNDINGS, planted=_planted(), after=_SURROUNDINGS)
def test_a_planted_secret_never_survives_text(before, planted, after):
    secret, parts = planted
    for part in parts:
        assume(part not in before and part not in after)
    result = redactor.text(before + secret + after)
    for part in parts:
        assert part not in result


@settings(max_examples=200)
@given(
    key=st.sampled_from(["token", "password", "api_key", "client_secret", "X-Auth"]),
    value=st.text(alphabet=_ALNUM, min_size=8, max_size=30),
    before=_SURROUNDINGS,
)
def test_a_planted_key_value_secret_never_survives_text(key, value, before):
    assume(value not in f"{before} {key} trailing &x=1")
    assert value not in redactor.text(f'{before} "{key}": "{value}" trailing')
    assert value not in redactor.text(f"{before} {key}={value}&x=1")


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_redaction_never_raises_on_arbitrary_text(text):
    redactor.text(text)
    redactor.url(text)
    redactor.headers({text[:20]: text})
    redactor.body(text.encode("utf-8", "surrogatepass"), "application/json")


# --- bounded work -------------------------------------------------------------------------

_ADVERSARIAL = {
    "letters": "a" * 10**6,
    "letters_digits": "a1" * 500000,
    "jwt_dots": "eyJ" + "a." * 500000,
    "jwt_heads": "eyJ" * 333333,
    "bearers": "Bearer " * 200000,
    "bearer_spaces": "Bearer" + " " * 10**6,
    "basics": "Basic dXNlcjpwYXNz " * 50000,
    "pem_unterminated": "-----BEGIN PRIVATE KEY-----" + "A" * 10**6,
    "pem_begins": "-----BEGIN PRIVATE KEY-----" * 40000,
    "equals": "=" * 10**6,
    "dashes": "-" * 10**6,
    "pairs": "a=" * 500000,
    "secret_pairs": "password=" * 100000,
    "quoted_pairs": '"token": "' * 100000,
    "escapes": '"password": "' + "\\" * 10**6,
    "stripe_prefixes": "sk_live_" * 125000,
    "github_prefixes": "ghp_" * 250000,
    "userinfo": "://a:" * 200000,
    "slashes": "/" * 10**6,
    "percent": "%" * 10**6,
    "at_signs": "a@" * 500000,
    "deep_json": "[" * 100000 + "]" * 100000,
    "deep_objects": '{"a":' * 5000 + "1" + "}" * 5000,
}


@pytest.mark.parametrize("name", list(_ADVERSARIAL))
def test_redaction_stays_linear_on_adversarial_input(name):
    text = _ADVERSARIAL[name]
    data = text.encode()
    calls = {
        "text": lambda: redactor.text(text),
        "url": lambda: redactor.url(f"https://x.test/{text}?{text}"),
        "headers": lambda: redactor.headers({"x-debug": text, text[:64]: text}),
        "body_json": lambda: redactor.body(data, "application/json"),
        "body_text": lambda: redactor.body(data, "text/plain", cap=10**6),
        "is_secret_name": lambda: redactor.is_secret_name(text),
    }
    for label, call in calls.items():
        started = time.perf_counter()
        call()
        # A guard against quadratic blow-up, not a speed assertion.
        assert time.perf_counter() - started < 5, label
