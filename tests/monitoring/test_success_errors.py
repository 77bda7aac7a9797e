"""Errors answered with 200: OpenPanel's ``{"error": …}`` and Slack's ``{"ok": false}`` are
failures with their parsed message; other 2xx bodies stay successes and are never stored."""

from __future__ import annotations

import json

import pytest

from api.models import ApiKey
from demo.sandbox.personalities import OPENPANEL_PASSWORD, OPENPANEL_USER
from monitoring import attempts, parsing, presets, recorder
from monitoring.client import MonitoredClient
from monitoring.models import Integration, Outcome, RequestLog

EVENTS = "/api/v1/events"
CANARY = "sk_live_CANARY" + "7" * 24
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlc2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def _fresh_policies():
    """Integration ids are reused once the test database is emptied: forget cached policies
    before and after, so that neither this file nor the next sees a stale one."""
    attempts.clear_policies()
    yield
    attempts.clear_policies()


@pytest.fixture
def key(db) -> str:
    return ApiKey.issue(name="svc", scopes=["ingest"])[1]


def integration(slug: str, preset: str = "", base_url: str = "") -> Integration:
    return Integration.objects.create(
        name=slug.title(), slug=slug, environment="production", preset=preset, base_url=base_url
    )


def ingest(client, key: str, slug: str, url: str, ok_body: object, status: int = 200) -> dict:
    event = {
        "integration": slug,
        "environment": "production",
        "method": "POST",
        "url": url,
        "status": status,
        "latency_ms": 20.0,
        "ok_body": ok_body if isinstance(ok_body, str) else json.dumps(ok_body),
    }
    response = client.post(
        EVENTS,
        json.dumps({"events": [event]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 202, response.content
    return response.json()


def all_stored() -> str:
    return json.dumps(list(RequestLog.objects.values()), default=str)


def test_an_openpanel_200_with_an_error_body_is_a_failure(client, key):
    integration("openpanel", "openpanel", "https://panel.example.com:2087/api/")
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/plans",
           {"error": "Plan name already exists"})  # fmt: skip
    row = RequestLog.objects.get()
    assert row.status == 200
    assert row.outcome == Outcome.CLIENT_ERROR
    assert row.error_message == "Plan name already exists"
    assert json.loads(row.error_body) == {"error": "Plan name already exists"}


@pytest.mark.parametrize(
    "body",
    [
        {"message": "API is working!"},
        {"logged_in_as": "admin"},
        [],
        {"success": True, "error": ""},
        {"error": None},
        "not json {",
    ],
)
def test_an_ordinary_openpanel_200_stays_ok_and_its_body_is_dropped(client, key, body):
    integration("openpanel", "openpanel")
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/whoami", body)
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.OK
    assert (row.error_code, row.error_message, row.error_body) == ("", "", "")


def test_slack_ok_false_is_a_failure_with_its_code(client, key):
    integration("slack", "slack", "https://slack.com/api")
    ingest(client, key, "slack", "https://slack.com/api/chat.postMessage",
           {"ok": False, "error": "channel_not_found"})  # fmt: skip
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.CLIENT_ERROR
    assert row.error_code == "channel_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"ok": True, "error": "ignored", "channel": "C1"},
        {"ok": 0, "error": "channel_not_found"},  # not the boolean false Slack sends
        {"error": "channel_not_found"},  # no ok at all
    ],
)
def test_slack_needs_ok_false(client, key, body):
    integration("slack", "slack")
    ingest(client, key, "slack", "https://slack.com/api/chat.postMessage", body)
    assert RequestLog.objects.get().outcome == Outcome.OK


@pytest.mark.parametrize("preset", ["", "paubox", "stripe", "generic"])
def test_an_integration_whose_api_never_errs_with_200_never_keeps_the_body(client, key, preset):
    integration("other", preset)
    body = {"error": {"code": "x", "message": "looks like an error"}, "note": CANARY}
    ingest(client, key, "other", "https://api.example.com/v1/things", body)
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.OK
    assert (row.error_code, row.error_message, row.error_body) == ("", "", "")
    assert CANARY not in all_stored()


def test_a_failed_status_is_not_reparsed_from_its_ok_body(client, key):
    integration("openpanel", "openpanel")
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/x",
           {"error": "from the sample"}, status=500)  # fmt: skip
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.SERVER_ERROR
    assert row.error_body == ""  # the failure's own body was not sent: nothing to keep


def test_the_canary_in_a_2xx_body_never_reaches_the_database(client, key):
    integration("openpanel", "openpanel")
    # An error answered with 200 that quotes secrets: kept only scrubbed.
    quoting = {"error": f"Bad key {CANARY}", "access_token": TOKEN, "api_key": "hunter2-x"}
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/plans", quoting)
    # A success carrying a fresh token (the sign-in's answer): never kept at all.
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/",
           {"access_token": TOKEN})  # fmt: skip
    failed, signed_in = RequestLog.objects.order_by("id")
    assert failed.outcome == Outcome.CLIENT_ERROR and "[redacted]" in failed.error_message
    assert signed_in.outcome == Outcome.OK and signed_in.error_body == ""
    stored = all_stored()
    for secret in (CANARY, TOKEN, "hunter2-x"):
        assert secret not in stored


def test_the_integrations_own_redaction_names_scrub_the_kept_body(client, key):
    panel = integration("openpanel", "openpanel")
    panel.redact_names = "partner_ref"
    panel.save()
    ingest(client, key, "openpanel", "https://panel.example.com:2087/api/plans",
           {"error": "Plan exists", "partner_ref": "pr-plain-9"})  # fmt: skip
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.CLIENT_ERROR
    assert "pr-plain-9" not in all_stored()


@pytest.mark.parametrize("bad", [{"error": "x"}, 5, ["a"]])
def test_ingest_rejects_an_ok_body_that_is_not_text(client, key, bad):
    integration("openpanel", "openpanel")
    event = {
        "integration": "openpanel", "environment": "production", "method": "GET",
        "url": "https://panel.example.com/api/", "status": 200, "latency_ms": 1.0, "ok_body": bad,
    }  # fmt: skip
    response = client.post(
        EVENTS,
        json.dumps({"events": [event]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.json()["errors"][0]["field"] == "ok_body"
    assert not RequestLog.objects.exists()


def test_the_policy_asks_for_success_bodies_only_where_the_preset_says_so(db):
    wanted = {}
    for name in ("openpanel", "slack", "paubox", "stripe", ""):
        found = integration(name or "none", name)
        wanted[name] = attempts.policy_for(found).success_bodies
    assert wanted == {"openpanel": True, "slack": True, "paubox": False, "stripe": False, "": False}
    assert {p.name for p in presets.ALL.values() if p.errors_on_success} == {"openpanel", "slack"}


def test_parse_success_error_reads_only_the_presets_own_shapes():
    openpanel = presets.get("openpanel")
    found = parsing.parse_success_error('{"error": "User exists"}', openpanel)
    assert found == parsing.ParsedError("", "User exists")
    assert parsing.parse_success_error('{"message": "API is working!"}', openpanel) is None
    assert parsing.parse_success_error('{"error": "x"}', presets.get("generic")) is None
    assert parsing.parse_success_error('{"error": "x"}', None) is None
    assert parsing.parse_success_error("[" * 5000, openpanel) is None
    disabled = parsing.parse_success_error('{"error": "API access is disabled! …"}', openpanel)
    assert disabled.code == "api_disabled"


# --- end to end: the real clients against the sandbox's OpenPanel ------------------------------


@pytest.fixture
def sandbox():
    from demo.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(seed=1, latency_scale=0.0, error_rate=0.0)) as sb:
        yield sb


LOGIN = {"username": OPENPANEL_USER, "password": OPENPANEL_PASSWORD}


def panel_calls(api) -> str:
    """Sign in, then a 200 with an error body, a normal 200 and a real 404; the token."""
    token = api.post("", json=LOGIN).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    created = api.post("plans", json={"name": "basic"}, headers=auth)
    assert (created.status_code, created.json()) == (200, {"error": "Plan name already exists"})
    assert api.get("whoami", headers=auth).status_code == 200
    assert api.get("users/zed", headers=auth).status_code == 404
    return token


def rows_by_path() -> dict[tuple[str, str], RequestLog]:
    return {(r.method, r.path): r for r in RequestLog.objects.all()}


@pytest.mark.parametrize("preset", ["openpanel", ""])
def test_a_monitored_client_counts_openpanels_200_errors_only_with_the_preset(
    sandbox, transactional_db, tmp_path, preset
):
    base = f"{sandbox.url}/openpanel/api/"
    integration("openpanel", preset, base)
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    try:
        with MonitoredClient(
            integration="openpanel", environment="production", base_url=base
        ) as api:
            token = panel_calls(api)
        recorder.flush(timeout=30)
    finally:
        recorder.configure()
    rows = rows_by_path()
    signin, plans = rows["POST", "/openpanel/api/"], rows["POST", "/openpanel/api/plans"]
    whoami = rows["GET", "/openpanel/api/whoami"]
    assert signin.outcome == whoami.outcome == Outcome.OK
    assert signin.error_body == whoami.error_body == ""
    if preset:
        assert plans.outcome == Outcome.CLIENT_ERROR
        assert plans.error_message == "Plan name already exists"
        assert json.loads(plans.error_body) == {"error": "Plan name already exists"}
    else:  # without the preset's word that this API errs with 200, a 200 is a 200
        assert plans.outcome == Outcome.OK and plans.error_body == ""
    assert token not in all_stored()


def test_the_shipped_sdk_with_success_bodies_sends_the_sample_to_ingest(
    sandbox, live_server, transactional_db, tmp_path
):
    import upstream_client
    from upstream_client.ship import Shipper

    integration("openpanel", "openpanel")
    _, key = ApiKey.issue(name="svc", scopes=["ingest"])
    shipper = Shipper(live_server.url, key, spool_dir=tmp_path / "spool", flush_interval=0.05)
    try:
        with upstream_client.Client(
            integration="openpanel", environment="production", sink=shipper,
            success_bodies=True, base_url=f"{sandbox.url}/openpanel/api/",
        ) as api:  # fmt: skip
            token = panel_calls(api)
        assert shipper.flush(timeout=30)
    finally:
        shipper.close()
    rows = rows_by_path()
    plans = rows["POST", "/openpanel/api/plans"]
    assert plans.outcome == Outcome.CLIENT_ERROR
    assert plans.error_message == "Plan name already exists"
    assert rows["GET", "/openpanel/api/whoami"].outcome == Outcome.OK
    assert rows["POST", "/openpanel/api/"].error_body == ""
    assert token not in all_stored()


def test_the_sdk_in_upstreams_own_process_reads_the_sample_too(sandbox, transactional_db, tmp_path):
    import upstream_client

    from monitoring.local_sink import LocalSink

    integration("openpanel", "openpanel")
    # Loaded now, so the sink starts no loader thread that could outlive this test.
    attempts.policy_for("openpanel", "production")
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    try:
        with upstream_client.Client(
            integration="openpanel", environment="production", sink=LocalSink(),
            success_bodies=True, base_url=f"{sandbox.url}/openpanel/api/",
        ) as api:  # fmt: skip
            token = panel_calls(api)
        recorder.flush(timeout=30)
    finally:
        recorder.configure()
    rows = rows_by_path()
    assert rows["POST", "/openpanel/api/plans"].outcome == Outcome.CLIENT_ERROR
    assert rows["POST", "/openpanel/api/plans"].error_message == "Plan name already exists"
    assert rows["GET", "/openpanel/api/whoami"].outcome == Outcome.OK
    assert token not in all_stored()
