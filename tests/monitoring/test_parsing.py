"""Tests for monitoring.parsing: path templates, error payloads, headers, outcome classes."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.parsing import (
    CODE_CAP,
    MESSAGE_CAP,
    Deprecation,
    ParsedError,
    RateLimit,
    classify_exception,
    classify_status,
    parse_api_version,
    parse_deprecation,
    parse_error,
    parse_rate_limit,
    template_path,
)
from monitoring.redaction import Redactor

NOW = 1_700_000_000.0


# --- template_path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/users/42/orders/7", "/v1/users/{id}/orders/{id}"),
        ("/v1/items/123e4567-e89b-12d3-a456-426614174000", "/v1/items/{uuid}"),
        ("/v1/customers/cus_NffrFeUfNV2Hib", "/v1/customers/{id}"),
        (
            "/repos/octo/hello/commits/6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "/repos/octo/hello/commits/{id}",
        ),
        ("/v3/contacts/jane.doe@example.com", "/v3/contacts/{email}"),
        ("/v3/contacts/jane.doe%40example.co.uk/lists", "/v3/contacts/{email}/lists"),
        (
            "/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX1/Messages/"
            "SM1f0e3c2b6d8a4a7c9e5b3d1f2a4c6e8b.json",
            "/2010-04-01/Accounts/{id}/Messages/{id}.json",
        ),
        ("/v1/users/42.json", "/v1/users/{id}.json"),
        ("/v1/files/NffrFeUfNVHibXyzAbQrT", "/v1/files/{id}"),
    ],
)
def test_it_replaces_ids_with_placeholders(path, expected):
    assert template_path(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/v1/users/me", "/api/getUserPermissions", "/v2/payment_methods", "/2010-04-01/Accounts", "/"],
)
def test_it_keeps_words_intact(path):
    assert template_path(path) == path


def test_it_drops_query_and_fragment():
    assert template_path("/v1/users/42?expand=orders&token=abc#top") == "/v1/users/{id}"


def test_it_takes_the_path_of_a_full_url():
    assert template_path("https://api.example.com/v1/users/42?x=1") == "/v1/users/{id}"


def test_an_empty_path_is_the_root():
    assert template_path("") == "/"
    assert template_path("?page=2") == "/"


def test_explicit_templates_win_when_they_match():
    templates = ["/v1/users/{user_id}/orders/{order_id}"]
    assert template_path("/v1/users/ab/orders/cd", templates) == templates[0]
    assert template_path("/v1/users/ab/orders/cd/", templates) == templates[0]


def test_explicit_templates_that_do_not_match_are_ignored():
    templates = ["/v1/users/{user_id}/orders/{order_id}", "/v2/users/{user_id}"]
    assert template_path("/v1/users/42/orders", templates) == "/v1/users/{id}/orders"
    assert (
        template_path("/v1/users/42/orders/7/items", templates)
        == "/v1/users/{id}/orders/{id}/items"
    )


def test_the_most_literal_explicit_template_wins():
    templates = ["/v1/users/{user_id}", "/v1/users/me"]
    assert template_path("/v1/users/me", templates) == "/v1/users/me"
    assert template_path("/v1/users/bob", templates) == "/v1/users/{user_id}"


def test_templates_are_capped():
    long_path = "/" + "/".join(f"segment-name-{n}" for n in range(100))
    assert len(template_path(long_path)) == 255


# --- parse_error --------------------------------------------------------------------------


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(
            _json(
                {
                    "error": {
                        "code": "resource_missing",
                        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                        "message": "No such customer: 'cus_NffrFeUfNV2Hib'",
                        "param": "id",
                        "type": "invalid_request_error",
                    }
                }
            ),
            "application/json",
            ParsedError("resource_missing", "No such customer: 'cus_NffrFeUfNV2Hib'"),
            id="stripe",
        ),
        pytest.param(
            _json({"error": {"type": "api_error", "message": "Something went wrong."}}),
            "application/json",
            ParsedError("api_error", "Something went wrong."),
            id="stripe-type-only",
        ),
        pytest.param(
            _json(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ),
            "application/json",
            ParsedError("invalid_request_error", "Incorrect API key provided."),
            id="openai-null-code",
        ),
        pytest.param(
            _json(
                {
                    "error": {
                        "code": 403,
                        "message": "The caller does not have permission",
                        "status": "PERMISSION_DENIED",
                    }
                }
            ),
            "application/json; charset=UTF-8",
            ParsedError("PERMISSION_DENIED", "The caller does not have permission"),
            id="google",
        ),
        pytest.param(
            _json({"error": {"code": 429, "message": "Too many"}}),
            "application/json",
            ParsedError("429", "Too many"),
            id="numeric-code",
        ),
        pytest.param(
            _json(
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                }
            ),
            "application/json; charset=utf-8",
            ParsedError("", "Bad credentials"),
            id="github",
        ),
        pytest.param(
            _json(
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
                }
            ),
            "application/json",
            ParsedError("missing_field", "Validation Failed"),
            id="github-validation",
        ),
        pytest.param(
            _json(
                {
                    "code": 20404,
                    "message": "The requested resource /2010-04-01/Accounts/AC1/Messages/SM1.json "
                    "was not found",
                    "more_info": "https://www.twilio.com/docs/errors/20404",
                    "status": 404,
                }
            ),
            "application/json",
            ParsedError(
                "20404",
                "The requested resource /2010-04-01/Accounts/AC1/Messages/SM1.json was not found",
            ),
            id="twilio",
        ),
        pytest.param(
            _json(
                {
                    "errors": [
                        {
                            "message": "The provided authorization grant is invalid.",
                            "field": None,
                            "help": None,
                        }
                    ]
                }
            ),
            "application/json",
            ParsedError("", "The provided authorization grant is invalid."),
            id="sendgrid",
        ),
        pytest.param(
            _json(
                {
                    "type": "https://example.com/probs/out-of-credit",
                    "title": "You do not have enough credit.",
                    "detail": "Your current balance is 30, but that costs 50.",
                    "status": 403,
                }
            ),
            "application/problem+json",
            ParsedError(
                "https://example.com/probs/out-of-credit",
                "Your current balance is 30, but that costs 50.",
            ),
            id="problem-json",
        ),
        pytest.param(
            _json({"type": "about:blank", "title": "Not Found", "status": 404}),
            "application/problem+json",
            ParsedError("404", "Not Found"),
            id="problem-json-about-blank",
        ),
        pytest.param(
            _json({"error": "invalid_token", "error_description": "The access token expired"}),
            "application/json",
            ParsedError("invalid_token", "The access token expired"),
            id="oauth",
        ),
        pytest.param(
            _json({"error": "invalid_grant"}),
            "application/json",
            ParsedError("invalid_grant", ""),
            id="error-identifier",
        ),
        pytest.param(
            _json({"error": "Something broke on our side"}),
            "application/json",
            ParsedError("", "Something broke on our side"),
            id="error-sentence",
        ),
        pytest.param(
            _json(
                {"statusCode": 400, "message": ["email must be an email"], "error": "Bad Request"}
            ),
            "application/json",
            ParsedError("Bad Request", "email must be an email"),
            id="nestjs",
        ),
        pytest.param(
            _json(
                {
                    "fault": {
                        "faultstring": "Invalid ApiKey",
                        "detail": {"errorcode": "oauth.v2.InvalidApiKey"},
                    }
                }
            ),
            "application/json",
            ParsedError("oauth.v2.InvalidApiKey", "Invalid ApiKey"),
            id="apigee-fault",
        ),
        pytest.param(
            _json({"errors": [{"message": "Not allowed", "extensions": {"code": "FORBIDDEN"}}]}),
            "application/json",
            ParsedError("FORBIDDEN", "Not allowed"),
            id="graphql",
        ),
        pytest.param(
            _json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
            "application/json",
            ParsedError("INVALID_SESSION_ID", "Session expired or invalid"),
            id="salesforce-list",
        ),
        pytest.param(
            _json({"__type": "ValidationException", "message": "1 validation error detected"}),
            "application/x-amz-json-1.1",
            ParsedError("ValidationException", "1 validation error detected"),
            id="aws-json",
        ),
        pytest.param(
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
            b"<Message>The specified key does not exist.</Message></Error>",
            "application/xml",
            ParsedError("NoSuchKey", "The specified key does not exist."),
            id="aws-xml",
        ),
        pytest.param(
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n",
            "text/html",
            ParsedError("", "502 Bad Gateway"),
            id="nginx-html",
        ),
        pytest.param(
            b"\n\n   \nUpstream connect error &amp; reset\nsecond line",
            "text/plain",
            ParsedError("", "Upstream connect error &amp; reset"),
            id="plain-text",
        ),
        pytest.param(
            b'{"error": {"code": "trunc',
            "application/json",
            ParsedError("", '{"error": {"code": "trunc'),
            id="invalid-json",
        ),
        pytest.param(b"", "application/json", ParsedError("", ""), id="empty"),
        pytest.param(
            b'"Invalid API key"',
            "application/json",
            ParsedError("", "Invalid API key"),
            id="string",
        ),
    ],
)
def test_it_parses_real_world_error_payloads(body, content_type, expected):
    assert parse_error(body, content_type) == expected


def test_it_decodes_the_declared_charset():
    body = '{"message": "Ungültige Anfrage"}'.encode("latin-1")
    assert parse_error(body, "application/json; charset=latin-1").message == "Ungültige Anfrage"


def test_it_survives_undecodable_bytes_and_unknown_charsets():
    result = parse_error(b"\xff\xfe\x00\x81oops", "text/plain; charset=no-such-codec")
    assert "oops" in result.message


def test_it_caps_code_and_message():
    result = parse_error(_json({"code": "c" * 1000, "message": "m " * 1000}), "application/json")
    assert len(result.code) == CODE_CAP
    assert len(result.message) == MESSAGE_CAP


def test_it_collapses_whitespace_in_messages():
    result = parse_error(_json({"message": "line one\n\n   line\ttwo"}), "application/json")
    assert result.message == "line one line two"


def test_it_reads_only_the_first_64_kb():
    assert parse_error(b"\n" * 65536 + b"late message", "text/plain") == ParsedError()


def test_it_scrubs_before_capping_so_no_half_secret_survives():
    secret = "sk_live_" + "Ab3" * 10
    body = _json({"message": "x" * 490 + " " + secret})
    unscrubbed = parse_error(body, "application/json")
    assert unscrubbed.message.endswith(" sk_live_A")  # the cap alone would leave a fragment
    scrubbed = parse_error(body, "application/json", scrub=Redactor().text)
    assert scrubbed.message == "x" * 490 + " [redacted"


@settings(max_examples=300)
@given(body=st.binary(max_size=2000), content_type=st.none() | st.text(max_size=60))
def test_parse_error_never_raises_on_arbitrary_bytes(body, content_type):
    result = parse_error(body, content_type)
    assert len(result.code) <= CODE_CAP
    assert len(result.message) <= MESSAGE_CAP


@settings(max_examples=150)
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["error", "errors", "message", "code", "type", "title", "fault"])
                | st.text(max_size=8),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    ),
    content_type=st.sampled_from(["application/json", "application/problem+json", None]),
)
def test_parse_error_never_raises_on_odd_json_shapes(payload, content_type):
    result = parse_error(json.dumps(payload).encode(), content_type)
    assert isinstance(result.code, str)
    assert isinstance(result.message, str)


# --- parse_rate_limit ---------------------------------------------------------------------


def test_it_reads_github_rate_limit_headers():
    headers = httpx.Headers(
        {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": "1700003600",
            "X-RateLimit-Resource": "core",
        }
    )
    assert parse_rate_limit(headers, NOW) == RateLimit(5000, 4999, 1700003600.0, None, "")


def test_it_reads_x_rate_limit_headers():
    headers = {
        "x-rate-limit-limit": "900",
        "x-rate-limit-remaining": "0",
        "x-rate-limit-reset": "60",
    }
    assert parse_rate_limit(headers, NOW) == RateLimit(900, 0, NOW + 60, None, "")


def test_it_reads_ietf_draft_headers_with_delta_reset():
    headers = {
        "RateLimit-Limit": "100, 100;w=60",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "30",
    }
    assert parse_rate_limit(headers, NOW) == RateLimit(100, 7, NOW + 30, None, "")


def test_it_reads_structured_ratelimit_and_policy():
    headers = {"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'}
    assert parse_rate_limit(headers, NOW) == RateLimit(
        100, 50, NOW + 30, None, "default;q=100;w=60"
    )


def test_it_picks_the_policy_the_ratelimit_field_names():
    headers = {
        "RateLimit": '"daily";r=900;t=3600',
        "RateLimit-Policy": '"burst";q=10;w=1, "daily";q=1000;w=86400',
    }
    result = parse_rate_limit(headers, NOW)
    assert (result.limit, result.remaining, result.policy) == (1000, 900, "daily;q=1000;w=86400")


def test_it_reads_the_older_key_value_ratelimit_form():
    headers = {"RateLimit": "limit=100, remaining=50, reset=30", "RateLimit-Policy": "100;w=60"}
    assert parse_rate_limit(headers, NOW) == RateLimit(100, 50, NOW + 30, None, "100;w=60")


def test_it_reads_openai_style_durations():
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "6m0s",
    }
    assert parse_rate_limit(headers, NOW) == RateLimit(60, 59, NOW + 360, None, "")


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        ("30", NOW + 30),
        ("0", NOW),
        ("1700000500", 1700000500.0),
        ("1700000500123", 1700000500.123),
        ("2.5", NOW + 2.5),
    ],
)
def test_it_tells_epoch_resets_from_deltas(reset, expected):
    assert parse_rate_limit({"X-RateLimit-Reset": reset}, NOW).reset_at == pytest.approx(expected)


def test_it_reads_retry_after_seconds():
    assert parse_rate_limit({"Retry-After": "120"}, NOW).retry_after_s == 120.0


def test_it_reads_retry_after_http_dates_relative_to_now():
    when = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_rate_limit({"Retry-After": when}, NOW).retry_after_s == 90.0


def test_a_retry_after_date_in_the_past_means_now():
    when = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert parse_rate_limit({"Retry-After": when}, NOW).retry_after_s == 0.0


def test_it_prefers_millisecond_retry_after():
    headers = {"Retry-After": "1", "retry-after-ms": "250"}
    assert parse_rate_limit(headers, NOW).retry_after_s == 0.25


@pytest.mark.parametrize("bad", ["-1", "abc", "1e5", "", "  ", "nan", "inf", "9" * 40, "--5"])
def test_malformed_and_negative_rate_limit_values_are_ignored(bad):
    headers = {
        "X-RateLimit-Limit": bad,
        "X-RateLimit-Remaining": bad,
        "X-RateLimit-Reset": bad,
        "Retry-After": bad,
        "RateLimit": bad,
        "RateLimit-Policy": bad,
    }
    assert parse_rate_limit(headers, NOW) == RateLimit()


def test_counters_too_large_for_the_log_are_ignored():
    assert parse_rate_limit({"X-RateLimit-Limit": str(2**40)}, NOW).limit is None


def test_resets_beyond_any_plausible_date_are_ignored():
    assert parse_rate_limit({"X-RateLimit-Reset": "9" * 15}, NOW).reset_at is None


def test_no_rate_limit_headers_means_empty_result():
    assert parse_rate_limit({"Content-Type": "application/json"}, NOW) == RateLimit()


_HEADER_NAMES = st.sampled_from(
    [
        "RateLimit",
        "RateLimit-Policy",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "x-ratelimit-reset-requests",
        "Retry-After",
        "retry-after-ms",
        "Deprecation",
        "Sunset",
        "Link",
        "API-Version",
        "Stripe-Version",
    ]
)
_HEADER_VALUES = st.text(max_size=80) | st.from_regex(r'[0-9@;=,"a-z :.-]{0,40}', fullmatch=True)


@settings(max_examples=200)
@given(
    headers=st.dictionaries(_HEADER_NAMES | st.text(max_size=20), _HEADER_VALUES, max_size=8),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_header_parsers_never_raise_on_arbitrary_text(headers, now):
    rate = parse_rate_limit(headers, now)
    assert rate.limit is None or rate.limit >= 0
    assert rate.remaining is None or rate.remaining >= 0
    assert rate.retry_after_s is None or rate.retry_after_s >= 0
    deprecation = parse_deprecation(headers)
    assert len(deprecation.link) <= 500
    assert len(parse_api_version(headers)) <= 64


# --- parse_deprecation --------------------------------------------------------------------


def test_it_reads_rfc_9745_deprecation_dates():
    result = parse_deprecation({"Deprecation": "@1688169599"})
    assert result == Deprecation(True, datetime(2023, 6, 30, 23, 59, 59, tzinfo=UTC), None, "")


def test_it_reads_legacy_boolean_deprecation():
    assert parse_deprecation({"Deprecation": "true"}) == Deprecation(deprecated=True)
    assert parse_deprecation({"Deprecation": "false"}) == Deprecation()


def test_it_reads_http_date_deprecation():
    result = parse_deprecation({"deprecation": "Sun, 11 Nov 2018 23:59:59 GMT"})
    assert result.deprecated
    assert result.deprecated_at == datetime(2018, 11, 11, 23, 59, 59, tzinfo=UTC)


def test_it_reads_sunset_and_its_link():
    headers = httpx.Headers(
        {
            "Deprecation": "@1688169599",
            "Sunset": "Wed, 11 Nov 2026 23:59:59 GMT",
            "Link": '<https://api.example.com/v2>; rel="successor-version", '
            '<https://developer.example.com/deprecation>; rel="deprecation"; type="text/html"',
        }
    )
    result = parse_deprecation(headers)
    assert result.sunset_at == datetime(2026, 11, 11, 23, 59, 59, tzinfo=UTC)
    assert result.sunset_at.tzinfo is UTC
    assert result.link == "https://developer.example.com/deprecation"


def test_a_sunset_alone_counts_as_deprecated():
    result = parse_deprecation(
        {"Sunset": "Wed, 11 Nov 2026 23:59:59 GMT", "Link": "<https://x.test/s>; rel=sunset"}
    )
    assert result.deprecated
    assert result.deprecated_at is None
    assert result.link == "https://x.test/s"


def test_it_ignores_links_that_are_not_absolute_http():
    headers = {"Link": '<javascript:alert(1)>; rel="deprecation", </docs>; rel="deprecation"'}
    assert parse_deprecation(headers).link == ""


def test_it_caps_deprecation_links():
    url = "https://example.com/" + "a" * 1000
    assert len(parse_deprecation({"Link": f'<{url}>; rel="deprecation"'}).link) == 500


@pytest.mark.parametrize("bad", ["soon", "@", "@99999999999999", "@-5", "Mon, 99 Foo 2020"])
def test_malformed_deprecation_is_ignored(bad):
    assert parse_deprecation({"Deprecation": bad, "Sunset": bad}) == Deprecation()


# --- parse_api_version --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Stripe-Version": "2024-06-20"}, "2024-06-20"),
        ({"openai-version": "2020-10-01"}, "2020-10-01"),
        ({"X-API-Version": " v3 "}, "v3"),
        ({"x-github-api-version-selected": "2022-11-28"}, "2022-11-28"),
        ({"Content-Type": "text/plain"}, ""),
    ],
)
def test_it_reads_the_api_version(headers, expected):
    assert parse_api_version(headers) == expected


def test_it_caps_the_api_version():
    assert parse_api_version({"API-Version": "v" * 100}) == "v" * 64


# --- classify_status / classify_exception -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (100, "ok"),
        (200, "ok"),
        (304, "ok"),
        (399, "ok"),
        (400, "client_error"),
        (401, "client_error"),
        (429, "client_error"),
        (499, "client_error"),
        (500, "server_error"),
        (503, "server_error"),
        (599, "server_error"),
        (999, "other_error"),
        (0, "other_error"),
    ],
)
def test_it_classifies_statuses(status, expected):
    assert classify_status(status) == expected


_REQUEST = httpx.Request("GET", "https://api.example.com/")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectTimeout("t", request=_REQUEST), "timeout"),
        (httpx.ReadTimeout("t", request=_REQUEST), "timeout"),
        (httpx.WriteTimeout("t", request=_REQUEST), "timeout"),
        (httpx.PoolTimeout("t", request=_REQUEST), "timeout"),
        (httpx.ConnectError("[Errno 111] Connection refused", request=_REQUEST), "connect_error"),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "tls_error",
        ),
        (httpx.RemoteProtocolError("Server disconnected", request=_REQUEST), "protocol_error"),
        (httpx.LocalProtocolError("Illegal header"), "protocol_error"),
        (httpx.ReadError("Connection reset by peer", request=_REQUEST), "read_error"),
        (httpx.WriteError("Broken pipe", request=_REQUEST), "read_error"),
        (httpx.UnsupportedProtocol("ftp"), "other_error"),
        (httpx.TooManyRedirects("loop", request=_REQUEST), "other_error"),
        (ValueError("boom"), "other_error"),
        (TimeoutError(), "timeout"),
        (ssl.SSLError("bad record"), "tls_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_it_classifies_exceptions(exc, expected):
    assert classify_exception(exc) == expected


def test_a_connect_error_caused_by_ssl_error_is_tls():
    try:
        try:
            raise ssl.SSLError(1, "wrong version number")
        except ssl.SSLError as inner:
            raise httpx.ConnectError("handshake failed") from inner
    except httpx.ConnectError as exc:
        assert classify_exception(exc) == "tls_error"


def test_a_hostname_containing_tls_letters_is_not_tls():
    exc = httpx.ConnectError("[Errno -2] Name or service not known: atlas.example")
    assert classify_exception(exc) == "connect_error"


@contextlib.contextmanager
def _https_server(cert: trustme.LeafCert):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda *args: None  # failed handshakes are the point here
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _raw_server(reply: bytes | None):
    """A TCP server that answers every connection with ``reply`` (None: never accepts)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True) if reply is not None else None
    if thread:
        thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        if thread:
            thread.join(2)
        listener.close()


def _failure(url: str, **kwargs) -> BaseException:
    with pytest.raises(httpx.TransportError) as info:
        httpx.get(url, **kwargs)
    return info.value


def test_an_untrusted_certificate_is_a_tls_error():
    ca = trustme.CA()
    with _https_server(ca.issue_cert("127.0.0.1")) as url:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        assert httpx.get(url, verify=trusting, timeout=5).status_code == 200  # server works
        exc = _failure(url, timeout=5)
    assert isinstance(exc, httpx.ConnectError)
    assert classify_exception(exc) == "tls_error"


def test_a_server_speaking_plain_http_to_tls_is_a_tls_error():
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with _raw_server(reply) as port:
        exc = _failure(f"https://127.0.0.1:{port}/", timeout=5)
    assert classify_exception(exc) == "tls_error"


def test_a_refused_port_is_a_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exc = _failure(f"http://127.0.0.1:{port}/", timeout=5)
    assert classify_exception(exc) == "connect_error"


def test_a_server_that_never_answers_is_a_timeout():
    with _raw_server(None) as port:
        exc = _failure(f"http://127.0.0.1:{port}/", timeout=0.2)
    assert classify_exception(exc) == "timeout"


def test_a_garbage_http_reply_is_a_protocol_error():
    with _raw_server(b"NOT HTTP AT ALL\r\n\r\n") as port:
        exc = _failure(f"http://127.0.0.1:{port}/", timeout=5)
    assert classify_exception(exc) == "protocol_error"


# --- bounded work -------------------------------------------------------------------------

_ADVERSARIAL = {
    "letters": "a" * 10**6,
    "digits": "1" * 10**6,
    "slashes": "/" * 10**6,
    "segments": "/a1b2c3d4e5f6g7h8" * 60000,
    "emails": "a@" * 500000,
    "braces": "{" * 10**6,
    "dots": "a." * 500000,
    "separators": ';=,"' * 250000,
    "epochs": "@" + "9" * 10**6,
    "links": "<https://x.test/>; rel=" * 40000,
    "json": '{"error":' * 100000,
    "tags": "<a" * 500000,
    "xml": "<Code>" * 150000,
}


@pytest.mark.parametrize("name", list(_ADVERSARIAL))
def test_parsers_stay_linear_on_adversarial_input(name):
    text = _ADVERSARIAL[name]
    calls = {
        "template_path": lambda: template_path(text, ["/v1/{a}/{b}", text[:200]]),
        "parse_error": lambda: parse_error(text.encode(), "application/json"),
        "parse_error_html": lambda: parse_error(text.encode(), "text/html"),
        "parse_rate_limit": lambda: parse_rate_limit(
            {
                "RateLimit": text,
                "RateLimit-Policy": text,
                "X-RateLimit-Reset": text,
                "Retry-After": text,
            },
            NOW,
        ),
        "parse_deprecation": lambda: parse_deprecation(
            {"Deprecation": text, "Sunset": text, "Link": text}
        ),
        "parse_api_version": lambda: parse_api_version({"API-Version": text}),
    }
    for label, call in calls.items():
        started = time.perf_counter()
        call()
        # A guard against quadratic blow-up, not a speed assertion.
        assert time.perf_counter() - started < 5, label
