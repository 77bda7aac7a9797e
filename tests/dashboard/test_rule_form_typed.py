"""The rule form's typed fields: one per parameter of each kind, from the registry, no JSON."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from monitoring.alerts import rules
from monitoring.alerts.forms import TYPED_MARKER, TypedRuleForm, param_field_name
from monitoring.models import AlertRule, AuditLog, Channel, Route, RuleKind
from tests.dashboard.test_fuzz_screens import HOSTILE


def _text(response) -> str:
    return html.unescape(response.content.decode())


def typed(kind: str = RuleKind.ERROR_RATE, **params) -> dict:
    data = {
        TYPED_MARKER: "1", "name": "Errors", "kind": kind, "integration": "",
        "recipients": "ops@example.com", "repeat_interval_s": "3600", "recovery_s": "300",
        "enabled": "on", "severity": "warning",
    }  # fmt: skip
    data |= {param_field_name(kind, name): value for name, value in params.items()}
    return data


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def test_every_parameter_of_every_kind_has_a_field(db):
    form = TypedRuleForm()
    for kind, cls in rules.KINDS.items():
        for name, p in cls.params.items():
            field = form.fields[param_field_name(kind, name)]
            assert field.initial == p.default
            assert p.help[:1].upper() + p.help[1:] in field.help_text


def test_the_page_shows_typed_fields_and_no_json_textarea(admin, django_assert_max_num_queries):
    with django_assert_max_num_queries(10):
        response = admin.get(reverse("alert_rule_new"))
    body = _text(response)
    assert response.status_code == 200
    assert 'name="error_rate-threshold_pct"' in body
    assert 'type="number"' in body
    assert 'name="error_rate-include_4xx"' in body and 'type="checkbox"' in body
    assert '<textarea name="params"' not in body
    assert 'name="severity"' in body and 'name="escalation_minutes"' in body


def test_typed_values_are_saved_as_the_kinds_parameters_and_audited(admin):
    response = admin.post(
        reverse("alert_rule_new"),
        typed(threshold_pct="2.5", window_min="10", min_volume="", include_4xx="on"),
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert rule.params == {"threshold_pct": 2.5, "window_min": 10, "include_4xx": True}
    assert rules.kind_of(rule).p["min_volume"] == 20  # left empty: the default
    entry = AuditLog.objects.get(action="create", target_id=str(rule.pk))
    assert entry.after["params"] == rule.params


def test_only_the_chosen_kinds_fields_count(admin):
    data = typed(RuleKind.LATENCY, threshold_ms="900")
    data[param_field_name(RuleKind.ERROR_RATE, "threshold_pct")] = "9999"  # another kind's
    assert admin.post(reverse("alert_rule_new"), data).status_code == 302
    assert AlertRule.objects.get().params == {"threshold_ms": 900}


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"threshold_pct": "500"}, "threshold_pct",
         "threshold_pct must be between 0.01 and 100, got 500."),
        ({"window_min": "2.5"}, "window_min", "window_min must be a whole number, got 2.5."),
        ({"window_min": "abc"}, "window_min", "window_min must be a number, got 'abc'."),
        ({"min_volume": "1e400"}, "min_volume", "min_volume must be a finite number, got inf."),
    ],
)  # fmt: skip
def test_bad_values_get_the_kinds_own_messages_beside_their_field(admin, params, field, message):
    response = admin.post(reverse("alert_rule_new"), typed(**params))
    assert response.status_code == 400
    body = _text(response)
    assert message in body
    form = response.context["form"]
    assert form.errors[param_field_name(RuleKind.ERROR_RATE, field)] == [message]
    assert not AlertRule.objects.exists()


def test_the_same_message_as_the_json_form_gives(admin):
    with pytest.raises(Exception) as caught:
        rules.validate_params(RuleKind.ERROR_RATE, {"threshold_pct": 500})
    response = admin.post(reverse("alert_rule_new"), typed(threshold_pct="500"))
    assert caught.value.messages[0] in _text(response)


def test_editing_a_rule_shows_its_values_and_audits_the_change(admin, auth_rule):
    auth_rule.params = {"min_count": 9}
    auth_rule.save()
    url = reverse("alert_rule", args=[auth_rule.pk])
    body = _text(admin.get(url))
    assert 'name="auth_spike-min_count" value="9"' in body
    data = typed(RuleKind.AUTH_SPIKE, min_count="12", factor="3.0", window_min="5")
    data |= {"name": auth_rule.name, "severity": "critical"}
    assert admin.post(url, data).status_code == 302
    auth_rule.refresh_from_db()
    assert auth_rule.params == {"min_count": 12}  # values equal to the default are left out
    assert auth_rule.severity == "critical"
    entry = AuditLog.objects.get(action="update", target_id=str(auth_rule.pk))
    assert entry.before["params"] == {"min_count": 9}
    assert entry.after["severity"] == "critical"


def test_escalation_needs_a_route_and_minutes_together(admin):
    route = Route.objects.create(name="Escalate to on-call")
    response = admin.post(reverse("alert_rule_new"), typed() | {"escalation_minutes": "30"})
    assert response.status_code == 400
    assert "Escalation needs both a route and the minutes" in _text(response)
    data = typed() | {"escalation_minutes": "30", "escalation_route": str(route.pk)}
    assert admin.post(reverse("alert_rule_new"), data).status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.escalation_route, rule.escalation_minutes) == (route, 30)


def test_channels_chosen_on_the_rule_become_its_own_route_audited(admin):
    slack = Channel.objects.create(kind="email", name="Ops mail", settings={"to": "o@example.com"})
    assert (
        admin.post(reverse("alert_rule_new"), typed() | {"channels": [slack.pk]}).status_code == 302
    )
    rule = AlertRule.objects.get()
    route = Route.objects.get(rule=rule)
    assert list(route.channels.all()) == [slack]
    assert AuditLog.objects.filter(action="create", target_type="monitoring.Route").exists()
    # Unticked: the route goes, audited.
    url = reverse("alert_rule", args=[rule.pk])
    page = _text(admin.get(url))
    assert f'value="{slack.pk}" selected' in page or f'value="{slack.pk}" checked' in page
    assert admin.post(url, typed()).status_code == 302
    assert not Route.objects.filter(rule=rule).exists()
    assert AuditLog.objects.filter(action="delete", target_type="monitoring.Route").exists()


def test_a_post_without_the_marker_still_takes_json_parameters(admin):
    data = typed() | {"params": '{"threshold_pct": 3}'}
    del data[TYPED_MARKER]
    assert admin.post(reverse("alert_rule_new"), data).status_code == 302
    assert AlertRule.objects.get().params == {"threshold_pct": 3}


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_edit_rules(client, request, role, auth_rule):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("alert_rule_new")).status_code == 403
    assert client.post(reverse("alert_rule_new"), typed()).status_code == 403
    assert client.post(reverse("alert_rule", args=[auth_rule.pk]), typed()).status_code == 403
    assert AlertRule.objects.count() == 1


def test_anonymous_visitors_are_sent_to_sign_in(client, db):
    response = client.post(reverse("alert_rule_new"), typed())
    assert response["Location"].startswith(reverse("login"))


def test_no_typed_field_gives_a_5xx(admin):
    # Error rate has a whole-number, a decimal and a true/false parameter: every hostile value
    # there; every other kind's fields get the values that broke number parsing elsewhere.
    kind = RuleKind.ERROR_RATE
    fields = [param_field_name(kind, n) for n in rules.KINDS[kind].params]
    for field in [*fields, "severity", "escalation_minutes", "escalation_route", "channels"]:
        for value in HOSTILE:
            response = admin.post(reverse("alert_rule_new"), typed(kind) | {field: value})
            assert response.status_code in (302, 400), (kind, field, value[:40])
    for kind, cls in rules.KINDS.items():
        for name in cls.params:
            for value in ("99999999999999999999", "1e400", "NaN"):
                data = typed(kind) | {param_field_name(kind, name): value}
                response = admin.post(reverse("alert_rule_new"), data)
                assert response.status_code in (302, 400), (kind, name, value)
