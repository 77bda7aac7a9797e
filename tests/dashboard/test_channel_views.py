"""Channels page and "Send test"; the alert page's deliveries, plan and suppressions; silences."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.alerts import lifecycle
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    AuditLog,
    Channel,
    ChannelKind,
    Delivery,
    RuleKind,
    Silence,
)
from tests.monitoring.alerts.test_channels import Receiver


def hx(client, url, data=None, current="/alerts/?state=firing"):
    return client.post(
        url, data or {}, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver" + current
    )


@pytest.fixture
def slack(db, monkeypatch, settings):
    with Receiver() as r:
        settings.UPSTREAM = {
            **settings.UPSTREAM,
            "PROBE_ALLOW_HOSTS": [f"127.0.0.1:{r.server.server_port}"],
        }
        monkeypatch.setenv("UPSTREAM_SECRET_SLACK_URL", r.url + "/services/x")
        channel = Channel.objects.create(
            kind=ChannelKind.SLACK,
            name="ops-slack",
            settings={"url": "${UPSTREAM_SECRET_SLACK_URL}"},
        )
        channel.receiver = r
        yield channel


def test_viewers_see_channels_with_references_but_no_test_button(client, viewer, slack):
    client.force_login(viewer)
    body = client.get(reverse("channels")).content.decode()
    assert "ops-slack" in body and "${UPSTREAM_SECRET_SLACK_URL}" in body
    assert "/services/x" not in body  # the secret's value never reaches a page
    assert "Send test" not in body
    assert client.post(reverse("channel_test", args=[slack.pk])).status_code == 403


def test_an_outsider_cannot_see_the_channels(client, outsider, slack):
    client.force_login(outsider)
    assert client.get(reverse("channels")).status_code == 403


def test_an_admin_sends_a_test_and_sees_the_outcome_in_place(client, admin_user, slack):
    client.force_login(admin_user)
    assert "Send test" in client.get(reverse("channels")).content.decode()
    response = hx(client, reverse("channel_test", args=[slack.pk]))
    text = response.content.decode()
    assert response.status_code == 200 and "<html" not in text
    assert f'id="test-{slack.pk}"' in text and "Delivered" in text
    assert slack.receiver.json()["text"].startswith("[TEST]")
    assert AuditLog.objects.filter(action="channel.test").exists()
    slack.receiver.status = 500
    text = hx(client, reverse("channel_test", args=[slack.pk])).content.decode()
    assert "Failed" in text and "HTTP 500" in text


def test_acknowledging_over_htmx_updates_the_tab_counts(client, operator, firing_alert):
    client.force_login(operator)
    text = hx(client, reverse("alert_acknowledge", args=[firing_alert.pk])).content.decode()
    assert 'id="alert-tabs" hx-swap-oob="true"' in text
    tabs = text.split('id="alert-tabs"')[1].split("</nav>")[0]
    assert ">Open</a>" in tabs  # no count left on the Open tab
    assert 'Acknowledged <span class="badge">1</span>' in tabs


def test_a_silenced_card_says_so_and_the_silence_can_end_early(client, operator, firing_alert):
    client.force_login(operator)
    hx(client, reverse("alert_silence", args=[firing_alert.pk]), {"duration": "4h"})
    silence = Silence.objects.get()
    page = html.unescape(client.get(reverse("alerts")).content.decode())
    assert "silenced until" in page and "End silence" in page
    text = hx(
        client, reverse("silence_end", args=[silence.pk]), {"alert": firing_alert.pk}
    ).content.decode()
    assert "silenced until" not in text and "End silence" not in text
    silence.refresh_from_db()
    assert silence.ends_at <= timezone.now()
    assert AuditLog.objects.filter(action="silence.end").exists()
    # Ending it twice is a clear 400, not a 500.
    again = hx(client, reverse("silence_end", args=[silence.pk]), {"alert": firing_alert.pk})
    assert again.status_code == 400 and "already ended" in again.content.decode()
    assert client.post(reverse("silence_end", args=[silence.pk]), {"alert": "x"}).status_code == 400


def test_a_viewer_cannot_end_a_silence(client, viewer, firing_alert, operator):
    silence = lifecycle.create_silence(
        user=operator, ends_at=timezone.now() + dt.timedelta(hours=1)
    )
    client.force_login(viewer)
    assert client.post(reverse("silence_end", args=[silence.pk])).status_code == 403


def test_the_alerts_page_warns_when_a_firing_alert_has_nobody_to_notify(
    client, viewer, firing_alert
):
    client.force_login(viewer)
    body = html.unescape(client.get(reverse("alerts")).content.decode())
    assert "1 firing alert has nobody to notify" in body
    firing_alert.integration.owner_email = "owner@example.com"
    firing_alert.integration.save()
    body = html.unescape(client.get(reverse("alerts")).content.decode())
    assert "nobody to notify" not in body


def test_the_alert_page_says_why_nothing_was_sent_and_who_would_be_told(
    client, viewer, firing_alert
):
    client.force_login(viewer)
    body = html.unescape(client.get(reverse("alert", args=[firing_alert.pk])).content.decode())
    assert "Nothing was sent: nobody is routed for this alert" in body
    assert "Who will be told" in body and "Nobody:" in body
    firing_alert.integration.owner_email = "owner@example.com"
    firing_alert.integration.save()
    body = html.unescape(client.get(reverse("alert", args=[firing_alert.pk])).content.decode())
    assert "owner@example.com" in body and "the integration's owner" in body


def test_the_alert_page_lists_deliveries_and_what_the_outage_suppressed(
    client, viewer, firing_alert, slack, integration, now
):
    Delivery.objects.create(
        channel=slack, alert=firing_alert, event="firing", status="pending", attempts=1,
        response_code=500, error="HTTP 500: boom",
    )  # fmt: skip
    down = AlertRule.objects.create(name="Probe down", kind=RuleKind.PROBE_DOWN)
    outage = Alert.objects.create(
        rule=down, integration=integration, fingerprint="down", title="Paubox — probe down",
        state=AlertState.FIRING, first_seen=now, last_seen=now,
    )  # fmt: skip
    firing_alert.inhibited_by = outage
    firing_alert.save()
    client.force_login(viewer)
    body = html.unescape(client.get(reverse("alert", args=[firing_alert.pk])).content.decode())
    assert "ops-slack" in body and "HTTP 500: boom" in body
    assert f"part of #{outage.pk}" in body.replace(f'<a href="/alerts/{outage.pk}/">', "")
    page = html.unescape(client.get(reverse("alert", args=[outage.pk])).content.decode())
    assert "Suppressed by this outage" in page and firing_alert.title in page
