"""The three roles: who may do what, and the Admin group's permissions kept exact after migrate."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from monitoring.models import AuditLog
from monitoring.roles import Action, Role, can, role_label, sync_role_permissions


def _codenames(group: Group) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


@pytest.fixture
def admin_group(db) -> Group:
    return Group.objects.get(name=Role.ADMIN)


def test_the_admin_group_cannot_touch_the_task_queue_or_groups(admin_group):
    held = _codenames(admin_group)
    queue = {p for p in held if p.startswith("django_q.")}
    assert queue and all(p.startswith("django_q.view_") for p in queue)
    for forbidden in ("auth.change_group", "auth.add_group", "auth.delete_group",
                      "auth.change_permission", "auth.add_permission"):  # fmt: skip
        assert forbidden not in held
    assert {"auth.add_user", "auth.change_user", "monitoring.change_integration"} <= held
    assert {"api.add_apikey", "api.change_apikey"} <= held  # Admins manage API keys


def test_sync_takes_back_what_an_older_release_granted_and_says_so_once(admin_group):
    old_grant = Permission.objects.filter(content_type__app_label__in=["auth", "django_q"])
    admin_group.permissions.add(*old_grant)
    assert "django_q.change_schedule" in _codenames(admin_group)
    before = AuditLog.objects.count()
    sync_role_permissions()
    held = _codenames(admin_group)
    assert "django_q.change_schedule" not in held and "auth.change_group" not in held
    row = AuditLog.objects.get(action="role.permissions_sync")
    assert row.target_repr == "Admin" and row.actor == "system"
    assert "django_q.add_schedule" in row.before["removed"] and row.after == {"added": []}
    # Only that summary: no row per permission.
    assert AuditLog.objects.count() == before + 1
    sync_role_permissions()
    assert AuditLog.objects.count() == before + 1


@pytest.mark.parametrize(
    ("role", "view", "operate", "configure"),
    [
        ("viewer", True, False, False),
        ("operator", True, True, False),
        ("admin_user", True, True, True),
        ("superuser", True, True, True),
        ("outsider", False, False, False),
    ],
)
def test_each_role_may_do_what_it_says(request, role, view, operate, configure):
    user = request.getfixturevalue(role)
    assert can(user, Action.VIEW) is view
    assert can(user, Action.OPERATE) is operate
    assert can(user, Action.CONFIGURE) is configure
    assert role_label(user) in {"Viewer", "Operator", "Admin", "Superuser", "No role"}
