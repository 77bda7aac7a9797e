"""The admin: configuration is audited, records are read-only, even for superusers."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task

from monitoring import audit
from monitoring.models import (
    Alert,
    AlertRule,
    AuditLog,
    Integration,
    MetricBucket,
    Notification,
    Probe,
    ProbeFlip,
    ProbeResult,
    RequestLog,
)
from monitoring.tasks import SCHEDULES


@pytest.fixture
def audit_row(db):
    return audit.record("test.event", actor="system", target_repr="x")


def test_audit_log_is_read_only_for_a_superuser(client, superuser, audit_row):
    client.force_login(superuser)
    changelist = reverse("admin:monitoring_auditlog_changelist")
    assert client.get(changelist).status_code == 200
    assert client.get(reverse("admin:monitoring_auditlog_add")).status_code == 403
    change = reverse("admin:monitoring_auditlog_change", args=[audit_row.pk])
    response = client.get(change)
    assert response.status_code == 200  # a view-only page
    assert b'name="_save"' not in response.content
    posted = client.post(change, {"actor": "mallory"})
    assert posted.status_code == 403
    delete = reverse("admin:monitoring_auditlog_delete", args=[audit_row.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = client.post(
        changelist, {"action": "delete_selected", "_selected_action": [audit_row.pk], "post": "yes"}
    )
    assert bulk.status_code in {200, 302}
    assert AuditLog.objects.filter(pk=audit_row.pk, actor="system").exists()


def test_request_log_admin_is_read_only_and_filterable(client, superuser, integration):
    RequestLog.objects.create(
        integration=integration, method="GET", host="api.paubox.net", path="/v1/x",
        status=401, outcome="client_error", latency_ms=12.5,
    )  # fmt: skip
    client.force_login(superuser)
    url = reverse("admin:monitoring_requestlog_changelist")
    response = client.get(url, {"outcome__exact": "client_error", "source__exact": "client"})
    assert response.status_code == 200
    assert b"/v1/x" in response.content
    assert client.get(reverse("admin:monitoring_requestlog_add")).status_code == 403


def test_creating_editing_and_deleting_an_integration_in_the_admin_is_audited(client, superuser):
    client.force_login(superuser)
    form = {
        "name": "Stripe", "slug": "stripe", "environment": "production",
        "base_url": "https://api.stripe.com", "owner_email": "", "expected_api_version": "",
        "require_https": "on", "path_templates": "", "redact_names": "", "active": "on",
        "created_0": "2026-11-01", "created_1": "10:00:00",
    }  # fmt: skip
    response = client.post(reverse("admin:monitoring_integration_add"), form)
    assert response.status_code == 302, response.content[:2000]
    stripe = Integration.objects.get(slug="stripe")
    form["owner_email"] = "payments@example.com"
    client.post(reverse("admin:monitoring_integration_change", args=[stripe.pk]), form)
    client.post(reverse("admin:monitoring_integration_delete", args=[stripe.pk]), {"post": "yes"})
    rows = list(AuditLog.objects.order_by("seq").filter(target_type="monitoring.Integration"))
    assert [r.action for r in rows] == ["create", "update", "delete"]
    assert rows[1].before == {"owner_email": ""}
    assert rows[1].after == {"owner_email": "payments@example.com"}
    assert all(r.actor == "root" for r in rows)
    assert audit.verify_chain().ok


def test_editing_a_probe_in_the_admin_never_overwrites_its_run_state(
    client, superuser, integration
):
    from monitoring.models import Probe

    probe = Probe.objects.create(
        integration=integration, name="Health", url="https://93.184.216.34/h"
    )
    client.force_login(superuser)
    change = reverse("admin:monitoring_probe_change", args=[probe.pk])
    page = client.get(change)
    form = {k: v for k, v in page.context["adminform"].form.initial.items() if v is not None}
    # The dispatcher records a run while the admin's form is open.
    Probe.objects.filter(pk=probe.pk).update(state="down", consecutive_failures=3)
    form.update(
        {"integration": integration.pk, "name": "Health check", "headers": "{}", "assertions": "{}"}
    )
    form.pop("created", None)
    form.update({"created_0": "2026-11-01", "created_1": "10:00:00"})
    response = client.post(change, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    probe.refresh_from_db()
    assert probe.name == "Health check"
    assert (probe.state, probe.consecutive_failures) == ("down", 3)
    row = AuditLog.objects.get(action="update", target_type="monitoring.Probe")
    assert row.after["name"] == "Health check"
    assert "state" not in row.after and "consecutive_failures" not in row.after


def test_an_admin_role_user_without_the_staff_flag_configures_through_the_admin(client, db):
    from django.contrib.auth.models import Group, User

    ada = User.objects.create_user("ada2", password="x-long-enough-password")
    ada.groups.add(Group.objects.get(name="Admin"))
    client.force_login(ada)
    assert client.get(reverse("admin:monitoring_auditlog_changelist")).status_code == 200
    assert client.get(reverse("admin:monitoring_integration_add")).status_code == 200
    # Records stay read-only for the Admin role too.
    assert client.get(reverse("admin:monitoring_auditlog_add")).status_code == 403


def test_operators_and_viewers_are_kept_out_of_the_admin(client, operator, viewer):
    for user in (operator, viewer):
        client.force_login(user)
        response = client.get(reverse("admin:monitoring_auditlog_changelist"))
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]


# --- accounts: what each role may do ----------------------------------------------------------


def _user_form(user, **changes) -> dict:
    """The change form as the browser would post it, for the fields every role sees."""
    form = {
        "username": user.username, "first_name": user.first_name, "last_name": user.last_name,
        "email": user.email, "groups": [g.pk for g in user.groups.all()],
    }  # fmt: skip
    if user.is_active:
        form["is_active"] = "on"
    form.update(changes)
    return form


@pytest.mark.parametrize(
    ("role", "status"),
    [("viewer", 302), ("operator", 302), ("admin_user", 200), ("superuser", 200)],
)
def test_the_user_and_group_admins_open_to_admins_and_superusers_only(
    client, request, role, status
):
    client.force_login(request.getfixturevalue(role))
    for name in ("admin:auth_user_changelist", "admin:auth_group_changelist"):
        assert client.get(reverse(name)).status_code == status


def test_the_admin_role_cannot_make_anyone_superuser_or_staff_or_grant_permissions(
    client, admin_user, viewer
):
    client.force_login(admin_user)
    change = reverse("admin:auth_user_change", args=[viewer.pk])
    page = client.get(change)
    assert page.status_code == 200
    for field in (b'name="is_superuser"', b'name="is_staff"', b'name="user_permissions"'):
        assert field not in page.content
    perm = Permission.objects.get(codename="change_schedule")
    operator_role = Group.objects.get(name="Operator")
    form = _user_form(
        viewer, is_superuser="on", is_staff="on", user_permissions=[perm.pk],
        groups=[operator_role.pk], email="vera@example.com",
    )  # fmt: skip
    response = client.post(change, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    viewer.refresh_from_db()
    assert (viewer.is_superuser, viewer.is_staff) == (False, False)
    assert not viewer.user_permissions.exists()
    # Granting a role is what the Admin role is for.
    assert list(viewer.groups.values_list("name", flat=True)) == ["Operator"]
    assert viewer.email == "vera@example.com"


def test_the_admin_role_assigns_only_the_three_role_groups(client, admin_user, viewer):
    wheel = Group.objects.create(name="wheel")
    client.force_login(admin_user)
    change = reverse("admin:auth_user_change", args=[viewer.pk])
    response = client.post(change, _user_form(viewer, groups=[wheel.pk]))
    assert response.status_code == 200
    assert "groups" in response.context["adminform"].form.errors
    assert not viewer.groups.filter(name="wheel").exists()


def test_the_admin_role_cannot_edit_a_superuser_or_change_its_password(
    client, admin_user, superuser
):
    client.force_login(admin_user)
    change = reverse("admin:auth_user_change", args=[superuser.pk])
    page = client.get(change)
    assert page.status_code == 200  # view-only
    assert b'name="_save"' not in page.content
    assert superuser.password.encode() not in page.content
    assert client.post(change, _user_form(superuser, username="root2")).status_code == 403
    password = reverse("admin:auth_user_password_change", args=[superuser.pk])
    assert client.get(password).status_code == 403
    new = "taken over 1234567"
    form = {"password1": new, "password2": new, "usable_password": "true"}
    assert client.post(password, form).status_code == 403
    superuser.refresh_from_db()
    assert superuser.username == "root"
    assert not superuser.check_password(new)
    delete = reverse("admin:auth_user_delete", args=[superuser.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [superuser.pk], "post": "yes"}
    assert client.post(reverse("admin:auth_user_changelist"), bulk).status_code == 403
    assert type(superuser).objects.filter(pk=superuser.pk).exists()


def test_an_account_with_powers_beyond_a_role_is_for_superusers_to_edit(
    client, admin_user, viewer, superuser
):
    viewer.user_permissions.add(Permission.objects.get(codename="change_schedule"))
    password = reverse("admin:auth_user_password_change", args=[viewer.pk])
    client.force_login(admin_user)
    assert client.get(password).status_code == 403
    client.force_login(superuser)
    assert client.get(password).status_code == 200


def test_the_admin_role_resets_a_viewers_password_and_adds_users(client, admin_user, viewer):
    client.force_login(admin_user)
    new = "a fresh start 98765"
    password = reverse("admin:auth_user_password_change", args=[viewer.pk])
    form = {"password1": new, "password2": new, "usable_password": "true"}
    assert client.post(password, form).status_code == 302
    viewer.refresh_from_db()
    assert viewer.check_password(new)
    added = client.post(
        reverse("admin:auth_user_add"),
        {"username": "nina", "usable_password": "true", "password1": new, "password2": new},
    )
    assert added.status_code == 302
    nina = type(viewer).objects.get(username="nina")
    assert (nina.is_staff, nina.is_superuser) == (False, False)


def test_a_superuser_still_edits_flags_and_permissions(client, superuser, viewer):
    client.force_login(superuser)
    change = reverse("admin:auth_user_change", args=[viewer.pk])
    page = client.get(change)
    assert b'name="is_superuser"' in page.content
    form = _user_form(viewer, is_staff="on", date_joined_0="2026-01-01", date_joined_1="10:00:00")
    response = client.post(change, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    viewer.refresh_from_db()
    assert viewer.is_staff


def test_group_permissions_are_changed_by_superusers_only(client, admin_user, superuser):
    operator_role = Group.objects.get(name="Operator")
    change = reverse("admin:auth_group_change", args=[operator_role.pk])
    perm = Permission.objects.get(codename="add_user")
    form = {"name": "Operator", "permissions": [perm.pk]}
    client.force_login(admin_user)
    assert client.get(change).status_code == 200  # view-only
    assert client.post(change, form).status_code == 403
    assert client.get(reverse("admin:auth_group_add")).status_code == 403
    assert not operator_role.permissions.exists()
    client.force_login(superuser)
    assert client.post(change, form).status_code == 302
    assert list(operator_role.permissions.all()) == [perm]


# --- the task queue ---------------------------------------------------------------------------

SCHEDULE_FORM = {
    "name": "proof", "func": "os.system", "hook": "", "args": "'id > proof.txt'", "kwargs": "",
    "schedule_type": "I", "minutes": "1", "repeats": "-1", "next_run_0": "2026-11-01",
    "next_run_1": "10:00:00", "cron": "", "cluster": "", "intended_date_kwarg": "",
}  # fmt: skip


@pytest.fixture
def schedule(db):
    spec = SCHEDULES[0]
    return Schedule.objects.create(
        name=spec.name, func=spec.func, schedule_type=Schedule.MINUTES, minutes=1
    )


@pytest.fixture
def task_record(db):
    now = timezone.now()
    return Task.objects.create(
        id="a" * 32, name="alpha-bravo", func=SCHEDULES[-1].func, args=(), kwargs={},
        started=now, stopped=now, success=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("role", "view", "edit"),
    [
        ("viewer", 302, 302),
        ("operator", 302, 302),
        ("admin_user", 200, 403),
        ("superuser", 200, 200),
    ],
)
def test_schedules_and_task_records_are_read_only_below_superuser(
    client, request, role, view, edit, schedule, task_record
):
    client.force_login(request.getfixturevalue(role))
    changelists = [
        "admin:django_q_schedule_changelist",
        "admin:django_q_success_changelist",
        "admin:django_q_failure_changelist",
        "admin:django_q_ormq_changelist",
    ]
    for name in changelists:
        assert client.get(reverse(name)).status_code == view, name
    assert client.get(reverse("admin:django_q_schedule_add")).status_code == edit
    change = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    posted = client.post(change, {**SCHEDULE_FORM, "func": schedule.func, "name": "renamed"})
    assert posted.status_code in ({edit} if edit != 200 else {302})
    schedule.refresh_from_db()
    assert schedule.name == ("renamed" if role == "superuser" else SCHEDULES[0].name)


def test_the_admin_role_cannot_resubmit_tasks(client, admin_user, task_record):
    client.force_login(admin_user)
    changelist = reverse("admin:django_q_success_changelist")
    page = client.get(changelist)
    assert b"resubmit" not in page.content.lower()
    client.post(changelist, {"action": "resubmit_selected", "_selected_action": [task_record.pk]})
    client.post(changelist, {"action": "resubmit_task", "_selected_action": [task_record.pk]})
    assert not OrmQ.objects.exists()


def test_a_superusers_resubmit_is_audited_and_only_for_upstreams_tasks(
    client, superuser, task_record
):
    hostile = Task.objects.create(
        id="b" * 32, name="charlie-delta", func="os.system", args=("id",), kwargs={},
        started=timezone.now(), stopped=timezone.now(), success=True,
    )  # fmt: skip
    client.force_login(superuser)
    changelist = reverse("admin:django_q_success_changelist")
    selected = [task_record.pk, hostile.pk]
    client.post(changelist, {"action": "resubmit_selected", "_selected_action": selected})
    assert OrmQ.objects.count() == 1
    assert OrmQ.objects.get().func() == task_record.func
    row = AuditLog.objects.get(action="task.resubmit")
    assert (row.actor, row.target_id, row.after) == (
        "root",
        task_record.pk,
        {"func": task_record.func},
    )


def test_a_schedule_running_os_system_is_refused_in_the_admin(client, superuser):
    client.force_login(superuser)
    response = client.post(reverse("admin:django_q_schedule_add"), SCHEDULE_FORM)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "not one of Upstream's task entry points" in errors["func"][0]
    with_hook = {**SCHEDULE_FORM, "func": SCHEDULES[0].func, "hook": "os.system"}
    response = client.post(reverse("admin:django_q_schedule_add"), with_hook)
    assert "hook" in response.context["adminform"].form.errors
    assert not Schedule.objects.exists()


def test_a_superusers_schedule_changes_are_audited(client, superuser, schedule):
    client.force_login(superuser)
    change = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    form = {**SCHEDULE_FORM, "name": schedule.name, "func": schedule.func, "minutes": "5"}
    response = client.post(change, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    row = AuditLog.objects.get(action="update", target_type="django_q.Schedule")
    assert row.actor == "root"
    assert row.after["minutes"] == 5 and row.before["minutes"] == 1
    client.post(reverse("admin:django_q_schedule_delete", args=[schedule.pk]), {"post": "yes"})
    assert AuditLog.objects.filter(action="delete", target_type="django_q.Schedule").exists()


# --- hostile changelist filters ---------------------------------------------------------------


def _date_fields(model) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if isinstance(f, models.DateField)]


HOSTILE = [
    ("year", "-1"), ("year", "9" * 20), ("year", "0"), ("year", "10000"), ("year", "1e3"),
    ("month", "13"), ("day", "0"), ("year__in", "2026,-1"), ("year__gt", "-99999999999"),
    ("week_day", "99"),
]  # fmt: skip


def test_every_admin_changelist_refuses_hostile_date_filters_instead_of_failing(client, superuser):
    client.force_login(superuser)
    walked = 0
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for name in _date_fields(model):
            for part, value in HOSTILE:
                response = client.get(url, {f"{name}__{part}": value})
                assert response.status_code == 400, (url, name, part, value)
                walked += 1
            # Valid parts, but past the end of the calendar once the hierarchy adds a day.
            end = {f"{name}__year": "9999", f"{name}__month": "12", f"{name}__day": "31"}
            assert client.get(url, end).status_code == 400
            # A time that is year 1 here but year 0 in UTC.
            early = client.get(url, {f"{name}__gte": "0001-01-01T00:00:00+05:00"})
            assert early.status_code == 400, (url, name)
            assert client.get(url, {f"{name}__year": "2026"}).status_code == 200, (url, name)
        if model_admin.date_hierarchy:
            assert client.get(url, {f"{model_admin.date_hierarchy}__year": "-1"}).status_code == 400
    assert walked > 100  # every model with a date: records, configuration, accounts, tasks


# --- deleting configuration with history ------------------------------------------------------


@pytest.fixture
def history(integration):
    """An integration with everything that accumulates under it."""
    for i in range(3):
        RequestLog.objects.create(
            integration=integration, method="GET", host="api.paubox.net", path=f"/v1/{i}",
            status=500, outcome="server_error", latency_ms=1.0,
        )  # fmt: skip
    MetricBucket.objects.create(
        integration=integration, grain="hour", start=timezone.now(), endpoint="GET /v1/{id}",
        source="client", total=3,
    )  # fmt: skip
    probe = Probe.objects.create(integration=integration, name="Health", url="https://x.test/h")
    for ok in (True, False):
        ProbeResult.objects.create(probe=probe, ok=ok)
    ProbeFlip.objects.create(probe=probe, from_state="up", to_state="down")
    rule = AlertRule.objects.create(name="Errors", kind="error_rate", integration=integration)
    alert = Alert.objects.create(rule=rule, integration=integration, fingerprint="f", title="t")
    Notification.objects.create(alert=alert, kind="email", recipient="ops@example.com")
    return integration


@pytest.mark.parametrize("role", ["admin_user", "superuser"])
def test_deleting_an_integration_deletes_its_history_after_counting_it(
    client, request, role, history
):
    earlier = audit.record("test.event", actor="system", target_repr="before the delete")
    user = request.getfixturevalue(role)
    client.force_login(user)
    delete = reverse("admin:monitoring_integration_delete", args=[history.pk])
    page = client.get(delete)
    assert page.status_code == 200
    assert not page.context["perms_lacking"]
    counts = dict(page.context["model_count"])
    assert counts["request logs"] == 3 and counts["probe results"] == 2
    assert counts["alerts"] == 1 and counts["notifications"] == 1
    assert b"/v1/0" not in page.content  # counted, not listed row by row
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not Integration.objects.filter(pk=history.pk).exists()
    for model in (RequestLog, MetricBucket, Probe, ProbeResult, Alert):
        assert not model.objects.exists(), model
    row = AuditLog.objects.get(action="delete", target_type="monitoring.Integration")
    assert row.actor == user.username
    assert row.after["deleted_with"]["monitoring.RequestLog"] == 3
    assert row.after["deleted_with"]["monitoring.ProbeResult"] == 2
    assert row.before["slug"] == "paubox"
    assert AuditLog.objects.filter(pk=earlier.pk).exists()
    assert audit.verify_chain().ok


def test_deleting_a_probe_with_results_and_a_bulk_delete_work(client, admin_user, history):
    probe = Probe.objects.get()
    client.force_login(admin_user)
    delete = reverse("admin:monitoring_probe_delete", args=[probe.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not ProbeResult.objects.exists()
    bulk = {"action": "delete_selected", "_selected_action": [history.pk], "post": "yes"}
    assert client.post(reverse("admin:monitoring_integration_changelist"), bulk).status_code == 302
    assert not Integration.objects.exists() and not RequestLog.objects.exists()
    deleted = AuditLog.objects.filter(action="delete").values_list("target_type", flat=True)
    assert sorted(deleted) == ["monitoring.Integration", "monitoring.Probe"]


def test_records_are_still_never_deleted_on_their_own(client, superuser, history):
    client.force_login(superuser)
    log = RequestLog.objects.first()
    delete = reverse("admin:monitoring_requestlog_delete", args=[log.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert RequestLog.objects.count() == 3
