"""The rule form, in the admin and on its own: parameters, recipients and scope checked per kind."""

from __future__ import annotations

from django.urls import reverse

from monitoring.alerts import rules
from monitoring.alerts.forms import AlertRuleForm
from monitoring.models import AlertRule, AuditLog
from tests.monitoring.alerts.alertkit import make_integration


def test_the_rule_admin_rejects_bad_params_with_a_clear_error_and_audits_good_ones(
    client, superuser
):
    client.force_login(superuser)
    url = reverse("admin:monitoring_alertrule_add")
    form = {
        "name": "Spike", "kind": "auth_spike", "integration": "", "recipients": "ops@example.com",
        "repeat_interval_s": "14400", "recovery_s": "300", "enabled": "on",
        "params": '{"factor": 0.5}',
    }  # fmt: skip
    response = client.post(url, form)
    assert response.status_code == 200
    assert b"factor must be between 1 and 1000000, got 0.5." in response.content
    response = client.post(
        url, {**form, "params": '{"factor": 4}', "recipients": "ops@, x@example.org"}
    )
    assert b"Not an e-mail address: ops@." in response.content
    response = client.post(
        url,
        {**form, "kind": "signin_failures", "params": "{}"}
        | {"integration": str(make_integration("Paubox").pk)},
    )
    assert b"leave the integration empty" in response.content
    response = client.post(url, {**form, "params": '{"factor": 4}'})
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert rule.params == {"factor": 4}
    assert AuditLog.objects.filter(action="create", target_id=str(rule.pk)).exists()


def test_the_form_lists_every_kind_and_checks_its_scope_through_the_registry(db):
    help_text = AlertRuleForm().fields["params"].help_text
    for kind, cls in rules.KINDS.items():
        assert f"{kind}: {cls.help()}" in help_text
    data = {
        "name": "Sign-ins", "kind": "signin_failures", "params": "{}", "recipients": "",
        "repeat_interval_s": "14400", "recovery_s": "300", "enabled": "on",
    }  # fmt: skip
    form = AlertRuleForm({**data, "integration": str(make_integration("Paubox").pk)})
    assert not form.is_valid()
    assert form.errors["integration"] == [
        "Failed sign-ins concern Upstream itself: leave the integration empty."
    ]
    form = AlertRuleForm({**data, "integration": ""})
    assert form.is_valid(), form.errors
