"""Alerts: lists by state, acknowledge / resolve / silence over HTMX, rule editing for Admins."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.models import AlertRule, AlertState, AuditLog, Notification, RuleKind, Silence


def hx(client, url, data=None):
    return client.post(url, data or {}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="alert-1")


def test_an_operator_acknowledges_with_a_note_and_gets_the_updated_card(
    client, operator, firing_alert
):
    client.force_login(operator)
    response = hx(
        client, reverse("alert_acknowledge", args=[firing_alert.pk]), {"note": "rotating key"}
    )
    assert response.status_code == 200
    text = html.unescape(response.content.decode())
    assert "<html" not in text
    assert 'class="state s-acknowledged">Acknowledged' in text
    assert "Acknowledged by otto" in text and "“rotating key”" in text
    assert "Acknowledge</button>" not in text  # nothing left to acknowledge
    # The nav badge is updated out of band: nothing is firing any more.
    assert '<span id="firing-count" hx-swap-oob="true"></span>' in text
    firing_alert.refresh_from_db()
    assert firing_alert.state == AlertState.ACKNOWLEDGED
    assert firing_alert.acknowledged_by == operator
    entry = AuditLog.objects.get(action="alert.acknowledge")
    assert entry.actor == "otto" and entry.after["note"] == "rotating key"


def test_acknowledging_twice_is_a_400_with_the_reason_in_the_card(client, operator, firing_alert):
    client.force_login(operator)
    url = reverse("alert_acknowledge", args=[firing_alert.pk])
    hx(client, url)
    response = hx(client, url)
    assert response.status_code == 400
    assert "This alert is already acknowledged." in response.content.decode()
    plain = client.post(url)
    assert plain.status_code == 400 and b"already acknowledged" in plain.content


def test_a_form_post_without_htmx_redirects_to_the_alert(client, operator, firing_alert):
    client.force_login(operator)
    response = client.post(reverse("alert_resolve", args=[firing_alert.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("alert", args=[firing_alert.pk])
    firing_alert.refresh_from_db()
    assert firing_alert.state == AlertState.RESOLVED


def test_resolving_over_htmx_shows_the_resolved_card(client, operator, firing_alert):
    client.force_login(operator)
    response = hx(client, reverse("alert_resolve", args=[firing_alert.pk]))
    text = response.content.decode()
    assert 'class="state s-resolved">Resolved' in text
    assert "Resolve</button>" not in text


def test_silencing_mutes_the_alerts_integration_and_kind(client, operator, firing_alert):
    client.force_login(operator)
    before = timezone.now()
    response = hx(
        client,
        reverse("alert_silence", args=[firing_alert.pk]),
        {"duration": "4h", "reason": "deploy"},
    )
    assert response.status_code == 200
    assert "Notifications silenced until" in response.content.decode()
    silence = Silence.objects.get()
    assert silence.integration == firing_alert.integration
    assert silence.rule_kind == RuleKind.AUTH_SPIKE
    assert silence.author == operator and silence.reason == "deploy"
    assert (silence.ends_at - before) - dt.timedelta(hours=4) < dt.timedelta(seconds=5)
    assert AuditLog.objects.filter(action="silence.create").count() == 1


def test_a_silence_needs_a_known_duration(client, operator, firing_alert):
    client.force_login(operator)
    response = hx(client, reverse("alert_silence", args=[firing_alert.pk]), {"duration": "1y"})
    assert response.status_code == 400
    assert "Choose how long to silence for." in response.content.decode()
    assert not Silence.objects.exists()


def test_a_viewer_sees_the_alert_but_no_buttons(client, viewer, firing_alert):
    client.force_login(viewer)
    body = client.get(reverse("alerts")).content.decode()
    assert firing_alert.title.split(" — ")[0] in body
    assert "Acknowledge</button>" not in body and "Resolve</button>" not in body
    assert "Silence</button>" not in body


def test_an_operator_sees_the_buttons(client, operator, firing_alert):
    client.force_login(operator)
    body = client.get(reverse("alerts")).content.decode()
    assert "Acknowledge</button>" in body and "Resolve</button>" in body
    assert f'hx-post="{reverse("alert_acknowledge", args=[firing_alert.pk])}"' in body


def test_the_lists_split_alerts_by_state(client, viewer, firing_alert, auth_rule, integration):
    resolved = firing_alert.__class__.objects.create(
        rule=auth_rule, integration=integration, fingerprint="old", title="Old spike",
        state=AlertState.RESOLVED, resolved_at=timezone.now(),
    )  # fmt: skip
    client.force_login(viewer)
    open_list = client.get(reverse("alerts")).content.decode()
    assert f'id="alert-{firing_alert.pk}"' in open_list
    assert f'id="alert-{resolved.pk}"' not in open_list
    done = client.get(reverse("alerts") + "?state=resolved").content.decode()
    assert f'id="alert-{resolved.pk}"' in done and f'id="alert-{firing_alert.pk}"' not in done
    assert client.get(reverse("alerts") + "?state=sleeping").status_code == 400


def test_the_alert_page_shows_its_figures_and_notifications(client, viewer, firing_alert):
    Notification.objects.create(
        alert=firing_alert, kind="firing", recipient="ops@example.com", status="sent"
    )
    client.force_login(viewer)
    body = html.unescape(client.get(reverse("alert", args=[firing_alert.pk])).content.decode())
    assert "401 + 403 in the window" in body and "12 in 5 min" in body
    assert "ops@example.com" in body
    assert f'href="/integrations/{firing_alert.integration_id}/?range=1h"' in body


def test_an_admin_creates_a_rule_and_the_audit_log_records_it(client, admin_user, integration):
    client.force_login(admin_user)
    response = client.post(
        reverse("alert_rule_new"),
        {
            "name": "Paubox error rate",
            "kind": RuleKind.ERROR_RATE,
            "integration": integration.pk,
            "params": '{"threshold_pct": 2}',
            "recipients": "ops@example.com",
            "repeat_interval_s": 3600,
            "recovery_s": 300,
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get(name="Paubox error rate")
    assert rule.params["threshold_pct"] == 2
    entry = AuditLog.objects.get(action="create", target_id=str(rule.pk))
    assert entry.actor == "ada"


def test_bad_rule_parameters_are_a_400_that_names_the_problem(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        reverse("alert_rule_new"),
        {
            "name": "Broken",
            "kind": RuleKind.ERROR_RATE,
            "params": '{"threshold_pct": 500}',
            "repeat_interval_s": 3600,
            "recovery_s": 300,
        },
    )
    assert response.status_code == 400
    assert "threshold_pct must be between" in html.unescape(response.content.decode())
    assert not AlertRule.objects.filter(name="Broken").exists()


def test_editing_a_rule_records_before_and_after(client, admin_user, auth_rule):
    client.force_login(admin_user)
    page = client.get(reverse("alert_rule", args=[auth_rule.pk]))
    assert b"Failed-auth spike" in page.content
    response = client.post(
        reverse("alert_rule", args=[auth_rule.pk]),
        {
            "name": auth_rule.name,
            "kind": auth_rule.kind,
            "params": "{}",
            "repeat_interval_s": 3600,
            "recovery_s": 300,
        },
    )
    assert response.status_code == 302
    entry = AuditLog.objects.get(action="update")
    assert entry.before == {"enabled": True, "repeat_interval_s": 14400}
    assert entry.after == {"enabled": False, "repeat_interval_s": 3600}


def test_the_rule_list_is_readable_by_viewers_without_edit_links(client, viewer, auth_rule):
    client.force_login(viewer)
    body = client.get(reverse("alert_rules")).content.decode()
    assert "Failed-auth spike" in body
    assert reverse("alert_rule", args=[auth_rule.pk]) not in body
    assert "New rule" not in body


@pytest.mark.parametrize("user_fixture", ["operator", "admin_user"])
def test_the_nav_badge_counts_firing_alerts(client, request, firing_alert, user_fixture):
    client.force_login(request.getfixturevalue(user_fixture))
    body = client.get(reverse("overview")).content.decode()
    assert 'title="1 firing alert">1</span>' in body
