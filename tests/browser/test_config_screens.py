"""Configuration screens in a real Chromium: an integration from a preset, a rule through typed
fields, one's own profile; and a first call drawn as a point."""

from __future__ import annotations

import pytest
from django.utils import timezone

from monitoring import presets
from monitoring.models import AlertRule, AuditLog, Integration, NotificationPreference, RuleKind
from tests.dashboard.conftest import make_log, record

pytestmark = pytest.mark.browser


def test_an_admin_creates_an_integration_from_a_preset(session, admin_user):
    session.sign_in_as(admin_user)
    page = session.page
    session.go("/")
    page.click("nav >> text=Add integration")
    page.wait_for_url(session.base_url + "/integrations/new/")
    # Choosing a preset swaps the form in place (HTMX), filled from the registry.
    page.select_option("#id_preset", "paubox")
    page.wait_for_function(
        "() => document.querySelector('#id_base_url').value.includes('paubox.net')"
    )
    assert "?preset=paubox" in page.url
    preset = presets.get("paubox")
    assert preset.path_templates(preset.base_url)[0] in page.input_value("#id_path_templates")
    page.fill("#id_name", "Paubox")
    page.fill("#id_base_url", "https://api.paubox.net/v1/acme")
    page.fill("#id_owner_email", "mail-team@example.com")
    page.click("button:has-text('Create integration')")
    page.wait_for_load_state("networkidle")
    created = Integration.objects.get(slug="paubox")
    assert page.url == f"{session.base_url}/integrations/{created.pk}/"
    assert created.owner_email == "mail-team@example.com"
    assert set(preset.path_templates(created.base_url)) <= set(created.explicit_templates())
    assert created.preset == "paubox" and created.probes.exists()
    assert AuditLog.objects.filter(action="create", target_id=str(created.pk)).exists()
    # The editor's live preview follows the templates as they are typed.
    record([make_log(created, timezone.now(), path="/v1/acme/bulk_messages", method="POST")])
    page.click("text=Edit integration")
    page.wait_for_load_state("networkidle")
    assert page.locator("#preview strong:has-text('/v1/{account}/bulk_messages')").count() == 0
    page.fill("#id_path_templates", "/v1/{account}/bulk_messages")
    page.wait_for_selector("#preview strong:has-text('/v1/{account}/bulk_messages')")
    assert "Not matching any recent call" not in page.inner_text("#preview")
    session.screenshot("integration-editor")


def test_an_admin_edits_a_rule_through_typed_fields(session, admin_user):
    rule = AlertRule.objects.create(name="Errors", kind=RuleKind.ERROR_RATE)
    session.sign_in_as(admin_user)
    page = session.page
    session.go(f"/alerts/rules/{rule.pk}/")
    # Only the chosen kind's parameters show.
    assert page.is_visible("#id_error_rate-threshold_pct")
    assert not page.is_visible("#id_latency-threshold_ms")
    page.select_option("#id_kind", "latency")
    assert page.is_visible("#id_latency-threshold_ms")
    assert not page.is_visible("#id_error_rate-threshold_pct")
    page.fill("#id_latency-threshold_ms", "750")
    page.fill("#id_latency-percentile", "99")
    page.select_option("#id_severity", "critical")
    page.click("button:has-text('Save')")
    page.wait_for_url(session.base_url + "/alerts/rules/")
    rule.refresh_from_db()
    assert rule.kind == "latency"
    assert rule.params == {"threshold_ms": 750, "percentile": 99}
    assert rule.severity == "critical"
    # A bad value comes back beside its field, in the kind's own words.
    session.go(f"/alerts/rules/{rule.pk}/")
    page.fill("#id_latency-percentile", "0")
    # The browser's own min/max check would stop it first: the server must say it too.
    page.eval_on_selector("form.rule-form", "f => { f.noValidate = true; }")
    session.expected.append("status of 400")
    page.click("button:has-text('Save')")
    page.wait_for_load_state("networkidle")
    assert "percentile must be between 1 and 100, got 0." in page.inner_text(".field.invalid")
    session.screenshot("rule-typed-fields")


def test_a_viewer_sets_email_and_preferences_in_the_profile(session, viewer, integration):
    session.sign_in_as(viewer)
    page = session.page
    session.go("/")
    page.click(".who >> text=vera")
    page.wait_for_url(session.base_url + "/profile/")
    page.fill("#id_email", "vera@example.com")
    page.check("#id_by_email")
    page.select_option("#id_integrations", str(integration.pk))
    page.check("input[name=severities][value=critical]")
    page.select_option("#id_time_zone", "Europe/Paris")
    page.click("button:has-text('Save')")
    page.wait_for_load_state("networkidle")
    assert "Times show in Europe/Paris" in page.inner_text("main")
    viewer.refresh_from_db()
    assert viewer.email == "vera@example.com"
    pref = NotificationPreference.objects.get(user=viewer)
    assert pref.severities == ["critical"] and list(pref.integrations.all()) == [integration]
    session.screenshot("profile")


def test_a_first_call_draws_its_latency_as_a_point(session, viewer, integration):
    record([make_log(integration, timezone.now(), latency_ms=180.0)])
    session.sign_in_as(viewer)
    page = session.page
    session.go(f"/integrations/{integration.pk}/?range=24h")
    drawn = page.evaluate(
        """() => { const chart = Chart.getChart(document.querySelector('#box-latency canvas'));
                   const meta = chart.getDatasetMeta(0);
                   const values = chart.data.datasets[0].data;
                   return meta.data.map((p, i) => [values[i], p.options.radius])
                                   .filter(([value]) => value !== null); }"""
    )
    assert len(drawn) == 1  # one period with data
    assert drawn[0][1] == 3  # drawn as a point, not an invisible one-point line
