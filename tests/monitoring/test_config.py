"""Configuration as code: export, re-import with no diff, diffs, validation, audit, commands."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from monitoring import config
from monitoring.models import (
    AlertRule,
    AuditLog,
    Channel,
    Integration,
    MaintenanceWindow,
    Probe,
    Route,
    RuleKind,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def configured():
    paubox = Integration.objects.create(
        name="Paubox",
        slug="paubox",
        environment="production",
        base_url="https://api.paubox.net",
        host_patterns="api.paubox.net",
        owner_email="ops@example.com",
    )
    Probe.objects.create(
        integration=paubox,
        name="api up",
        url="https://93.184.216.34/v1/status",
        headers={"Authorization": "Token token=${UPSTREAM_SECRET_PAUBOX_KEY}"},
        assertions={"status": "2xx"},
        interval_s=60,
        timeout_s=5,
    )
    slack = Channel.objects.create(
        name="ops-slack", kind="slack", settings={"url": "${UPSTREAM_SECRET_SLACK_URL}"}
    )
    rule = AlertRule.objects.create(
        name="paubox auth", kind=RuleKind.AUTH_SPIKE, integration=paubox, severity="critical"
    )
    route = Route.objects.create(name="default", is_default=True)
    route.channels.set([slack])
    escalate = Route.objects.create(name="escalate")
    escalate.channels.set([slack])
    rule.escalation_route = escalate
    rule.escalation_minutes = 15
    rule.save()
    MaintenanceWindow.objects.create(
        name="weekly deploy", integration=paubox, weekday=2, start_time=dt.time(3, 0),
        duration_minutes=30,
    )  # fmt: skip
    return paubox


def roundtrip(doc: dict) -> dict:
    return config.load(config.dump_yaml(doc))


def test_an_export_imports_back_with_no_changes(configured):
    doc = roundtrip(config.export())
    plan = config.plan(doc)
    assert plan.changes == []
    assert plan.diff().startswith("No changes")
    assert plan.unchanged >= 7


def test_the_export_holds_every_section_and_only_references_for_secrets(configured):
    text = config.dump_yaml(config.export())
    doc = yaml.safe_load(text)
    assert [i["slug"] for i in doc["integrations"]] == ["paubox"]
    assert doc["integrations"][0]["probes"][0]["name"] == "api up"
    assert doc["channels"][0]["settings"] == {"url": "${UPSTREAM_SECRET_SLACK_URL}"}
    assert {r["name"] for r in doc["routes"]} == {"default", "escalate"}
    assert doc["rules"][0]["escalation_route"] == "escalate"
    assert doc["maintenance_windows"][0]["integration"] == "paubox/production"
    assert "${UPSTREAM_SECRET_PAUBOX_KEY}" in text


def test_importing_into_an_empty_install_recreates_everything(configured):
    doc = roundtrip(config.export())
    for model in (MaintenanceWindow, AlertRule, Route, Channel, Probe, Integration):
        model.objects.all().delete()
    plan = config.apply(doc, actor="test")
    assert sum(c.action == "create" for c in plan.changes) >= 7
    again = roundtrip(config.export())
    assert again == doc
    assert config.plan(again).changes == []
    rule = AlertRule.objects.get(name="paubox auth")
    assert rule.escalation_route.name == "escalate"
    assert rule.integration.slug == "paubox"
    assert Route.objects.get(name="default").channels.get().name == "ops-slack"


def test_a_change_is_shown_field_by_field_and_applied_audited(configured):
    doc = roundtrip(config.export())
    doc["integrations"][0]["probes"][0]["interval_s"] = 120
    doc["channels"].append(
        {"name": "pager", "kind": "pagerduty", "settings": {
            "routing_key": "${UPSTREAM_SECRET_PD_KEY}"}, "enabled": True}
    )  # fmt: skip
    plan = config.plan(doc)
    diff = plan.diff()
    assert "~ probe paubox/production 'api up'" in diff
    assert "interval_s: 60 → 120" in diff
    assert "+ channel 'pager'" in diff
    assert Probe.objects.get().interval_s == 60  # planning writes nothing
    before = AuditLog.objects.count()
    config.apply(doc, actor="import_config")
    assert Probe.objects.get().interval_s == 120
    rows = list(AuditLog.objects.order_by("id")[before:])
    assert [(r.action, r.actor) for r in rows] == [
        ("update", "import_config"),
        ("create", "import_config"),
    ]
    assert config.plan(roundtrip(config.export())).changes == []


def test_an_invalid_document_lists_every_problem_and_changes_nothing(configured):
    doc = roundtrip(config.export())
    doc["integrations"][0]["probes"][0]["url"] = "http://10.0.0.5/admin"  # SSRF guard
    doc["integrations"][0]["probes"][0]["interval_s"] = 120
    doc["channels"][0]["settings"] = {"url": "https://hooks.slack.com/services/T/B/secret"}
    doc["rules"][0]["kind"] = "no_such_kind"
    doc["routes"][0]["channels"] = ["missing"]
    with pytest.raises(config.ConfigError) as caught:
        config.apply(doc, actor="test")
    errors = "\n".join(caught.value.errors)
    assert "integrations[0].probes[0].url: Probes may not call this address" in errors
    assert "channels[0].settings: url carries a credential" in errors
    assert "rules[0].kind" in errors
    assert "routes[0].channels: no channel named 'missing'" in errors
    assert Probe.objects.get().interval_s == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("integrations: [", "line"),
        ("- just a list", "document: must be a mapping"),
        ("version: 9\n", "version: this Upstream reads version 1"),
        ("widgets: []\n", "unknown section widgets"),
        ("integrations: [{slug: x, environment: moon}]\n", "integrations[0].environment"),
        ("integrations: [{slug: x, environment: production, colour: red}]\n", "unknown field"),
        ("channels: {name: x}\n", "channels: must be a list"),
        ("rules: [{name: r, kind: auth_spike, integration: nope/production}]\n", "no integration"),
    ],
)
def test_bad_documents_get_a_clear_error(text, message):
    with pytest.raises(config.ConfigError) as caught:
        config.plan(config.load(text))
    assert message in "\n".join(caught.value.errors)


def test_the_commands_export_and_import_with_a_dry_run(configured, tmp_path):
    path = tmp_path / "upstream.yaml"
    call_command("export_config", str(path), stderr=StringIO())
    assert path.read_text().startswith("# Upstream configuration")
    out = StringIO()
    call_command("import_config", str(path), stdout=out)
    assert out.getvalue().startswith("No changes")
    edited = path.read_text().replace("interval_s: 60", "interval_s: 90")
    path.write_text(edited)
    out = StringIO()
    call_command("import_config", str(path), "--dry-run", stdout=out)
    assert "interval_s: 60 → 90" in out.getvalue()
    assert "Dry run: nothing was written." in out.getvalue()
    assert Probe.objects.get().interval_s == 60
    call_command("import_config", str(path), stdout=StringIO())
    assert Probe.objects.get().interval_s == 90


def test_the_import_command_refuses_a_bad_file_with_a_message(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_config", str(missing))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: r, kind: bogus}]\n")
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("import_config", str(bad))
