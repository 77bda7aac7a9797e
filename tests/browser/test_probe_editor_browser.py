"""In Chromium: build a probe with two assertions, test-run it (HTMX) against a loopback
server, save it, run it; and the onboarding checklist ticks as steps get done."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.models import Integration, Probe, ProbeResult
from tests.monitoring.probes.probe_server import ProbeTarget

pytestmark = pytest.mark.browser


@pytest.fixture
def target(settings):
    with ProbeTarget() as server:
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [server.hostport]}
        yield server


def test_build_test_run_save_and_run_a_probe(session, admin_user, target):
    paubox = Integration.objects.create(name="Paubox", slug="paubox", environment="production")
    session.sign_in_as(admin_user)
    page = session.page
    session.go(f"/probes/new/?integration={paubox.pk}")
    page.fill("#id_name", "status json")
    page.fill("#id_url", f"{target.url}/json")
    page.fill("#id_status", "200")
    page.fill("#id_jp0_path", "$.status")
    page.select_option("#id_jp0_op", "==")
    page.fill("#id_jp0_value", "ok")
    page.fill("#id_latency_failed_ms", "5000")
    page.click("button[value=test]")
    page.wait_for_selector("#probe-test h2:has-text('passed')")
    assert not Probe.objects.exists()  # a test run saves nothing
    assert target.paths() == ["/json"]
    session.screenshot("probe-editor-test-run")
    page.click("button[value=save]")
    page.wait_for_url("**/probes/*/")
    probe = Probe.objects.get()
    assert probe.assertions["json_path"] == ['$.status == "ok"']
    page.click("button:has-text('Run now')")
    page.wait_for_load_state("networkidle")
    assert ProbeResult.objects.filter(probe=probe, ok=True).exists()


def test_the_onboarding_checklist_ticks_as_steps_get_done(session, admin_user):
    admin_user.email = "me@example.com"
    admin_user.save()
    session.sign_in_as(admin_user)
    page = session.page
    session.go("/")
    assert page.locator("#onboarding li.done").count() == 1  # the e-mail
    Integration.objects.create(name="Stripe", slug="stripe", environment="production")
    session.go("/")
    assert page.locator('#onboarding li.done[data-step="integration"]').count() == 1
    page.click("#onboarding button:has-text('Make a key')")
    page.wait_for_selector("#onboarding-snippets .notice")
    assert "Bearer up_" in page.inner_text("#onboarding-snippets")


def test_export_and_reimport_the_configuration_with_no_diff(session, admin_user):
    from monitoring.models import Channel

    Integration.objects.create(name="Stripe", slug="stripe", environment="production")
    Channel.objects.create(name="ops", kind="email", settings={"addresses": ["ops@example.com"]})
    session.sign_in_as(admin_user)
    page = session.page
    session.go("/configuration/")
    with page.expect_download() as download:
        page.click("a:has-text('Export YAML')")
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    assert "slug: stripe" in exported
    page.fill("#id_text", exported)
    page.click("button[value=dry_run]")
    page.wait_for_selector("#config-diff")
    assert "No changes" in page.inner_text("#config-diff")
    session.screenshot("configuration-no-diff")
