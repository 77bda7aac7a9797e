"""The demo's webhooks: endpoints and rules, the sandbox's signed deliveries over real HTTP."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
from django.core.management import call_command
from standardwebhooks.webhooks import Webhook

from demo import webhooks as demo_webhooks
from demo.sandbox.webhooks import Sender, Target, standard_signature, wrong_secret_for
from monitoring import attempts, recorder
from monitoring.alerts import lifecycle
from monitoring.models import Alert, AlertRule, RequestLog, RuleKind, WebhookEndpoint
from monitoring.webhooks import dedupe, secrets


def test_the_signature_matches_the_published_standard_webhooks_vector():
    signature = standard_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_reference_library_verifies_what_the_sender_signs():
    sender = Sender([], seed=3)
    target = Target("CRM", "http://unused", "standard", demo_webhooks.DEMO_SECRET)
    stamped = int(time.time())
    body = sender.body(target, "msg_1", "deal.won", stamped)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamped),
        "webhook-signature": standard_signature(target.secret, "msg_1", stamped, body),
    }
    assert Webhook(demo_webhooks.DEMO_SECRET).verify(body, headers) == json.loads(body)
    wrong = wrong_secret_for(target.secret)
    assert wrong.startswith("whsec_") and wrong != target.secret


def test_the_demo_sets_up_its_endpoints_and_rules_once(db, monkeypatch):
    monkeypatch.delenv(demo_webhooks.SECRET_VARIABLE, raising=False)
    first = demo_webhooks.setup_demo_webhooks()
    assert demo_webhooks.setup_demo_webhooks() == first
    schemes = {e.integration.slug: e.scheme for e in first}
    assert schemes == {"sandbox-crm": "standard", "paubox": "none"}
    [secret] = WebhookEndpoint.objects.get(scheme="standard").secrets.all()
    # A reference to the environment: the value itself is never stored.
    assert secret.reference == "${UPSTREAM_SECRET_DEMO_WEBHOOK}" and not secret.encrypted
    assert secret.fingerprint == secrets.fingerprint(demo_webhooks.DEMO_SECRET)
    kinds = set(AlertRule.objects.values_list("kind", flat=True))
    assert {RuleKind.WEBHOOK_SIGNATURE_FAILURES, RuleKind.WEBHOOKS_STOPPED} <= kinds
    assert demo_webhooks.seed_webhook_history(hours=2) > 100
    assert demo_webhooks.seed_webhook_history(hours=2) == 0
    assert RequestLog.objects.filter(source="webhook", status=202).exists()


@pytest.fixture
def recording(live_server, tmp_path):
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=1000)
    yield live_server.url
    recorder.configure()
    dedupe.stop()  # its connection must not outlive the test database


def test_the_sandbox_delivers_signed_webhooks_and_a_wrong_secret_fails_them(recording):
    demo_webhooks.setup_demo_webhooks()
    assert os.environ[demo_webhooks.SECRET_VARIABLE] == demo_webhooks.DEMO_SECRET
    targets = {t.scheme: t for t in demo_webhooks.targets(recording)}
    assert set(targets) == {"standard", "none"}
    assert "/hooks/" in targets["none"].url
    sender = Sender(list(targets.values()), seed=7)
    with httpx.Client(timeout=10) as client:
        good = [sender.deliver(client, t) for t in targets.values() for _ in range(3)]
        forged = sender.deliver(client, targets["standard"], forged=True)
        rotated = Target(**{**vars(targets["standard"]), "wrong_secret": (0.0, 3600.0)})
        drifted = [sender.deliver(client, rotated) for _ in range(4)]
    assert {d.status for d in good} <= {200, 202} and 202 in {d.status for d in good}
    assert (forged.signed_with, forged.status) == ("forged", 401)
    assert {(d.signed_with, d.status) for d in drifted} == {("wrong", 401)}

    recorder.flush(timeout=30)
    rows = RequestLog.objects.filter(source="webhook")
    assert rows.filter(status=401, error_code="bad_signature").count() == 5
    verified = rows.filter(status=202)
    assert {r.path.split(".")[0] for r in verified} <= {"/contact", "/deal", "/message"}
    # Only the signed scheme has a timestamp: its deliveries carry the lag, Paubox's none.
    paubox = WebhookEndpoint.objects.get(scheme="none").integration_id
    assert all(r.latency_ms == 0 for r in verified.filter(integration_id=paubox))

    # The demo's rule sees them; all within one minute, so they read as forged deliveries
    # among good ones (test_webhook_rules.py dates a drift across minutes).
    lifecycle.evaluate()
    [alert] = Alert.objects.filter(rule__kind=RuleKind.WEBHOOK_SIGNATURE_FAILURES)
    assert alert.figures["failed"] == 5
    assert alert.figures["rejections"] == {"bad_signature": 5}


def test_the_demo_command_creates_the_webhooks(db, capsys, monkeypatch):
    monkeypatch.setattr("demo.management.commands.demo.seed_history", lambda: 0)
    call_command("demo")
    out = capsys.readouterr().out
    assert "Demo webhooks: 2 endpoints" in out
    assert WebhookEndpoint.objects.count() == 2
