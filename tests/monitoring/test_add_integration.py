"""`manage.py add_integration`: a preset becomes an integration with probes and rules, once."""

from __future__ import annotations

import asyncio
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from demo.sandbox import Sandbox, SandboxConfig
from demo.sandbox.personalities import OPENPANEL_PASSWORD, OPENPANEL_USER, PAUBOX_KEY
from monitoring import attempts, audit, recorder
from monitoring.client import MonitoredClient
from monitoring.models import AlertRule, AuditLog, Integration, Probe, ProbeKind, RequestLog
from monitoring.presets.catalog import CATALOG
from monitoring.probes.run import ProbeSpec, execute, forget_tokens, make_client


def run(*args: str) -> str:
    out = StringIO()
    call_command("add_integration", *args, stdout=out)
    return out.getvalue()


PAUBOX = ("--preset", "paubox", "--environment", "production",
          "--base-url", "https://api.paubox.net/v1/acme")  # fmt: skip


def test_it_creates_the_integration_with_templates_probes_and_rules(db):
    out = run(*PAUBOX, "--owner-email", "mail-team@example.com")
    assert "applied" in out
    paubox = Integration.objects.get(slug="paubox", environment="production")
    assert paubox.preset == "paubox" and paubox.name == "Paubox Email API"
    assert paubox.owner_email == "mail-team@example.com"
    assert "/v1/{username}/dynamic_templates/{id}" in paubox.explicit_templates()
    assert paubox.host_pattern_list() == ["api.paubox.net", "api.paubox.com"]
    (probe,) = paubox.probes.all()
    assert probe.url == "https://api.paubox.net/v1/acme/dynamic_templates"
    assert probe.headers == {"Authorization": "Token token=${UPSTREAM_SECRET_PAUBOX_API_KEY}"}
    assert probe.env_references() == ["UPSTREAM_SECRET_PAUBOX_API_KEY"]
    # Kinds with an all-integrations default rule (error rate, failed auth, probe down) are
    # left to it; a headroom rule is not offered, as Paubox publishes no rate-limit headers.
    kinds = set(paubox.rules.values_list("kind", flat=True))
    assert kinds == {"latency", "traffic_stopped"}
    assert "UPSTREAM_SECRET_PAUBOX_API_KEY" in out


def test_a_second_run_changes_nothing_and_says_so(db):
    run(*PAUBOX)
    before = AuditLog.objects.count(), Probe.objects.count(), AlertRule.objects.count()
    out = run(*PAUBOX)
    assert "already up to date" in out
    assert (AuditLog.objects.count(), Probe.objects.count(), AlertRule.objects.count()) == before


@pytest.mark.parametrize("preset", CATALOG, ids=lambda p: p.name)
def test_every_preset_applies_and_reapplies_cleanly(db, preset):
    args = ["--preset", preset.name, "--environment", "staging"]
    if preset.placeholders():
        args += ["--base-url", "https://example.com/v1/acme/"]
    run(*args)
    integration = Integration.objects.get(slug=preset.name, environment="staging")
    assert integration.probes.count() == len(preset.probes) + int(preset.statuspage_json)
    for probe in integration.probes.all():
        probe.full_clean()
        for name in probe.env_references():
            assert name.startswith("UPSTREAM_SECRET_") and name.endswith(
                ("_API_KEY", "_TOKEN", "_USER", "_PASSWORD", "_BASIC_AUTH", "_BOT_TOKEN")
            )
            assert "STAGING" in name  # two environments never share a secret by accident
    if preset.statuspage_json:
        assert integration.probes.filter(kind=ProbeKind.STATUSPAGE).exists()
    assert "already up to date" in run(*args)


def test_dry_run_prints_the_diff_and_writes_nothing(db):
    out = run(*PAUBOX, "--dry-run")
    assert "create integration 'Paubox Email API · production'" in out
    assert "create probe 'Dynamic templates'" in out
    assert "Dry run: nothing written" in out
    assert not Integration.objects.exists() and not AuditLog.objects.exists()


def test_reapplying_shows_what_changes_and_keeps_what_the_user_added(db):
    run(*PAUBOX)
    paubox = Integration.objects.get(slug="paubox")
    Integration.objects.filter(pk=paubox.pk).update(
        path_templates=paubox.path_templates + "\n/v1/{username}/custom/{thing}",
        host_patterns="api.paubox.net",
    )
    Probe.objects.filter(integration=paubox).update(url="https://api.paubox.net/v1/acme/x")
    out = run(*PAUBOX, "--dry-run")
    assert "update integration" in out and "host_patterns" in out
    assert "update probe 'Dynamic templates'" in out and "/v1/acme/x" in out
    run(*PAUBOX)
    paubox.refresh_from_db()
    assert "/v1/{username}/custom/{thing}" in paubox.explicit_templates()
    assert paubox.host_pattern_list() == ["api.paubox.net", "api.paubox.com"]
    assert paubox.probes.get().url.endswith("/dynamic_templates")


def test_every_change_is_audited_with_the_command_as_actor(db):
    run(*PAUBOX)
    rows = list(AuditLog.objects.order_by("seq"))
    targets = [r.target_type for r in rows]
    assert targets[0] == "monitoring.Integration"
    assert "monitoring.Probe" in targets and "monitoring.AlertRule" in targets
    assert {(r.actor, r.actor_type, r.action) for r in rows} == {
        ("add_integration", "system", "create")
    }
    assert audit.verify_chain().ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--preset", "nope", "--environment", "production"), "unknown preset 'nope'; known:"),
        (("--preset", "stripe", "--environment", "moon"), "unknown environment 'moon'"),
        (("--preset", "paubox", "--environment", "production"), "needs a base URL"),
        (("--preset", "stripe", "--environment", "production", "--base-url", "ftp://x"),
         "must be an absolute http"),
        (("--preset", "stripe", "--environment", "production", "--owner-email", "not-mail"),
         "owner_email"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_command_line_errors(db, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Integration.objects.exists()


def test_a_global_rule_of_a_kind_is_not_duplicated_per_integration(db):
    AlertRule.objects.create(name="Latency", kind="latency")
    run("--preset", "github", "--environment", "production")
    github = Integration.objects.get(slug="github")
    assert set(github.rules.values_list("kind", flat=True)) == {
        "traffic_stopped", "rate_limit", "version_drift",
    }  # fmt: skip
    assert github.expected_api_version == "2022-11-28"
    run("--preset", "stripe", "--environment", "production", "--api-version", "2026-01-01")
    assert Integration.objects.get(slug="stripe").expected_api_version == "2026-01-01"


def test_the_admin_add_form_offers_the_presets_and_applies_one(client, superuser):
    client.force_login(superuser)
    page = client.get(reverse("admin:monitoring_integration_add"))
    assert b'<option value="openpanel">OpenPanel OpenAdmin API</option>' in page.content
    form = {
        "name": "Panel", "slug": "panel", "environment": "production", "preset": "openpanel",
        "base_url": "https://panel.example.com:2087/api/", "owner_email": "",
        "expected_api_version": "", "require_https": "on", "path_templates": "/api/extra/{x}",
        "redact_names": "", "host_patterns": "", "active": "on",
        "created_0": "2026-11-01", "created_1": "10:00:00",
    }  # fmt: skip
    response = client.post(reverse("admin:monitoring_integration_add"), form)
    assert response.status_code == 302, response.content[:2000]
    panel = Integration.objects.get(slug="panel")
    assert panel.explicit_templates()[0] == "/api/extra/{x}"  # what was typed stays
    assert "/api/users/{username}" in panel.explicit_templates()
    assert set(panel.probes.values_list("name", flat=True)) == {"API up", "Sign in and whoami"}
    rows = AuditLog.objects.filter(target_type="monitoring.Integration", target_id=str(panel.pk))
    assert [(r.actor, r.action) for r in rows.order_by("seq")] == [
        ("root", "create"),  # what the form typed
        ("root", "update"),  # what the preset added
    ]


def test_the_admin_refuses_a_preset_whose_base_url_is_missing(client, superuser):
    client.force_login(superuser)
    form = {"name": "P", "slug": "p", "environment": "production", "preset": "paubox",
            "base_url": "", "created_0": "2026-11-01", "created_1": "10:00:00"}  # fmt: skip
    response = client.post(reverse("admin:monitoring_integration_add"), form)
    assert response.status_code == 200
    assert b"needs a base URL" in response.content
    form["preset"] = "carrier-pigeon"
    response = client.post(reverse("admin:monitoring_integration_add"), form)
    assert response.status_code == 200 and not Integration.objects.exists()


# --- what the presets give, against the sandbox's personalities ----------------------------


@pytest.fixture
def sandbox():
    with Sandbox(SandboxConfig(seed=3, latency_scale=0, error_rate=0)) as running:
        yield running


def test_the_openpanel_preset_probe_signs_in_against_the_sandbox(db, sandbox, monkeypatch):
    run("--preset", "openpanel", "--environment", "sandbox",
        "--base-url", f"{sandbox.url}/openpanel/api/")  # fmt: skip
    monkeypatch.setenv("UPSTREAM_SECRET_OPENPANEL_SANDBOX_USER", OPENPANEL_USER)
    monkeypatch.setenv("UPSTREAM_SECRET_OPENPANEL_SANDBOX_PASSWORD", OPENPANEL_PASSWORD)
    probes = list(Probe.objects.filter(integration__slug="openpanel").order_by("name"))
    assert [p.name for p in probes] == ["API up", "Sign in and whoami"]
    allowed = [sandbox.url.removeprefix("http://")]
    forget_tokens()

    async def go():
        async with make_client() as client:
            return [
                await execute(ProbeSpec.from_probe(p), client, allowed=allowed) for p in probes * 3
            ]

    try:
        results = asyncio.run(go())
    finally:
        forget_tokens()
    assert all(r.ok for r in results), [r.message for r in results]
    assert sandbox.personalities["/openpanel"].signin_count == 1  # reused under the limit
    assert OPENPANEL_PASSWORD not in json.dumps([r.message for r in results])


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool")
    yield
    recorder.configure()


def test_paubox_errors_are_recorded_with_their_details(recording, sandbox):
    run("--preset", "paubox", "--environment", "sandbox",
        "--base-url", f"{sandbox.url}/paubox/v1/sandbox")  # fmt: skip
    with MonitoredClient(
        integration="paubox",
        environment="sandbox",
        base_url=f"{sandbox.url}/paubox/v1/sandbox/",
        headers={"Authorization": f"Token token={PAUBOX_KEY}"},
    ) as paubox:
        assert paubox.post("messages", json={"data": {"message": {}}}).status_code == 400
        receipt = paubox.get("message_receipt", params={"sourceTrackingId": "nope"})
        assert receipt.status_code == 404
    recorder.flush(timeout=30)
    invalid, missing = RequestLog.objects.filter(integration__slug="paubox").order_by("id")
    assert invalid.path == "/paubox/v1/{username}/messages"
    assert (invalid.error_code, invalid.error_message) == (
        "400",
        "Error validating message: message 0: recipients can't be blank",
    )
    assert missing.error_message == "Message was not found: No message with id nope"


def test_openpanel_with_api_access_off_is_recorded_as_api_disabled(recording, sandbox):
    run("--preset", "openpanel", "--environment", "sandbox",
        "--base-url", f"{sandbox.url}/openpanel/api/")  # fmt: skip
    sandbox.personalities["/openpanel"].disabled = True
    with MonitoredClient(
        integration="openpanel", environment="sandbox", base_url=f"{sandbox.url}/openpanel/"
    ) as panel:
        assert panel.get("api/whoami").status_code == 404
    recorder.flush(timeout=30)
    row = RequestLog.objects.get(integration__slug="openpanel")
    assert (row.error_code, row.path) == ("api_disabled", "/openpanel/api/whoami")
    assert row.error_message.startswith("API access is disabled!")
