"""The profile: own e-mail, notification preferences, time zone (pages render times in it)."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.urls import reverse

from monitoring.alerts import notify
from monitoring.models import AuditLog, NotificationPreference
from tests.dashboard.conftest import make_log, record
from tests.dashboard.test_fuzz_screens import HOSTILE


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _form(**changes) -> dict:
    data = {"email": "vera@example.com", "by_email": "on", "integrations": [],
            "severities": ["critical"], "time_zone": "America/New_York"}  # fmt: skip
    return data | changes


def test_anonymous_visitors_are_sent_to_sign_in(client, db):
    response = client.get(reverse("profile"))
    assert response["Location"].startswith(reverse("login"))


def test_a_user_without_a_role_is_refused(client, outsider):
    client.force_login(outsider)
    assert client.get(reverse("profile")).status_code == 403


@pytest.mark.parametrize("role", ["viewer", "operator", "admin_user"])
def test_every_role_sets_its_own_email_and_preferences_audited(client, request, role, integration):
    user = request.getfixturevalue(role)
    client.force_login(user)
    assert client.get(reverse("profile")).status_code == 200
    response = client.post(reverse("profile"), _form(integrations=[integration.pk]))
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.email == "vera@example.com"
    pref = NotificationPreference.objects.get(user=user)
    assert pref.by_email and pref.severities == ["critical"]
    assert list(pref.integrations.all()) == [integration]
    assert pref.time_zone == "America/New_York"
    assert AuditLog.objects.filter(action="create", target_id=str(pref.pk)).exists()
    email_entry = AuditLog.objects.get(action="update", target_type="auth.User")
    assert email_entry.before == {"email": ""}
    assert email_entry.after == {"email": "vera@example.com"}


def test_a_second_save_updates_the_same_row(client, viewer):
    client.force_login(viewer)
    client.post(reverse("profile"), _form())
    client.post(reverse("profile"), _form(severities=[], time_zone=""))
    pref = NotificationPreference.objects.get(user=viewer)
    assert pref.severities == [] and pref.time_zone == ""
    entry = AuditLog.objects.get(
        action="update", target_type="monitoring.NotificationPreference", target_id=str(pref.pk)
    )
    assert entry.before["severities"] == ["critical"] and entry.after["severities"] == []


def test_preferences_reach_the_notification_plan(client, viewer, firing_alert):
    client.force_login(viewer)
    client.post(reverse("profile"), _form(severities=[]))
    plan = notify.plan(firing_alert)
    assert "vera@example.com" in str(plan)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"email": "vera@"}, "Enter a valid email address."),
        ({"email": ""}, "Give an e-mail address to be e-mailed about alerts."),
        ({"time_zone": "Mars/Olympus"}, "Select a valid choice"),
        ({"severities": ["fatal"]}, "Select a valid choice"),
        ({"integrations": ["999"]}, "Select a valid choice"),
    ],
)
def test_bad_input_is_a_400_with_the_reason(client, viewer, changes, words):
    client.force_login(viewer)
    response = client.post(reverse("profile"), _form(**changes))
    assert response.status_code == 400
    assert words in _text(response)
    assert not NotificationPreference.objects.exists()


def test_pages_render_times_in_the_chosen_zone_while_urls_stay_utc(client, viewer, integration):
    when = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    record([make_log(integration, when)])
    client.force_login(viewer)
    log = reverse("request_log")
    window = {"since": "2026-07-01T11:00", "until": "2026-07-01T13:00"}
    assert "12:00:00" in _text(client.get(log, window))
    client.post(reverse("profile"), _form(time_zone="Asia/Tokyo"))
    body = _text(client.get(log, window))
    # The same URL selects the same row (UTC), shown at 21:00 in Tokyo.
    assert "21:00:00" in body
    assert "Jul 01, 20:00 JST" in body  # the window's start, 11:00 UTC
    # A fresh sign-in picks the zone up from the profile.
    client.logout()
    client.force_login(viewer)
    assert "21:00:00" in _text(client.get(log, window))


def test_the_profile_costs_few_queries(client, viewer, integration, django_assert_max_num_queries):
    client.force_login(viewer)
    with django_assert_max_num_queries(10):
        assert client.get(reverse("profile")).status_code == 200


def test_no_field_gives_a_5xx(client, viewer):
    client.force_login(viewer)
    for field in _form():
        for value in HOSTILE:
            response = client.post(reverse("profile"), _form(**{field: value}))
            assert response.status_code < 500, (field, value[:40])


def test_chart_axes_follow_the_zone_too():
    from django.utils import timezone

    from dashboard import charts

    class P:
        start = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)

    step = dt.timedelta(hours=1)
    assert charts.labels([P, P], step)[0] == "12:00"
    with timezone.override("Asia/Tokyo"):
        assert charts.labels([P, P], step)[0] == "21:00"


@pytest.mark.parametrize(("path", "zone"), [("/", "Asia/Tokyo"), ("/api/v1/alerts", "UTC")])
def test_the_zone_applies_to_pages_but_not_the_api(rf, viewer, path, zone):
    from django.utils import timezone

    from dashboard.middleware import ZONE_SESSION_KEY, TimeZoneMiddleware

    seen = []
    request = rf.get(path)
    request.user = viewer
    request.session = {ZONE_SESSION_KEY: "Asia/Tokyo"}
    TimeZoneMiddleware(lambda r: seen.append(timezone.get_current_timezone_name()))(request)
    assert seen == [zone]
