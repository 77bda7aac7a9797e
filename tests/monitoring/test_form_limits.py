"""Hostile JSON and numbers in the rule and probe forms: a form error every time, never a 500."""

from __future__ import annotations

import html
import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from monitoring.alerts import rules
from monitoring.formfields import MAX_JSON_CHARS, MAX_JSON_DEPTH, BoundedJSONField, nesting_depth
from monitoring.models import AlertRule, Probe

DEEP = '{"a": ' * 2000 + "1" + "}" * 2000
DEEP_LIST = "[" * 2000 + "]" * 2000

# (raw JSON text, words of the error it must get), each with a short test id.
HOSTILE_JSON = [
    pytest.param('{"window_min": 1e400}', "Numbers must be finite: 1e400", id="1e400"),
    pytest.param('{"window_min": -1e400}', "Numbers must be finite: -1e400", id="-1e400"),
    pytest.param('{"window_min": Infinity}', "Numbers must be finite: Infinity", id="inf"),
    pytest.param('{"window_min": -Infinity}', "Numbers must be finite: -Infinity", id="-inf"),
    pytest.param('{"window_min": NaN}', "Numbers must be finite: NaN", id="nan"),
    pytest.param("NaN", "Numbers must be finite: NaN", id="bare-nan"),
    pytest.param('{"window_min": ' + "9" * 5000 + "}", "too large", id="5000-digits"),
    pytest.param(DEEP, f"nested at most {MAX_JSON_DEPTH} levels", id="deep-object"),
    pytest.param(DEEP_LIST, f"nested at most {MAX_JSON_DEPTH} levels", id="deep-list"),
    pytest.param(
        '{"a": "' + "x" * MAX_JSON_CHARS + '"}', f"At most {MAX_JSON_CHARS} characters", id="long"
    ),
    pytest.param('{"window_min": 5', "Enter a valid JSON", id="truncated"),
]


# --- the field ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ("1", 0),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{"}', 1),
        ('{"a": "\\"[[[["}', 1),
        ('{"a\\\\": [[]]}', 3),
        ('["\\\\", ["x"]]', 2),
        (DEEP, 2000),
    ],
    ids=[
        "empty",
        "scalar",
        "mixed",
        "in-string",
        "escaped-quote",
        "escaped-backslash",
        "backslash-then-list",
        "deep",
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text, depth):
    assert nesting_depth(text) == depth
    if depth < 100:
        assert depth == _python_depth(json.loads(text))


def _python_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_python_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_python_depth, value), default=0)
    return 0


@pytest.mark.parametrize(("text", "words"), HOSTILE_JSON)
def test_the_field_refuses_with_a_validation_error_and_rerenders(text, words):
    field = BoundedJSONField(required=False)
    with pytest.raises(ValidationError) as caught:
        field.clean(text)
    assert words in " ".join(caught.value.messages)
    # Showing the bound form again must not parse its way into the same trouble.
    assert field.prepare_value(field.bound_data(text, None)) == text


def test_the_field_still_accepts_ordinary_json():
    field = BoundedJSONField(required=False)
    assert field.clean('{"window_min": 15, "factor": 2.5, "x": [true, null, "∞"]}') == {
        "window_min": 15, "factor": 2.5, "x": [True, None, "∞"],
    }  # fmt: skip
    assert field.clean("") is None
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert nesting_depth(nested) == MAX_JSON_DEPTH and field.clean(nested) is not None


# --- finding 7 at its depth: the kinds' parameter validation -----------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("inf"), "must be a finite number, got inf"),
        (float("-inf"), "must be a finite number, got -inf"),
        (float("nan"), "must be a finite number, got nan"),
        (10**400, "between 1 and 1440, got a number that large"),
        (-(10**5000), "between 1 and 1440, got a number that large"),
        (2**70, "between 1 and 1440, got 1.18e+21"),
        (1e300, "between 1 and 1440, got 1e+300"),
        ("x" * 10_000, "must be a number, got 'xxx"),
    ],
    ids=["inf", "-inf", "nan", "10**400", "-10**5000", "2**70", "1e300", "long-text"],
)
def test_rule_parameters_refuse_non_finite_and_out_of_range_numbers(value, words):
    for kind in ("traffic_stopped", "deprecation"):  # integer windows
        with pytest.raises(ValidationError) as caught:
            rules.validate_params(kind, {"window_min": value})
        (message,) = caught.value.messages
        assert words in message and len(message) < 200
    with pytest.raises(ValidationError) as caught:
        rules.validate_params("error_rate", {"threshold_pct": value})  # a float parameter
    assert "threshold_pct" in caught.value.messages[0]


# --- through the dashboard and the admin -------------------------------------------------------


def rule_form(params: str) -> dict:
    return {
        "name": "Hostile", "kind": "traffic_stopped", "integration": "", "params": params,
        "recipients": "ops@example.com", "repeat_interval_s": "3600", "recovery_s": "300",
        "enabled": "on",
    }  # fmt: skip


@pytest.mark.parametrize(("text", "words"), HOSTILE_JSON)
def test_the_dashboard_rule_form_answers_400_with_the_reason(client, admin_user, text, words):
    client.force_login(admin_user)
    response = client.post(reverse("alert_rule_new"), rule_form(text))
    assert response.status_code == 400
    assert words in html.unescape(response.content.decode())
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(("text", "words"), HOSTILE_JSON)
def test_the_rule_admin_answers_with_a_form_error(client, admin_user, text, words):
    client.force_login(admin_user)
    response = client.post(reverse("admin:monitoring_alertrule_add"), rule_form(text))
    assert response.status_code == 200
    assert words in html.unescape(response.content.decode())
    assert not AlertRule.objects.exists()


def test_an_editable_rule_still_saves_after_the_limits(client, admin_user):
    client.force_login(admin_user)
    response = client.post(reverse("alert_rule_new"), rule_form('{"window_min": 30}'))
    assert response.status_code == 302
    assert AlertRule.objects.get().params == {"window_min": 30}


def probe_form(integration, **changes) -> dict:
    data = {
        "integration": integration.pk, "name": "Hostile", "method": "GET",
        "url": "https://93.184.215.14/health", "headers": "{}", "body": "", "interval_s": 60,
        "timeout_s": 10, "assertions": "{}", "fail_threshold": 2, "recover_threshold": 2,
        "enabled": "on",
    }  # fmt: skip
    return data | changes


@pytest.mark.parametrize("field", ["headers", "assertions"])
@pytest.mark.parametrize(("text", "words"), HOSTILE_JSON)
def test_the_probe_admin_answers_with_a_form_error(
    client, admin_user, integration, field, text, words
):
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:monitoring_probe_add"), probe_form(integration, **{field: text})
    )
    assert response.status_code == 200
    assert words in html.unescape(response.content.decode())
    assert not Probe.objects.exists()
