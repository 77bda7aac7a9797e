"""Maintenance windows: list, create (one-off or weekly), end; Admins only, audited."""

from __future__ import annotations

import datetime as dt
import html

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from monitoring.alerts import lifecycle
from monitoring.models import AuditLog, MaintenanceWindow
from tests.dashboard.test_fuzz_screens import HOSTILE

NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def _text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def one_off(**changes) -> dict:
    data = {"name": "Provider upgrade", "integration": "", "starts_at": "2026-12-01T09:00",
            "ends_at": "2026-12-01T12:00", "weekday": "", "start_time": "",
            "duration_minutes": ""}  # fmt: skip
    return data | changes


def test_access(client, viewer, operator, outsider, admin_user):
    url = reverse("maintenance")
    assert client.get(url)["Location"].startswith(reverse("login"))
    for user in (viewer, operator, outsider):
        client.force_login(user)
        assert client.get(url).status_code == 403
        assert client.post(url, one_off()).status_code == 403
    assert not MaintenanceWindow.objects.exists()
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


def test_a_one_off_window_is_created_audited_and_mutes(admin, integration):
    response = admin.post(reverse("maintenance"), one_off(integration=str(integration.pk)))
    assert response.status_code == 302
    window = MaintenanceWindow.objects.get()
    assert window.starts_at == NOW - dt.timedelta(hours=1)
    assert lifecycle.in_maintenance(integration, NOW)
    entry = AuditLog.objects.get(action="create", target_id=str(window.pk))
    assert entry.actor == "ada" and entry.after["name"] == "Provider upgrade"
    body = _text(admin.get(reverse("maintenance")))
    assert "Provider upgrade" in body and "active" in body and "End now" in body


def test_start_and_end_are_read_in_the_users_time_zone(admin, admin_user):
    admin.post(reverse("profile"), {"email": "ada@example.com", "time_zone": "Europe/Berlin"})
    response = admin.post(reverse("maintenance"), one_off())
    assert response.status_code == 302
    window = MaintenanceWindow.objects.get()
    assert window.starts_at == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)  # 09:00 CET
    assert "Europe/Berlin" in _text(admin.get(reverse("maintenance")))


def test_a_weekly_window_is_created(admin):
    data = one_off(starts_at="", ends_at="", weekday="1", start_time="09:30",
                   duration_minutes="60")  # fmt: skip
    assert admin.post(reverse("maintenance"), data).status_code == 302
    window = MaintenanceWindow.objects.get()
    assert (window.weekday, window.start_time, window.duration_minutes) == (1, dt.time(9, 30), 60)
    assert "Tuesday at 09:30 UTC for 60 min" in _text(admin.get(reverse("maintenance")))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"ends_at": "2026-12-01T08:00"}, "A one-off window needs a start before its end."),
        ({"ends_at": "2026-11-30T08:00", "starts_at": "2026-11-30T07:00"}, "already in the past"),
        ({"weekday": "1"}, "Give either a start and end, or a weekday, time and duration."),
        ({"starts_at": "", "ends_at": "", "weekday": "1"}, "A weekly window needs a weekday"),
        ({"starts_at": "", "ends_at": "", "weekday": "9"}, "Select a valid choice"),
        ({"name": ""}, "This field is required."),
    ],
)
def test_bad_windows_are_a_400_with_the_reason(admin, changes, words):
    response = admin.post(reverse("maintenance"), one_off(**changes))
    assert response.status_code == 400
    assert words in _text(response)
    assert not MaintenanceWindow.objects.exists()


def test_ending_a_running_window_sets_its_end_and_cancelling_an_upcoming_one_deletes_it(admin):
    running = MaintenanceWindow.objects.create(
        name="Now", starts_at=NOW - dt.timedelta(hours=1), ends_at=NOW + dt.timedelta(hours=1)
    )
    later = MaintenanceWindow.objects.create(
        name="Later", starts_at=NOW + dt.timedelta(days=1), ends_at=NOW + dt.timedelta(days=2)
    )
    assert admin.post(reverse("maintenance_end", args=[running.pk])).status_code == 302
    running.refresh_from_db()
    assert running.ends_at == NOW
    entry = AuditLog.objects.get(action="update", target_id=str(running.pk))
    assert entry.after == {"ends_at": NOW.isoformat()}
    assert admin.post(reverse("maintenance_end", args=[later.pk])).status_code == 302
    assert not MaintenanceWindow.objects.filter(pk=later.pk).exists()
    assert AuditLog.objects.filter(action="delete", target_id=str(later.pk)).exists()
    # Already over: a 400 that says so.
    response = admin.post(reverse("maintenance_end", args=[running.pk]))
    assert response.status_code == 400
    assert "already ended" in _text(response)


def test_ending_is_admin_only_and_post_only(client, operator, admin_user):
    window = MaintenanceWindow.objects.create(
        name="Now", starts_at=NOW - dt.timedelta(hours=1), ends_at=NOW + dt.timedelta(hours=1)
    )
    url = reverse("maintenance_end", args=[window.pk])
    client.force_login(operator)
    assert client.post(url).status_code == 403
    client.force_login(admin_user)
    assert client.get(url).status_code == 405
    window.refresh_from_db()
    assert window.ends_at > timezone.now()


def test_the_list_pages_and_costs_few_queries(admin, django_assert_max_num_queries):
    MaintenanceWindow.objects.bulk_create(
        MaintenanceWindow(name=f"w{n}", weekday=n % 7, start_time=dt.time(3), duration_minutes=30)
        for n in range(120)
    )
    with django_assert_max_num_queries(10):
        body = _text(admin.get(reverse("maintenance")))
    assert "Page 1 of 3" in body
    assert "Page 3 of 3" in _text(admin.get(reverse("maintenance"), {"page": "99"}))


def test_no_field_gives_a_5xx(admin):
    for field in one_off():
        for value in HOSTILE:
            response = admin.post(reverse("maintenance"), one_off(**{field: value}))
            assert response.status_code < 500, (field, value[:40])
    for value in HOSTILE:
        assert admin.get(reverse("maintenance"), {"page": value}).status_code == 200
