"""Which environment variables ``${NAME}`` may send: refused at save and at run, never sent."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from django.urls import reverse

from monitoring import envref, recorder
from monitoring.models import Integration, Probe, ProbeResult
from monitoring.probes.run import ProbeSpec, RunResult, execute, make_client

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk_live_envref_secret_value_1a2b3c"


@pytest.fixture(autouse=True)
def _recorder_flushed():
    yield
    recorder.flush(timeout=10)


@pytest.fixture
def allow(settings):
    def set_allowed(*names: str) -> None:
        settings.UPSTREAM = {**settings.UPSTREAM, "SECRET_ENV_ALLOW": list(names)}

    set_allowed()
    return set_allowed


def run(url: str, allowed: list[str], headers: dict[str, str]) -> RunResult:
    spec = ProbeSpec(
        probe_id=1, integration_id=1, method="GET", url=url, headers=headers, body="",
        timeout_s=5.0, assertions={},
    )  # fmt: skip

    async def go() -> RunResult:
        async with make_client() as client:
            return await execute(spec, client, allowed=allowed)

    return asyncio.run(go())


# --- the policy --------------------------------------------------------------------------------


def test_the_settings_variables_are_read_from_the_settings_module():
    names = envref.settings_variables()
    for name in ("SECRET_KEY", "DATABASE_URL", "EMAIL_HOST_PASSWORD", "REDIS_URL", "DEBUG"):
        assert name in names
    assert {"UPSTREAM_SECRET_ENV_ALLOW", "UPSTREAM_PROBE_ALLOW_HOSTS", "SQLITE_PATH"} <= names
    assert "UPSTREAM_SECRET_PAUBOX_KEY" not in names


def test_every_variable_in_the_env_example_counts_as_a_setting():
    # .env.example lists every variable the settings read; each must be found by the scan.
    listed = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    assert len(listed) > 30
    assert set(listed) <= envref.settings_variables()


def test_upstream_secret_names_and_listed_names_pass(allow):
    allow("PAUBOX_API_KEY")
    envref.check("Bearer ${UPSTREAM_SECRET_PAUBOX} and ${PAUBOX_API_KEY}; $HOME is not a ref")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("${SECRET_KEY}", "${SECRET_KEY} is a setting of Upstream itself"),
        ("${AWS_SECRET_ACCESS_KEY}", "only variables named UPSTREAM_SECRET_"),
        ("${UPSTREAM_SECRET_}", "${UPSTREAM_SECRET_} may not be referenced"),
        ("${UPSTREAM_SECRET_ENV_ALLOW}", "is a setting of Upstream itself"),
        ("${DATABASE_URL}:${REDIS_URL}", "${DATABASE_URL}, ${REDIS_URL} are settings"),
    ],
)
def test_other_names_are_refused_with_the_rule(allow, text, words):
    with pytest.raises(envref.ForbiddenReference) as caught:
        envref.check(text)
    assert words in str(caught.value)


def test_a_setting_on_the_allow_list_is_still_refused(allow):
    allow("SECRET_KEY", "EMAIL_HOST_PASSWORD", "OTHER_KEY")
    envref.check("${OTHER_KEY}")
    with pytest.raises(envref.ForbiddenReference) as caught:
        envref.check("${OTHER_KEY} ${EMAIL_HOST_PASSWORD} ${SECRET_KEY}")
    assert caught.value.names == ["EMAIL_HOST_PASSWORD", "SECRET_KEY"]
    assert "even if listed in UPSTREAM_SECRET_ENV_ALLOW" in str(caught.value)


def test_an_unreadable_settings_module_honours_no_allow_list(allow, monkeypatch):
    allow("OTHER_KEY")
    monkeypatch.setattr(envref, "_settings_reads", lambda: None)
    envref.check("${UPSTREAM_SECRET_X}")
    for text in ("${OTHER_KEY}", "${UPSTREAM_SECRET_ENV_ALLOW}"):
        with pytest.raises(envref.ForbiddenReference):
            envref.check(text)


# --- at save: the probe admin ------------------------------------------------------------------


def probe_form(integration: Integration, url: str, headers: str) -> dict:
    return {
        "integration": integration.pk, "name": "Leak", "method": "GET", "url": url,
        "headers": headers, "body": "", "interval_s": 60, "timeout_s": 5, "assertions": "{}",
        "fail_threshold": 2, "recover_threshold": 2, "enabled": "on",
    }  # fmt: skip


def test_the_probe_admin_refuses_a_header_naming_secret_key(
    client, admin_user, integration, target, allowed, allow
):
    allow("SECRET_KEY")
    client.force_login(admin_user)
    form = probe_form(integration, f"{target.url}/headers", '{"X-Leak": "${SECRET_KEY}"}')
    response = client.post(reverse("admin:monitoring_probe_add"), form)
    assert response.status_code == 200
    page = response.content.decode()
    assert "X-Leak: ${SECRET_KEY} is a setting of Upstream itself" in page
    assert "UPSTREAM_SECRET_ENV_ALLOW" in page
    assert not Probe.objects.exists()


def test_the_probe_admin_refuses_an_unlisted_variable_and_accepts_allowed_ones(
    client, admin_user, integration, target, allowed, allow
):
    allow("PAUBOX_API_KEY")
    client.force_login(admin_user)
    url = reverse("admin:monitoring_probe_add")
    leak = probe_form(integration, f"{target.url}/headers", '{"X-Leak": "${HOME}"}')
    response = client.post(url, leak)
    assert response.status_code == 200
    assert b"only variables named UPSTREAM_SECRET_" in response.content
    headers = '{"Authorization": "Bearer ${UPSTREAM_SECRET_PAUBOX}", "X-Key": "${PAUBOX_API_KEY}"}'
    response = client.post(url, probe_form(integration, f"{target.url}/headers", headers))
    assert response.status_code == 302, response.content[-2000:]
    assert Probe.objects.get().env_references() == ["PAUBOX_API_KEY", "UPSTREAM_SECRET_PAUBOX"]


# --- at run time -------------------------------------------------------------------------------


def test_a_run_naming_secret_key_fails_and_sends_nothing(target, allowed, allow):
    allow("SECRET_KEY")
    result = run(f"{target.url}/headers", allowed, {"X-Leak": "${SECRET_KEY}"})
    assert (result.ok, result.reason, result.outcome) == (False, "error", "blocked")
    assert "refused: ${SECRET_KEY} is a setting of Upstream itself" in result.message
    assert target.requests == []


def test_a_run_naming_an_unlisted_variable_fails_and_sends_nothing(
    target, allowed, allow, monkeypatch
):
    monkeypatch.setenv("SOME_CLOUD_TOKEN", SECRET)
    result = run(
        f"{target.url}/headers", allowed, {"X-Ok": "plain", "X-Leak": "${SOME_CLOUD_TOKEN}"}
    )
    assert not result.ok and "${SOME_CLOUD_TOKEN} may not be referenced" in result.message
    assert SECRET not in result.message
    assert target.requests == []


def test_an_upstream_secret_and_an_allow_listed_name_are_resolved(
    target, allowed, allow, monkeypatch
):
    allow("PAUBOX_API_KEY")
    monkeypatch.setenv("UPSTREAM_SECRET_X", SECRET)
    monkeypatch.setenv("PAUBOX_API_KEY", "listed-value")
    headers = {"Authorization": "Bearer ${UPSTREAM_SECRET_X}", "X-Key": "${PAUBOX_API_KEY}"}
    result = run(f"{target.url}/headers", allowed, headers)
    assert result.ok, result.message
    received = target.requests[0][2]
    assert received["Authorization"] == f"Bearer {SECRET}"
    assert received["X-Key"] == "listed-value"


@pytest.mark.django_db(transaction=True)
def test_run_now_in_the_admin_refuses_a_stored_header_naming_secret_key(
    client, admin_user, target, allowed, allow
):
    # A row written around the form (an import, an older release) is stopped at run time.
    integration = Integration.objects.create(name="Acme", slug="acme")
    probe = Probe.objects.create(
        integration=integration, name="Leak", url=f"{target.url}/headers",
        headers={"X-Leak": "${SECRET_KEY}"},
    )  # fmt: skip
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:monitoring_probe_changelist"),
        {"action": "run_selected_now", "_selected_action": [probe.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "refused: ${SECRET_KEY} is a setting of Upstream itself" in response.content.decode()
    assert target.requests == []
    result = ProbeResult.objects.get(probe=probe)
    assert not result.ok and "${SECRET_KEY}" in result.message


def test_the_admin_shows_no_fingerprint_of_a_refused_variable(monkeypatch, allow):
    import hashlib

    monkeypatch.setenv("SECRET_KEY", SECRET)
    probe = Probe(headers={"X-Leak": "${SECRET_KEY}"})
    shown = probe.header_fingerprints()["X-Leak"]
    assert "refused" in shown
    assert hashlib.sha256(SECRET.encode()).hexdigest()[:8] not in shown
