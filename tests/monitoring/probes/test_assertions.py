"""Tests for probe assertions: validation, the JSON path subset and response verdicts."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.models import FailureReason
from monitoring.probes.assertions import (
    BODY_SCAN_LIMIT,
    Assertions,
    HeaderAssertion,
    InvalidAssertion,
    Verdict,
    cert_days_left,
    evaluate,
    evaluate_json_path,
    parse_json_path,
    parse_status_spec,
)


def judge(assertions: Assertions | dict, **overrides) -> Verdict:
    if isinstance(assertions, dict):
        assertions = Assertions.from_dict(assertions)
    response = {
        "status": 200,
        "latency_ms": 100.0,
        "headers": {"Content-Type": "application/json"},
        "body": b'{"status": "ok"}',
        "url_scheme": "https",
        "cert_days_left": 90.0,
    }
    response.update(overrides)
    return evaluate(assertions, **response)


# --- FailureReason ---------------------------------------------------------------------------


def test_failure_reasons_are_the_strings_the_probe_model_stores():
    assert [r.value for r in FailureReason] == [
        "timeout",
        "connect",
        "tls",
        "status",
        "latency",
        "body",
        "json_path",
        "header",
        "certificate",
        "https",
        "blocked",
        "error",
    ]
    assert FailureReason("json_path") == "json_path"


# --- status specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ranges"),
    [
        ("200", ((200, 200),)),
        ("200-299", ((200, 299),)),
        ("200, 201,204", ((200, 200), (201, 201), (204, 204))),
        ("2xx", ((200, 299),)),
        ("2XX,304", ((200, 299), (304, 304))),
        ("100-599", ((100, 599),)),
    ],
)
def test_it_parses_status_specs(spec, ranges):
    assert parse_status_spec(spec) == ranges


@pytest.mark.parametrize(
    "spec", ["", "20", "600", "299-200", "2xx-3xx", "6xx", "ok", "200,", "099"]
)
def test_it_rejects_malformed_status_specs(spec):
    with pytest.raises(ValueError, match=r"not a status code|between 100 and 599"):
        parse_status_spec(spec)


def test_default_status_accepts_redirects_but_not_client_errors():
    assert Assertions().status == "200-399"
    assert judge({}, status=302).ok
    verdict = judge({}, status=404)
    assert verdict == Verdict(False, False, FailureReason.STATUS, "status 404, expected 200-399")


def test_a_list_of_statuses_accepts_only_those():
    a = Assertions(status="200,201,204")
    assert [code for code in range(100, 600) if a.status_matches(code)] == [200, 201, 204]


# --- building and validating -------------------------------------------------------------------

FULL = {
    "status": "2xx,304",
    "latency_degraded_ms": 500,
    "latency_failed_ms": 2000.5,
    "body_contains": "healthy",
    "body_regex": r"version\s+\d+",
    "json_path": ['$.status == "ok"', "$.data[0].id exists"],
    "header": {"name": "X-Api-Version", "regex": "^2"},
    "tls_min_days": 14,
    "https_only": True,
}


def test_a_full_dict_round_trips():
    a = Assertions.from_dict(FULL)
    assert a.to_dict() == FULL
    assert Assertions.from_dict(a.to_dict()) == a
    assert a.header == HeaderAssertion("X-Api-Version", "^2")
    assert json.loads(json.dumps(a.to_dict())) == FULL


def test_an_empty_or_missing_dict_means_defaults_and_nulls_are_ignored():
    assert Assertions.from_dict(None) == Assertions()
    assert Assertions.from_dict({}) == Assertions()
    assert Assertions.from_dict({"body_regex": None, "header": None}) == Assertions()
    assert Assertions().to_dict() == {"status": "200-399"}


def test_a_bare_integer_status_is_read_as_that_code():
    assert Assertions.from_dict({"status": 204}).status == "204"


def test_direct_construction_validates_too():
    with pytest.raises(InvalidAssertion, match="body_regex"):
        Assertions(body_regex="(")
    assert Assertions(json_path=["$.a"]).json_path == ("$.a",)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"status": "abc"}, "status", "not a status code"),
        ({"status": ""}, "status", "status spec"),
        ({"status": True}, "status", "status spec"),
        ({"latency_degraded_ms": -1}, "latency_degraded_ms", "above 0"),
        ({"latency_failed_ms": 0}, "latency_failed_ms", "above 0"),
        ({"latency_failed_ms": True}, "latency_failed_ms", "number"),
        ({"latency_failed_ms": "500"}, "latency_failed_ms", "number"),
        ({"latency_failed_ms": float("inf")}, "latency_failed_ms", "number"),
        (
            {"latency_degraded_ms": 500, "latency_failed_ms": 500},
            "latency_failed_ms",
            "greater than latency_degraded_ms",
        ),
        ({"body_contains": ""}, "body_contains", "non-empty"),
        ({"body_contains": 5}, "body_contains", "non-empty"),
        ({"body_regex": "("}, "body_regex", "invalid regex"),
        ({"body_regex": "a" * 501}, "body_regex", "at most 500"),
        ({"body_regex": ""}, "body_regex", "empty"),
        ({"json_path": "$.a"}, "json_path", "list"),
        ({"json_path": ["$.a", "$.b["]}, "json_path[1]", "position"),
        ({"json_path": [7]}, "json_path[0]", "string"),
        ({"json_path": ["$.a"] * 21}, "json_path", "at most 20"),
        ({"header": "X-Foo"}, "header", "name"),
        ({"header": {"regex": "x"}}, "header", "name"),
        ({"header": {"name": "Bad Name"}}, "header", "not a valid header name"),
        ({"header": {"name": "X", "regex": "["}}, "header", "invalid regex"),
        ({"header": {"name": "X", "flags": "i"}}, "header", "unknown key"),
        ({"tls_min_days": "14"}, "tls_min_days", "number"),
        ({"tls_min_days": -1}, "tls_min_days", "zero or more"),
        ({"https_only": "yes"}, "https_only", "true or false"),
        ({"max_latency": 5}, "max_latency", "not a known assertion"),
    ],
)
def test_invalid_fields_name_themselves(data, field, message):
    with pytest.raises(InvalidAssertion, match=message) as caught:
        Assertions.from_dict(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_a_non_object_is_rejected():
    with pytest.raises(InvalidAssertion, match="object"):
        Assertions.from_dict(["status"])


def test_zero_certificate_days_is_allowed():
    assert Assertions(tls_min_days=0).tls_min_days == 0


valid_dicts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["200", "2xx", "200-204,304", "100-599"]),
        "latency_degraded_ms": st.integers(1, 999),
        "latency_failed_ms": st.integers(1000, 60_000),
        "body_contains": st.text(min_size=1, max_size=50),
        "body_regex": st.sampled_from([r"\d+", "ok|fine", "^{"]),
        "json_path": st.lists(
            st.sampled_from(["$.a", '$["b c"][0] == {"x": [1, null]}', "$.n <= -2.5"]),
            max_size=3,
        ),
        "header": st.fixed_dictionaries(
            {"name": st.sampled_from(["ETag", "x-id"])},
            optional={"regex": st.sampled_from(["^W/", "."])},
        ),
        "tls_min_days": st.integers(0, 60) | st.floats(0, 60),
        "https_only": st.just(True),
    },
)


@given(valid_dicts)
def test_any_valid_dict_round_trips_through_json(data):
    a = Assertions.from_dict(data)
    stored = json.loads(json.dumps(a.to_dict()))
    assert Assertions.from_dict(stored) == a
    # An empty json_path list is the default and is left out, like every other default.
    assert stored == {"status": "200-399"} | {k: v for k, v in data.items() if v != []}


# --- JSON path: parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "steps", "op", "operand"),
    [
        ("$", (), "exists", None),
        ("$.a.b", ("a", "b"), "exists", None),
        ("$.a[0].b", ("a", 0, "b"), "exists", None),
        ('$["key with space"]', ("key with space",), "exists", None),
        ('$[ "q\\"uote" ]', ('q"uote',), "exists", None),
        ("$.items[-1]", ("items", -1), "exists", None),
        ("$.data[0].id exists", ("data", 0, "id"), "exists", None),
        ("  $.error   not exists ", ("error",), "not exists", None),
        ('$.status == "ok"', ("status",), "==", "ok"),
        ("$.status != null", ("status",), "!=", None),
        ('$.tags == ["a", {"b": false}]', ("tags",), "==", ["a", {"b": False}]),
        ("$.count >= 1", ("count",), ">=", 1),
        ("$.count>1", ("count",), ">", 1),
        ("$.ratio < 0.5", ("ratio",), "<", 0.5),
        ("$.ratio <= -1e3", ("ratio",), "<=", -1000.0),
        ('$.version ~= "^2\\\\."', ("version",), "~=", "^2\\."),
        ("$.2024.total-count", ("2024", "total-count"), "exists", None),
    ],
)
def test_it_parses_the_documented_subset(expr, steps, op, operand):
    parsed = parse_json_path(expr)
    assert (parsed.steps, parsed.op, parsed.operand) == (steps, op, operand)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("status", "expected '\\$' at position 0"),
        ("$.", "key name after '.' at position 2"),
        ("$.a[0", "expected '\\]' at position 5"),
        ("$.a[x]", "list index or a \"quoted key\" after '\\[' at position 4"),
        ('$["open]', "bad quoted key"),
        ("$x", "expected an operator .* at position 1"),
        ("$.a is 5", "expected an operator .* at position 4"),
        ("$.a exists now", "expected an operator .* at position 4"),
        ("$.a ==", "expected a value after '==' at position 6"),
        ("$.a == ok", "expected a JSON value after '==' .* at position 7"),
        ("$.a == 1 2", "unexpected text after the value at position 9"),
        ("$.a == NaN", "NaN is not valid JSON"),
        ('$.a > "1"', "'>' needs a number at position 6"),
        ("$.a >= true", "'>=' needs a number"),
        ("$.a ~= 5", "'~=' needs a regex"),
        ('$.a ~= "("', "invalid regex"),
        ("$.a ~= " + json.dumps("a" * 501), "at most 500"),
        ("$" + ".a" * 600, "at most 1000 characters"),
    ],
)
def test_parse_errors_say_what_and_where(expr, message):
    with pytest.raises(ValueError, match=message):
        parse_json_path(expr)


@given(st.text(max_size=60))
def test_parsing_arbitrary_text_raises_only_value_error(text):
    with contextlib.suppress(ValueError):
        parse_json_path(text)


# --- JSON path: evaluating ---------------------------------------------------------------------

DOC = {
    "status": "degraded",
    "count": 3,
    "flag": True,
    "one": 1,
    "data": [{"id": 7, "name": "a"}, {"id": 8}],
    "key with space": {"inner": None},
    "items": ["first", "last"],
    "version": "2.4.1",
}


@pytest.mark.parametrize(
    ("expr", "passed", "message"),
    [
        ('$.status == "ok"', False, '$.status was "degraded", expected "ok"'),
        ('$.status == "degraded"', True, '$.status was "degraded"'),
        ('$.status != "degraded"', False, '$.status was "degraded", expected anything else'),
        ('$.status != "ok"', True, '$.status was "degraded"'),
        ("$.data[0].id exists", True, "$.data[0].id exists"),
        ("$.data[1].name", False, '$.data[1].name not found: $.data[1] has no key "name"'),
        ("$.data[2]", False, "$.data[2] not found: $.data has no index 2 (length 2)"),
        ("$.data.id", False, "$.data.id not found: $.data is not an object"),
        ("$.count[0]", False, "$.count[0] not found: $.count is not a list"),
        ('$.items[-1] == "last"', True, '$.items[-1] was "last"'),
        ("$.items[-3]", False, "$.items[-3] not found: $.items has no index -3 (length 2)"),
        ('$["key with space"].inner == null', True, '$["key with space"].inner was null'),
        ("$.error not exists", True, "$.error does not exist"),
        ("$.count not exists", False, "$.count exists (it was 3), expected it not to"),
        ("$.count >= 1", True, "$.count was 3"),
        ("$.count > 3", False, "$.count was 3, expected > 3"),
        ("$.count < 3.5", True, "$.count was 3"),
        ("$.count <= 2", False, "$.count was 3, expected <= 2"),
        ("$.status >= 1", False, '$.status was "degraded", expected a number >= 1'),
        ("$.flag >= 1", False, "$.flag was true, expected a number >= 1"),
        ("$.flag == 1", False, "$.flag was true, expected 1"),
        ("$.one == true", False, "$.one was 1, expected true"),
        ("$.one == 1.0", True, "$.one was 1"),
        ('$.data[0] == {"name": "a", "id": 7}', True, '$.data[0] was {"id": 7, "name": "a"}'),
        (
            '$.data[0] == {"id": 7}',
            False,
            '$.data[0] was {"id": 7, "name": "a"}, expected {"id": 7}',
        ),
        ('$.version ~= "^2\\\\."', True, '$.version was "2.4.1"'),
        ('$.version ~= "^3"', False, '$.version was "2.4.1", expected to match "^3"'),
        ('$.count ~= "3"', False, '$.count was 3, expected a string matching "3"'),
        ("$.missing == 1", False, '$.missing not found: $ has no key "missing"'),
    ],
)
def test_it_evaluates_paths_with_short_messages(expr, passed, message):
    assert evaluate_json_path(expr, DOC) == (passed, message)


def test_long_values_are_shortened_in_messages():
    _, message = evaluate_json_path('$.text == "x"', {"text": "y" * 1000})
    assert len(message) < 200
    assert message.endswith('…, expected "x"')


json_leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_docs = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(st.text(max_size=4), children, min_size=1, max_size=3)
    ),
    max_leaves=15,
)


@given(json_docs, st.data())
def test_a_path_to_any_value_in_a_document_finds_that_value(doc, data):
    steps = []
    node = doc
    while isinstance(node, list | dict) and data.draw(st.booleans()):
        if isinstance(node, list):
            index = data.draw(st.integers(-len(node), len(node) - 1))
            steps.append(f"[{index}]")
        else:
            index = data.draw(st.sampled_from(sorted(node)))
            steps.append(f"[{json.dumps(index)}]")
        node = node[index]
    expr = "$" + "".join(steps)
    assert evaluate_json_path(f"{expr} == {json.dumps(node)}", doc)[0]
    assert not evaluate_json_path(f"{expr} != {json.dumps(node)}", doc)[0]
    assert evaluate_json_path(f"{expr} exists", doc)[0]


# --- evaluate: order and outcomes ---------------------------------------------------------------


def test_a_response_meeting_everything_is_ok_and_not_degraded():
    a = dict(FULL, json_path=['$.status == "ok"'], body_contains="ok", body_regex='"ok"')
    verdict = judge(
        a,
        headers={"x-api-version": "2.1"},
        latency_ms=120.0,
        cert_days_left=40.0,
        status=304,
    )
    assert verdict == Verdict(ok=True, degraded=False, reason=None, message="")


def test_https_is_checked_before_status():
    verdict = judge({"https_only": True}, url_scheme="http", status=500)
    assert verdict.reason is FailureReason.HTTPS
    assert verdict.message == "URL scheme is http, https is required"


def test_https_only_accepts_https_in_any_case():
    assert judge({"https_only": True}, url_scheme="HTTPS").ok


def test_status_is_checked_before_latency():
    verdict = judge({"latency_failed_ms": 100}, status=503, latency_ms=5000)
    assert (verdict.ok, verdict.reason) == (False, FailureReason.STATUS)
    assert verdict.message == "status 503, expected 200-399"


def test_latency_above_the_failed_limit_fails():
    verdict = judge({"latency_failed_ms": 1000}, latency_ms=1500.4)
    assert verdict == Verdict(
        False, False, FailureReason.LATENCY, "latency 1500 ms above the 1000 ms limit"
    )
    assert judge({"latency_failed_ms": 1000}, latency_ms=1000).ok


def test_latency_between_thresholds_is_ok_but_degraded():
    a = {"latency_degraded_ms": 500, "latency_failed_ms": 1000}
    verdict = judge(a, latency_ms=750)
    assert verdict == Verdict(
        True, True, None, "latency 750 ms above the 500 ms degraded threshold"
    )
    assert judge(a, latency_ms=500) == Verdict(True, False, None, "")


def test_a_later_failure_beats_being_degraded():
    verdict = judge({"latency_degraded_ms": 500, "body_contains": "nope"}, latency_ms=750)
    assert (verdict.ok, verdict.degraded, verdict.reason) == (False, False, FailureReason.BODY)


def test_latency_failure_comes_before_header():
    a = {"latency_failed_ms": 100, "header": {"name": "X-Missing"}}
    assert judge(a, latency_ms=200).reason is FailureReason.LATENCY


def test_a_missing_header_fails_and_names_are_case_insensitive():
    a = {"header": {"name": "X-Request-Id"}}
    assert judge(a, headers={"x-request-id": "abc"}).ok
    verdict = judge(a, headers={"X-Other": "1"})
    assert verdict == Verdict(False, False, FailureReason.HEADER, "header X-Request-Id is missing")


def test_a_header_must_match_its_regex():
    a = {"header": {"name": "X-Api-Version", "regex": r"^2\."}}
    assert judge(a, headers={"X-API-VERSION": "2.3"}).ok
    verdict = judge(a, headers={"X-Api-Version": "1.9"})
    assert verdict.reason is FailureReason.HEADER
    assert verdict.message == 'header X-Api-Version was "1.9", expected to match "^2\\\\."'


def test_header_is_checked_before_body():
    a = {"header": {"name": "X-Missing"}, "body_contains": "absent"}
    assert judge(a).reason is FailureReason.HEADER


def test_body_must_contain_the_text():
    assert judge({"body_contains": "ok"}).ok
    verdict = judge({"body_contains": "healthy"})
    assert verdict == Verdict(False, False, FailureReason.BODY, 'body does not contain "healthy"')


def test_body_contains_matches_non_ascii_text_as_utf8():
    assert judge({"body_contains": "café"}, body="le café".encode()).ok


def test_body_regex_must_match():
    assert judge({"body_regex": r'"status":\s*"ok"'}).ok
    verdict = judge({"body_regex": r"^\d+$"})
    assert verdict == Verdict(False, False, FailureReason.BODY, 'body does not match "^\\\\d+$"')


def test_body_regex_only_searches_the_first_256_kb():
    padding = b"x" * (BODY_SCAN_LIMIT - 10)
    assert judge({"body_regex": "MARK"}, body=padding + b"MARK").ok
    verdict = judge({"body_regex": "MARK"}, body=padding + b"x" * 20 + b"MARK")
    assert verdict.reason is FailureReason.BODY
    assert verdict.message == 'first 256 KB of the body does not match "MARK"'


def test_body_regex_tolerates_invalid_utf8():
    assert judge({"body_regex": "ok"}, body=b"\xff\xfe ok").ok


def test_body_is_checked_before_json_path():
    a = {"body_contains": "absent", "json_path": ['$.status == "down"']}
    assert judge(a).reason is FailureReason.BODY


def test_the_first_failing_json_path_is_reported():
    a = {"json_path": ['$.status == "ok"', "$.count >= 1", "$.other exists"]}
    verdict = judge(a, body=b'{"status": "ok", "count": 0}')
    assert verdict == Verdict(False, False, FailureReason.JSON_PATH, "$.count was 0, expected >= 1")


@pytest.mark.parametrize("body", [b"<html>", b"", b"\xff", b"[" * 100_000])
def test_a_body_that_is_not_json_fails_the_json_path_check(body):
    verdict = judge({"json_path": ["$"]}, body=body)
    assert verdict == Verdict(False, False, FailureReason.JSON_PATH, "body is not valid JSON")


def test_json_path_is_checked_before_the_certificate():
    a = {"json_path": ['$.status == "down"'], "tls_min_days": 14}
    assert judge(a, cert_days_left=1.0).reason is FailureReason.JSON_PATH


def test_a_certificate_inside_the_threshold_fails():
    verdict = judge({"tls_min_days": 14}, cert_days_left=4.2)
    assert verdict == Verdict(
        False, False, FailureReason.CERTIFICATE, "certificate expires in 4.2 days (threshold 14)"
    )
    assert judge({"tls_min_days": 14}, cert_days_left=14.0).ok


def test_an_expired_certificate_says_so():
    verdict = judge({"tls_min_days": 7.5}, cert_days_left=-2.0)
    assert verdict.message == "certificate expired 2.0 days ago (threshold 7.5)"


def test_an_unknown_certificate_is_not_a_failure():
    assert judge({"tls_min_days": 14}, cert_days_left=None, url_scheme="http").ok


def test_without_a_threshold_a_near_expiry_is_ignored():
    assert judge({}, cert_days_left=0.5).ok


# --- certificate dates ---------------------------------------------------------------------------


def test_it_reads_getpeercert_not_after():
    now = datetime(2027, 5, 28, 7, 12, tzinfo=UTC)
    assert cert_days_left("Jun  1 12:00:00 2027 GMT", now) == pytest.approx(4.2)
    assert cert_days_left("Jun 11 12:00:00 2027 GMT", now) == pytest.approx(14.2)


def test_it_goes_negative_after_expiry_and_takes_naive_times_as_utc():
    expired = datetime(2027, 6, 1, 12, 0)
    assert cert_days_left(expired, datetime(2027, 6, 3, 12, 0)) == pytest.approx(-2.0)
    aware = datetime(2027, 6, 1, 14, 0, tzinfo=UTC)
    assert cert_days_left(aware, datetime(2027, 6, 1, 2, 0)) == pytest.approx(0.5)
    plus_two = timezone(timedelta(hours=2))
    assert cert_days_left(aware, datetime(2027, 6, 1, 14, 0, tzinfo=plus_two)) == pytest.approx(
        2 / 24
    )


def test_a_malformed_not_after_raises_value_error():
    with pytest.raises(ValueError):
        cert_days_left("2027-06-01", datetime(2027, 1, 1, tzinfo=UTC))
