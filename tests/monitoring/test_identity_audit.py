"""Each account, role, permission and password change leaves an audit row; schedules are bounded."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.contrib.auth.models import Group, Permission, User
from django.core import checks
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from django_q.models import Schedule

from monitoring import audit, identity
from monitoring.checks import check_schedules
from monitoring.models import AuditLog
from monitoring.tasks import SCHEDULES
from tests.conftest import PASSWORD


class CheapPBKDF2(PBKDF2PasswordHasher):
    """A stronger hasher than the accounts were made with, so signing in re-hashes."""

    iterations = 2


def _rows(since: int = 0) -> list[AuditLog]:
    return list(AuditLog.objects.filter(seq__gt=since).order_by("seq"))


def _last_seq() -> int:
    return AuditLog.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def _nothing_secret_stored(*secrets: str) -> None:
    everything = str(list(AuditLog.objects.values()))
    for secret in secrets:
        assert secret not in everything
    assert "md5$" not in everything and "pbkdf2" not in everything


def test_creating_an_account_and_granting_a_role_are_recorded(db):
    user = User.objects.create_user("nina", email="nina@example.com", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Admin"))
    created, granted = _rows()
    assert (created.action, created.actor, created.target_type) == (
        identity.USER_CREATE, "system", "auth.User",
    )  # fmt: skip
    assert created.after["email"] == "nina@example.com" and created.after["is_superuser"] is False
    assert "password" not in created.after
    assert (granted.action, granted.target_id) == ("user.groups.add", str(user.pk))
    assert granted.after == {"groups": ["Admin"]}
    _nothing_secret_stored(PASSWORD, user.password)


def test_flags_email_and_removal_of_roles_are_recorded_with_before_and_after(viewer):
    since = _last_seq()
    viewer.is_superuser, viewer.email = True, "vera@example.com"
    viewer.save()
    viewer.groups.remove(Group.objects.get(name="Viewer"))
    viewer.groups.add(Group.objects.get(name="Operator"))
    viewer.groups.clear()
    rows = _rows(since)
    assert [r.action for r in rows] == [
        "user.update", "user.groups.remove", "user.groups.add", "user.groups.remove",
    ]  # fmt: skip
    assert rows[0].before == {"email": "", "is_superuser": False}
    assert rows[0].after == {"email": "vera@example.com", "is_superuser": True}
    assert rows[3].after == {"groups": ["Operator"]}


def test_membership_changed_from_the_groups_side_is_recorded_per_user(viewer, operator):
    since = _last_seq()
    admins = Group.objects.get(name="Admin")
    admins.user_set.add(viewer, operator)
    admins.user_set.clear()
    rows = [(r.action, r.target_repr, r.after) for r in _rows(since)]
    assert sorted(rows) == sorted(
        [
            ("user.groups.add", "vera", {"groups": ["Admin"]}),
            ("user.groups.add", "otto", {"groups": ["Admin"]}),
            ("user.groups.remove", "vera", {"groups": ["Admin"]}),
            ("user.groups.remove", "otto", {"groups": ["Admin"]}),
        ]
    )


def test_user_and_group_permissions_are_recorded(viewer):
    since = _last_seq()
    perm = Permission.objects.get(codename="change_schedule")
    viewer.user_permissions.add(perm)
    operators = Group.objects.get(name="Operator")
    operators.permissions.add(perm)
    operators.permissions.remove(perm)
    perm.group_set.add(operators)
    rows = [(r.action, r.target_type, r.after) for r in _rows(since)]
    permissions = {"permissions": ["django_q.change_schedule"]}
    assert rows == [
        ("user.permissions.add", "auth.User", permissions),
        ("group.permissions.add", "auth.Group", permissions),
        ("group.permissions.remove", "auth.Group", permissions),
        ("group.permissions.add", "auth.Group", permissions),
    ]


def test_groups_created_renamed_and_deleted_are_recorded(viewer):
    since = _last_seq()
    wheel = Group.objects.create(name="wheel")
    wheel.name = "sudoers"
    wheel.save()
    viewer.groups.add(wheel)
    wheel.delete()
    rows = _rows(since)
    assert [r.action for r in rows] == [
        "group.create", "group.update", "user.groups.add", "group.delete",
    ]  # fmt: skip
    assert rows[1].before == {"name": "wheel"} and rows[1].after == {"name": "sudoers"}
    assert rows[3].before == {"name": "sudoers", "members": ["vera"]}


def test_a_password_change_is_recorded_without_the_password_or_its_hash(viewer):
    since = _last_seq()
    old_hash = viewer.password
    viewer.set_password("new secret 123456")
    viewer.save()
    viewer.set_unusable_password()
    viewer.save(update_fields=["password"])
    # A hash put in place directly, as a forged form or a script would.
    forged = User.objects.get(pk=viewer.pk)
    forged.password = make_password("forged 13579")
    forged.save(update_fields=["password"])
    rows = _rows(since)
    assert [(r.action, r.after) for r in rows] == [
        (identity.USER_PASSWORD, {"usable": True}),
        (identity.USER_PASSWORD, {"usable": False}),
        (identity.USER_PASSWORD, {"usable": True}),
    ]
    _nothing_secret_stored("new secret 123456", "forged 13579", old_hash, forged.password)


def test_admin_changes_name_the_admin_and_where_they_came_from(client, admin_user, viewer):
    since = _last_seq()
    client.force_login(admin_user)
    change = reverse("admin:auth_user_change", args=[viewer.pk])
    form = {
        "username": "vera", "email": "v@example.com", "is_active": "on",
        "groups": [Group.objects.get(name="Operator").pk],
    }  # fmt: skip
    meta = {"REMOTE_ADDR": "198.51.100.7"}
    assert client.post(change, form, **meta).status_code == 302
    new = "chosen by ada 24680"
    password = reverse("admin:auth_user_password_change", args=[viewer.pk])
    form = {"password1": new, "password2": new, "usable_password": "true"}
    assert client.post(password, form, **meta).status_code == 302
    rows = [r for r in _rows(since) if r.action != audit.Actions.SIGNIN]
    assert [r.action for r in rows] == [
        "user.update", "user.groups.remove", "user.groups.add", identity.USER_PASSWORD,
    ]  # fmt: skip
    assert {(r.actor, r.actor_id, r.ip) for r in rows} == {
        ("ada", str(admin_user.pk), "198.51.100.7")
    }
    _nothing_secret_stored(new, PASSWORD)


def test_a_user_deleted_in_the_admin_is_recorded(client, superuser, viewer):
    client.force_login(superuser)
    delete = reverse("admin:auth_user_delete", args=[viewer.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    row = AuditLog.objects.get(action=identity.USER_DELETE)
    assert (row.actor, row.target_repr, row.before["username"]) == ("root", "vera", "vera")


def test_signing_in_records_the_sign_in_only(client, viewer, settings):
    # last_login changes and a cost upgrade re-hashes the password: neither is a change.
    settings.PASSWORD_HASHERS = [
        "tests.monitoring.test_identity_audit.CheapPBKDF2",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    since = _last_seq()
    old_hash = viewer.password
    client.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    viewer.refresh_from_db()
    assert viewer.password != old_hash and viewer.password.startswith("pbkdf2")
    assert [r.action for r in _rows(since)] == [audit.Actions.SIGNIN]


def test_the_chain_verifies_after_identity_changes(client, superuser, viewer, capsys):
    viewer.groups.add(Group.objects.get(name="Admin"))
    viewer.set_password("x" * 20)
    viewer.save()
    Group.objects.create(name="auditors").delete()
    call_command("verify_audit_log")
    assert "rows verified" in capsys.readouterr().out


# --- schedules --------------------------------------------------------------------------------


def test_saving_a_schedule_that_runs_os_system_is_refused(db):
    with pytest.raises(ValidationError, match="not one of Upstream's task entry points"):
        Schedule.objects.create(name="proof", func="os.system", args="'id > proof.txt'")
    with pytest.raises(ValidationError, match="hook"):
        Schedule.objects.create(name="hooked", func=SCHEDULES[0].func, hook="os.system")
    mine = Schedule.objects.create(name=SCHEDULES[0].name, func=SCHEDULES[0].func)
    mine.func = "subprocess.run"
    with pytest.raises(ValidationError):
        mine.save()
    assert list(Schedule.objects.values_list("func", flat=True)) == [SCHEDULES[0].func]


def test_the_system_check_refuses_schedules_written_around_the_model(db):
    # bulk_create sends no pre_save: what raw SQL or an older release would have left.
    Schedule.objects.bulk_create(
        [
            Schedule(name="proof", func="os.system", args="'id'"),
            Schedule(name=SCHEDULES[0].name, func=SCHEDULES[0].func),
        ]
    )
    errors = check_schedules(None, databases=["default"])
    assert [e.id for e in errors] == ["upstream.E010"]
    assert "proof" in errors[0].msg and "os.system" in errors[0].msg
    found = checks.run_checks(databases=["default"], tags=[checks.Tags.database])
    assert "upstream.E010" in {e.id for e in found}
    # Not run without a database (e.g. by every management command), like Django's own.
    assert "upstream.E010" not in {e.id for e in checks.run_checks()}


def test_the_system_check_passes_upstreams_own_schedules(db):
    for spec in SCHEDULES:
        Schedule.objects.create(name=spec.name, func=spec.func)
    assert check_schedules(None, databases=["default"]) == []


def test_a_schedule_still_naming_a_former_path_runs_but_is_flagged(db):
    old, new = next(iter(identity.former_task_funcs().items()))
    Schedule.objects.create(name="made before the move", func=old)
    (warning,) = check_schedules(None, databases=["default"])
    assert warning.id == "upstream.W010" and new in warning.msg


def test_changing_ones_own_password_in_the_admin_is_recorded(client, admin_user):
    client.force_login(admin_user)
    since = _last_seq()
    new = "my own new one 11223"
    form = {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    assert client.post(reverse("admin:password_change"), form).status_code == 302
    (row,) = _rows(since)
    assert (row.action, row.target_id) == (identity.USER_PASSWORD, str(admin_user.pk))
    _nothing_secret_stored(new, PASSWORD)
