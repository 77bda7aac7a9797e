"""Alert channels against loopback receivers that check payloads as each service documents them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from monitoring.alerts import channels, lifecycle, notify
from monitoring.models import (
    Alert,
    AlertRule,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Notification,
    NotificationPreference,
    NotificationStatus,
    Route,
    RuleKind,
    Severity,
)
from monitoring.roles import Role
from tests.monitoring.alerts.alertkit import calls, make_integration

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A loopback HTTP server recording every POST; answers `status` after `delay` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0, body: bytes = b"ok") -> None:
        self.status, self.delay, self.body = status, delay, body
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length)
                receiver.requests.append((self.path, dict(self.headers.items()), data))
                time.sleep(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    self.send_header("content-length", str(len(receiver.body)))
                    self.end_headers()
                    self.wfile.write(receiver.body)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def json(self, i: int = -1) -> dict:
        return json.loads(self.requests[i][2])

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    with Receiver() as r:
        settings.UPSTREAM = {
            **settings.UPSTREAM,
            "PROBE_ALLOW_HOSTS": [f"127.0.0.1:{r.server.server_port}"],
        }
        yield r


def allow(settings, *receivers: Receiver) -> None:
    hosts = [f"127.0.0.1:{r.server.server_port}" for r in receivers]
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": hosts, "CHANNEL_TIMEOUT_S": 0.5}


@pytest.fixture
def paubox(db):
    return make_integration("Paubox")


def channel(kind: str, monkeypatch, **settings) -> Channel:
    """A channel whose secrets live in the environment, as they must."""
    stored = {}
    for key, value in settings.items():
        if key in channels.KINDS[kind].secret:
            name = f"UPSTREAM_SECRET_TEST_{kind.upper()}_{key.upper()}"
            monkeypatch.setenv(name, value)
            value = f"${{{name}}}"
        stored[key] = value
    made = Channel(kind=kind, name=f"{kind} channel", settings=stored)
    made.full_clean()
    made.save()
    route, _ = Route.objects.get_or_create(name="Everything", is_default=True)
    route.channels.add(made)
    return made


def fire(integration, n: int = 12) -> Alert:
    AlertRule.objects.get_or_create(
        name="Auth spike", kind=RuleKind.AUTH_SPIKE, defaults={"severity": Severity.CRITICAL}
    )
    calls(integration, timezone.now(), n, status=401)
    lifecycle.evaluate()
    return Alert.objects.get()


def test_webhook_payload_is_documented_and_signed_the_standard_webhooks_way(
    clock, receiver, monkeypatch, paubox
):
    from standardwebhooks import Webhook

    channel(ChannelKind.WEBHOOK, monkeypatch, url=receiver.url + "/hook", secret=SECRET)
    alert = fire(paubox)
    report = notify.send_due()
    assert report.channel_sent == 1
    path, headers, body = receiver.requests[0]
    assert path == "/hook"
    verified = Webhook(SECRET).verify(body, headers)
    assert verified["type"] == "alert.firing"
    data = verified["data"]
    assert data["alert"]["fingerprint"] == alert.fingerprint
    assert data["alert"]["severity"] == "critical"
    assert data["alert"]["url"].endswith(f"/alerts/{alert.pk}/")
    assert data["integration"] == {"name": "Paubox", "environment": "production"}
    assert headers["webhook-id"].startswith("msg_")
    # A tampered body fails verification.
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(body.replace(b"Paubox", b"Paubax"), headers)
    assert Delivery.objects.get().status == DeliveryStatus.SENT
    assert Delivery.objects.get().response_code == 200


def test_webhook_body_template_renders_the_payload(clock, receiver, monkeypatch, paubox):
    channel(
        ChannelKind.WEBHOOK,
        monkeypatch,
        url=receiver.url,
        secret=SECRET,
        template='{"text": "{{ alert.title }} ({{ type }})"}',
    )
    alert = fire(paubox)
    notify.send_due()
    assert receiver.json() == {"text": f"{alert.title} (alert.firing)"}


def test_slack_gets_block_kit(clock, receiver, monkeypatch, paubox):
    channel(ChannelKind.SLACK, monkeypatch, url=receiver.url + "/services/T1/B2/x")
    alert = fire(paubox)
    notify.send_due()
    body = receiver.json()
    assert body["text"] == f"[FIRING] {alert.title}"
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "actions"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": f"[FIRING] {alert.title}"}
    fields = body["blocks"][2]["fields"]
    assert all(f["type"] == "mrkdwn" for f in fields) and "*Severity*\ncritical" in [
        f["text"] for f in fields
    ]
    button = body["blocks"][3]["elements"][0]
    assert button["type"] == "button" and button["url"].endswith(f"/alerts/{alert.pk}/")


def test_teams_gets_an_adaptive_card(clock, receiver, monkeypatch, paubox):
    receiver.status = 202
    channel(ChannelKind.TEAMS, monkeypatch, url=receiver.url + "/workflows/x")
    alert = fire(paubox)
    notify.send_due()
    body = receiver.json()
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0] == {
        "type": "TextBlock",
        "text": f"[FIRING] {alert.title}",
        "weight": "Bolder",
        "size": "Medium",
        "wrap": True,
    }
    assert card["actions"][0]["type"] == "Action.OpenUrl"
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_pagerduty_trigger_acknowledge_resolve_share_the_dedup_key(
    clock, receiver, monkeypatch, paubox, admin_user
):
    receiver.status, receiver.body = 202, b'{"status":"success"}'
    channel(
        ChannelKind.PAGERDUTY,
        monkeypatch,
        routing_key="R0UT1NGKEY",
        url=receiver.url + "/v2/enqueue",
    )
    alert = fire(paubox)
    notify.send_due()
    lifecycle.acknowledge(alert, user=admin_user)
    notify.send_due()
    lifecycle.resolve(alert, user=admin_user)
    notify.send_due()
    events = [json.loads(r[2]) for r in receiver.requests]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {alert.fingerprint}
    assert {e["routing_key"] for e in events} == {"R0UT1NGKEY"}
    trigger = events[0]
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "Paubox"
    assert trigger["payload"]["summary"] == f"[FIRING] {alert.title}"
    assert "payload" not in events[1] and "payload" not in events[2]
    # The routing key never reaches the database.
    assert "R0UT1NGKEY" not in json.dumps(list(Channel.objects.values("settings")))


def test_ntfy_priority_and_tags_follow_the_severity(clock, receiver, monkeypatch, paubox):
    channel(ChannelKind.NTFY, monkeypatch, url=receiver.url + "/upstream-alerts", token="tk_1")
    alert = fire(paubox)
    notify.send_due()
    path, headers, body = receiver.requests[0]
    assert path == "/upstream-alerts"
    assert headers["Priority"] == "5" and headers["Tags"] == "rotating_light"
    assert str(make_header(decode_header(headers["Title"]))) == f"[FIRING] {alert.title}"
    assert headers["Click"].endswith(f"/alerts/{alert.pk}/")
    assert headers["Authorization"] == "Bearer tk_1"
    assert body.decode() == alert.summary


def test_apprise_urls_reach_their_service(clock, receiver, monkeypatch, paubox):
    pytest.importorskip("apprise")
    port = receiver.server.server_port
    channel(ChannelKind.APPRISE, monkeypatch, url=f"json://127.0.0.1:{port}/apprise")
    alert = fire(paubox)
    assert notify.send_due().channel_sent == 1
    path, _headers, _body = receiver.requests[0]
    assert path == "/apprise"
    assert alert.summary.splitlines()[0] in receiver.json()["title"] + receiver.json()["message"]


def test_a_hanging_and_a_failing_receiver_retry_without_holding_up_the_others(
    clock, settings, monkeypatch, paubox
):
    with Receiver(delay=3) as hanging, Receiver(status=500) as broken, Receiver() as good:
        allow(settings, hanging, broken, good)
        for name, r in (("hang", hanging), ("broken", broken), ("good", good)):
            made = channel(ChannelKind.SLACK, monkeypatch, url=r.url)
            made.name = name
            made.settings = {"url": f"${{UPSTREAM_SECRET_{name.upper()}}}"}
            monkeypatch.setenv(f"UPSTREAM_SECRET_{name.upper()}", r.url)
            made.save()
        fire(paubox)
        report = notify.send_due()
        assert (report.channel_sent, report.channel_failed) == (1, 2)
        by_name = {d.channel.name: d for d in Delivery.objects.select_related("channel")}
        assert by_name["good"].status == DeliveryStatus.SENT
        for name in ("hang", "broken"):
            d = by_name[name]
            assert d.status == DeliveryStatus.PENDING and d.attempts == 1
            assert d.next_attempt_at == timezone.now() + notify.backoff(1)
        assert by_name["broken"].response_code == 500
        assert "Timeout" in by_name["hang"].error
        # Retried after the backoff; the good channel hears nothing twice.
        broken.status = 200
        hanging.delay = 0
        clock.shift(dt.timedelta(seconds=31))
        report = notify.send_due()
        assert report.channel_sent == 2
        assert len(good.requests) == 1 and len(broken.requests) == 2


def test_a_channel_that_keeps_failing_warns_the_admins_once(
    clock, smtp, settings, monkeypatch, paubox, django_user_model
):
    admin = django_user_model.objects.create_user("ada", email="ada@example.com")
    admin.groups.add(Group.objects.get(name=Role.ADMIN))
    with Receiver(status=503) as broken:
        allow(settings, broken)
        made = channel(ChannelKind.SLACK, monkeypatch, url=broken.url)
        fire(paubox)
        for _ in range(channels.FAILING_AFTER + 1):
            notify.send_due()
            clock.shift(dt.timedelta(hours=1))
    made.refresh_from_db()
    assert made.consecutive_failures == channels.FAILING_AFTER + 1
    assert channels.failing_channels() == [made]
    warnings = [s for s in smtp.subjects if "keeps failing" in s]
    assert warnings == ['[Upstream] Alert channel "slack channel" keeps failing']


def test_secrets_must_be_environment_references(db, monkeypatch):
    with pytest.raises(ValidationError, match="environment reference"):
        Channel(
            kind=ChannelKind.SLACK, name="s", settings={"url": "https://hooks.slack.com/x"}
        ).full_clean()
    with pytest.raises(ValidationError, match="may not be referenced"):
        Channel(kind=ChannelKind.SLACK, name="s", settings={"url": "${HOME}"}).full_clean()
    with pytest.raises(ValidationError, match="Unknown setting"):
        Channel(kind=ChannelKind.NTFY, name="n", settings={"url": "x", "colour": 1}).full_clean()


def test_channel_urls_pass_the_ssrf_guard(clock, settings, monkeypatch, paubox):
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": []}
    channel(ChannelKind.SLACK, monkeypatch, url="http://127.0.0.1:9/x")
    fire(paubox)
    notify.send_due()
    d = Delivery.objects.get()
    assert d.status == DeliveryStatus.FAILED and d.error.startswith("blocked:")


def test_email_channels_and_preferences_join_the_recipients(
    clock, smtp, monkeypatch, paubox, django_user_model
):
    Channel.objects.create(
        kind=ChannelKind.EMAIL, name="oncall", settings={"addresses": ["oncall@example.com"]}
    )
    route = Route.objects.create(name="Paubox", integration=paubox)
    route.channels.add(Channel.objects.get())
    wants = django_user_model.objects.create_user("wendy", email="wendy@example.com")
    NotificationPreference.objects.create(user=wants, severities=["critical"])
    quiet = django_user_model.objects.create_user("quinn", email="quinn@example.com")
    NotificationPreference.objects.create(user=quiet, severities=["warning"])
    alert = fire(paubox)
    plan = notify.plan(alert)
    assert plan.emails == ["oncall@example.com", "wendy@example.com"]
    clock.shift(dt.timedelta(seconds=31))
    notify.send_due()
    assert sorted(m["To"] for m in smtp.messages) == ["oncall@example.com", "wendy@example.com"]


def test_the_default_route_catches_only_what_no_route_matched(db, monkeypatch, paubox):
    stripe = make_integration("Stripe")
    rule = AlertRule.objects.create(name="r", kind=RuleKind.ERROR_RATE)
    a = Channel.objects.create(kind=ChannelKind.EMAIL, name="a", settings={"addresses": ["a@x.io"]})
    b = Channel.objects.create(kind=ChannelKind.EMAIL, name="b", settings={"addresses": ["b@x.io"]})
    Route.objects.create(name="paubox", integration=paubox).channels.add(a)
    Route.objects.create(name="default", is_default=True).channels.add(b)
    router = channels.Router()
    assert router(Alert(rule=rule, integration=paubox)) == [a]
    assert router(Alert(rule=rule, integration=stripe)) == [b]


def test_a_reminder_never_follows_an_acknowledgement(clock, smtp, paubox, admin_user):
    AlertRule.objects.create(
        name="Auth spike", kind=RuleKind.AUTH_SPIKE, repeat_interval_s=600,
        recipients="oncall@example.com",
    )  # fmt: skip
    calls(paubox, timezone.now(), 12, status=401)
    lifecycle.evaluate()
    clock.shift(dt.timedelta(seconds=31))
    notify.send_due()
    clock.shift(dt.timedelta(minutes=10))
    calls(paubox, timezone.now(), 12, status=401)
    lifecycle.evaluate()  # queues the reminder, due after the group wait
    reminder = Notification.objects.get(kind=Notification.Kind.REMINDER)
    lifecycle.acknowledge(Alert.objects.get(), user=admin_user, note="on it")
    clock.shift(dt.timedelta(seconds=31))
    notify.send_due()
    assert len(smtp.messages) == 1  # the firing e-mail only
    reminder.refresh_from_db()
    assert reminder.status == NotificationStatus.SUPPRESSED
    assert reminder.error == (
        f"not sent: acknowledged by {admin_user.get_username()} before it went out"
    )


def test_escalation_goes_to_the_rule_s_escalation_route_once(clock, receiver, monkeypatch, paubox):
    pager = channel(ChannelKind.SLACK, monkeypatch, url=receiver.url)
    Route.objects.filter(is_default=True).delete()
    escalation = Route.objects.create(name="Escalate")
    escalation.channels.add(pager)
    AlertRule.objects.create(
        name="Auth spike", kind=RuleKind.AUTH_SPIKE, recipients="oncall@example.com",
        escalation_route=escalation, escalation_minutes=15,
    )  # fmt: skip
    for _ in range(3):
        calls(paubox, timezone.now(), 12, status=401)
        lifecycle.evaluate()
        clock.shift(dt.timedelta(minutes=10))
    events = list(Delivery.objects.values_list("event", flat=True))
    assert events == [Delivery.Event.ESCALATION]
    assert Alert.objects.get().escalated_at is not None


def test_send_test_reports_the_outcome_and_stores_nothing(db, receiver, monkeypatch):
    made = channel(ChannelKind.SLACK, monkeypatch, url=receiver.url)
    assert channels.send_test(made).ok
    assert receiver.json()["text"].startswith("[TEST] [FIRING] Test from Upstream")
    assert not Alert.objects.exists() and not Delivery.objects.exists()


def test_every_channel_kind_has_a_class():
    assert set(channels.KINDS) == set(ChannelKind.values)
    assert channels.check_channel_kinds(None) == []


def test_a_system_check_warns_of_firing_alerts_nobody_hears_about(clock, db):
    from monitoring.checks import check_alerts_reach_someone

    nobody = make_integration("Nobody", owner_email="")
    fire(nobody)
    (warning,) = check_alerts_reach_someone(None, databases=["default"])
    assert (
        warning.id == "upstream.W016" and "1 firing alert(s) have nobody to notify" in warning.msg
    )
    nobody.owner_email = "owner@example.com"
    nobody.save()
    assert check_alerts_reach_someone(None, databases=["default"]) == []
