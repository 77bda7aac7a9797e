"""The sandbox's OpenPanel and Paubox personalities behave as the real APIs do, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from demo.sandbox import Sandbox, SandboxConfig
from demo.sandbox.personalities import (
    OPENPANEL_APP_PASSWORD,
    OPENPANEL_APP_USER,
    OPENPANEL_PASSWORD,
    OPENPANEL_USER,
    PAUBOX_KEY,
    PAUBOX_USER,
)
from monitoring.probes.run import ProbeSpec, execute, forget_tokens, jwt_expiry, make_client

QUIET = {"latency_scale": 0.0, "error_rate": 0.0}
LOGIN = {"username": OPENPANEL_USER, "password": OPENPANEL_PASSWORD}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(seed=1, **QUIET)) as sb:
        yield sb


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        yield client


def test_openpanel_signs_in_with_a_fifteen_minute_jwt_and_answers_whoami(http):
    assert http.get("/openpanel/api/").json() == {"message": "API is working!"}
    signed = http.post("/openpanel/api/", json=LOGIN)
    assert signed.status_code == 200
    token = signed.json()["access_token"]
    exp = jwt_expiry(token)
    assert exp is not None
    who = http.get("/openpanel/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert who.json() == {"logged_in_as": OPENPANEL_USER}
    users = http.get("/openpanel/api/users", headers={"Authorization": f"Bearer {token}"})
    assert users.json() == []


def test_openpanel_errors_are_its_own(http, sandbox):
    assert http.get("/openpanel/api/whoami").json() == {"error": "Missing or invalid token"}
    bad = http.get("/openpanel/api/whoami", headers={"Authorization": "Bearer a.b.c"})
    assert (bad.status_code, bad.json()) == (401, {"error": "Missing or invalid token"})
    wrong = http.post("/openpanel/api/", json={"username": "admin", "password": "nope"})
    assert wrong.status_code == 401 and "error" in wrong.json()
    sandbox.personalities["/openpanel"].disabled = True
    off = http.get("/openpanel/api/")
    assert off.status_code == 404
    assert off.json()["error"].startswith("API access is disabled!")


def test_openpanel_limits_sign_ins_to_five_a_minute_per_user_and_says_when_to_return(http):
    statuses = [http.post("/openpanel/api/", json=LOGIN).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    limited = http.post("/openpanel/api/", json=LOGIN)
    assert limited.json() == {"error": "Too many login attempts. Please try again later."}
    assert 55 <= int(limited.headers["Retry-After"]) <= 60  # the first sign-in just happened
    # The demo app's own login has its own allowance: its storms never lock the probe out.
    app = {"username": OPENPANEL_APP_USER, "password": OPENPANEL_APP_PASSWORD}
    signed = http.post("/openpanel/api/", json=app)
    assert signed.status_code == 200
    token = signed.json()["access_token"]
    who = http.get("/openpanel/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert who.json() == {"logged_in_as": OPENPANEL_APP_USER}


def test_a_multi_step_probe_signs_in_once_and_reuses_the_token(sandbox, settings, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_OPENPANEL_PASSWORD", OPENPANEL_PASSWORD)
    forget_tokens()
    steps = (
        {
            "name": "sign in", "method": "POST", "path": "/openpanel/api/",
            "body": {"username": OPENPANEL_USER,
                     "password": "${UPSTREAM_SECRET_OPENPANEL_PASSWORD}"},
            "extract": {"access_token": "$.access_token"},
        },
        {"name": "whoami", "path": "/openpanel/api/whoami",
         "headers": {"Authorization": "Bearer {{access_token}}"},
         "assertions": {"json_path": ["$.logged_in_as exists"]}},
    )  # fmt: skip
    spec = ProbeSpec(
        probe_id=991, integration_id=1, method="GET", url=sandbox.url + "/openpanel/api/",
        headers={}, body="", timeout_s=5.0, assertions={}, steps=steps,
    )  # fmt: skip
    allowed = [sandbox.url.removeprefix("http://")]

    async def go():
        async with make_client() as client:
            return [await execute(spec, client, allowed=allowed) for _ in range(8)]

    try:
        results = asyncio.run(go())
    finally:
        forget_tokens()
    assert all(r.ok for r in results), [r.message for r in results]
    assert sandbox.personalities["/openpanel"].signin_count == 1


def test_paubox_takes_token_or_bearer_auth_on_its_real_paths(http):
    base = f"/paubox/v1/{PAUBOX_USER}"
    for auth in (f"Token token={PAUBOX_KEY}", f"Bearer {PAUBOX_KEY}"):
        listed = http.get(f"{base}/dynamic_templates", headers={"Authorization": auth})
        assert listed.status_code == 200 and isinstance(listed.json(), list)
    denied = http.get(f"{base}/dynamic_templates", headers={"Authorization": "Token token=x"})
    assert denied.status_code == 401 and "message" in denied.json()


def test_paubox_answers_its_three_error_shapes_and_bulk_batches(http):
    base = f"/paubox/v1/{PAUBOX_USER}"
    auth = {"Authorization": f"Token token={PAUBOX_KEY}"}
    invalid = http.post(f"{base}/messages", json={"data": {"message": {}}}, headers=auth)
    assert invalid.status_code == 400
    (error,) = invalid.json()["errors"]
    assert set(error) == {"code", "title", "details"}
    assert http.get(f"{base}/nowhere", headers=auth).json() == {"error": "Not found"}
    message = {"recipients": ["a@example.com"], "headers": {"subject": "hi"}}
    sent = http.post(f"{base}/messages", json={"data": {"message": message}}, headers=auth)
    tracking = sent.json()["sourceTrackingId"]
    receipt = http.get(f"{base}/message_receipt", params={"sourceTrackingId": tracking},
                       headers=auth)  # fmt: skip
    assert receipt.status_code == 200
    missing = http.get(f"{base}/message_receipt", params={"sourceTrackingId": "x"}, headers=auth)
    assert missing.status_code == 404 and "details" in missing.json()["errors"][0]
    batch = {"data": {"messages": [message] * 60}}
    bulk = http.post(f"{base}/bulk_messages", json=batch, headers=auth)
    assert bulk.status_code == 200 and len(bulk.json()["messages"]) == 60
