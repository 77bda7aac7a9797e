"""Every screen, every GET parameter and every form field, with hostile values: never a 5xx."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from dashboard.forms import AcknowledgeForm, LogFilterForm, RangeForm, SilenceForm
from monitoring.alerts.forms import AlertRuleForm
from monitoring.probes.forms import ProbeForm
from tests.dashboard.test_access import SCREENS, _object_urls

HOSTILE = [
    "",
    "-1",
    "99999999999999999999",
    "1e400",
    "NaN",
    "Infinity",
    "0001-01-01T00:00",
    "9999-12-31T23:59",
    "2026-02-30T25:61",
    "a\x00b",
    "%ff%fe",
    "x" * 10_000,
    "[" * 2000 + "]" * 2000,
    json.dumps({"window_min": 1e308}).replace("1e+308", "1e400"),
    "<script>alert(1)</script>",
]

# Every parameter any screen reads: the filter forms' fields, and the pager and search ones.
PARAMS = sorted(
    {*RangeForm.base_fields, *LogFilterForm.base_fields, "page", "q", "env", "cursor", "state"}
)
FORM_FIELDS = {
    "alert_rule_new": sorted(AlertRuleForm.base_fields),
}
POST_FORMS = {
    "alert_acknowledge": sorted(AcknowledgeForm.base_fields),
    "alert_silence": sorted(SilenceForm.base_fields),
}


@pytest.fixture
def signed_in(client, admin_user):
    client.force_login(admin_user)
    return client


def _no_5xx(response, what):
    assert response.status_code < 500, what
    # An export streams: read it through, so an error half-way still fails the walk.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"Traceback" not in body, what


@pytest.mark.parametrize("name", SCREENS)
def test_no_get_parameter_of_a_screen_gives_a_5xx(signed_in, integration, name):
    url = reverse(name)
    for param in PARAMS:
        for value in HOSTILE:
            _no_5xx(signed_in.get(url, {param: value}), (name, param, value[:40]))
    # Bytes that are not UTF-8 at all, straight in the query string.
    _no_5xx(signed_in.get(url + "?range=%ff&since=%c3%28&until=%00"), (name, "raw bytes"))


def test_no_get_parameter_of_an_object_screen_gives_a_5xx(
    signed_in, integration, firing_alert, probe, auth_rule
):
    for name, url in _object_urls(integration, firing_alert, probe, auth_rule).items():
        for param in PARAMS:
            for value in HOSTILE:
                _no_5xx(signed_in.get(url, {param: value}), (name, param, value[:40]))


@pytest.mark.parametrize("field", FORM_FIELDS["alert_rule_new"])
def test_no_rule_form_field_gives_a_5xx(signed_in, integration, field):
    url = reverse("alert_rule_new")
    base = {"name": "r", "kind": "error_rate", "params": "{}"}
    for value in HOSTILE:
        _no_5xx(signed_in.post(url, {**base, field: value}), (field, value[:40]))


def test_no_action_form_field_gives_a_5xx(signed_in, firing_alert):
    for name, fields in POST_FORMS.items():
        url = reverse(name, args=[firing_alert.pk])
        for field in fields:
            for value in HOSTILE:
                _no_5xx(signed_in.post(url, {field: value}), (name, field, value[:40]))


@pytest.mark.parametrize("field", sorted(ProbeForm.base_fields))
def test_no_probe_form_field_gives_a_5xx_in_the_admin(signed_in, integration, field):
    url = reverse("admin:monitoring_probe_add")
    base = {
        "integration": integration.pk, "name": "p", "method": "GET",
        "url": "https://api.example.com/", "interval_s": 60, "timeout_s": 5,
        "fail_threshold": 2, "recover_threshold": 2, "headers": "{}", "assertions": "{}",
    }  # fmt: skip
    for value in HOSTILE:
        _no_5xx(signed_in.post(url, {**base, field: value}), (field, value[:40]))
