"""The audit log is append-only in the model, the admin and the database, and hash-chained."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from monitoring import audit
from monitoring.models import AuditLog, Integration
from tests.conftest import PASSWORD

TRIGGERS = ["auditlog_no_update", "auditlog_no_delete"]


def _rows(n: int = 4) -> list[AuditLog]:
    return [
        audit.record("test.event", actor="tester", target_repr=f"thing {i}", after={"i": i})
        for i in range(n)
    ]


def _raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _drop_triggers():
    """What an attacker with database access would do first."""
    for name in TRIGGERS:
        if connection.vendor == "postgresql":
            _raw(f"DROP TRIGGER {name} ON monitoring_auditlog")
        else:
            _raw(f"DROP TRIGGER {name}")


def test_records_chain_each_row_to_the_previous_hash(db):
    first, second = _rows(2)
    assert first.seq == 1 and first.prev_hash == audit.GENESIS
    assert second.prev_hash == first.hash
    assert len(second.hash) == 64
    assert audit.verify_chain().ok


def test_verify_command_passes_on_an_intact_chain(db, capsys):
    _rows(5)
    call_command("verify_audit_log")
    assert "5 rows verified" in capsys.readouterr().out


def test_verify_command_names_the_edited_row(db):
    rows = _rows(4)
    _drop_triggers()
    _raw("UPDATE monitoring_auditlog SET actor = %s WHERE id = %s", ["mallory", rows[2].id])
    with pytest.raises(CommandError, match=rf"seq=3 \(id={rows[2].id}\).*edited"):
        call_command("verify_audit_log")


def test_verify_command_catches_a_removed_row(db):
    rows = _rows(4)
    _drop_triggers()
    _raw("DELETE FROM monitoring_auditlog WHERE id = %s", [rows[1].id])
    with pytest.raises(CommandError, match=r"seq=3 .*rows 2–2 removed"):
        call_command("verify_audit_log")


def test_verify_command_catches_reordered_rows(db):
    rows = _rows(4)
    _drop_triggers()
    # Swap the positions of rows 2 and 3 (seq is unique, so go through a free value).
    _raw("UPDATE monitoring_auditlog SET seq = 1000 WHERE id = %s", [rows[1].id])
    _raw("UPDATE monitoring_auditlog SET seq = 2 WHERE id = %s", [rows[2].id])
    _raw("UPDATE monitoring_auditlog SET seq = 3 WHERE id = %s", [rows[1].id])
    report = audit.verify_chain()
    assert not report.ok
    assert report.bad_seq == 2 and report.bad_id == rows[2].id


def test_verify_command_catches_a_forged_row_with_a_recomputed_own_hash(db):
    rows = _rows(3)
    _drop_triggers()
    # Rewriting one row and its own hash still breaks the link from the next row.
    forged = {**AuditLog.objects.filter(id=rows[1].id).values().get(), "actor": "mallory"}
    new_hash = audit._chain_hash(forged["prev_hash"], forged)
    _raw(
        "UPDATE monitoring_auditlog SET actor = %s, hash = %s WHERE id = %s",
        ["mallory", new_hash, rows[1].id],
    )
    report = audit.verify_chain()
    assert not report.ok and report.bad_seq == 3
    assert "previous-hash" in report.reason


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE monitoring_auditlog SET actor = 'mallory'",
        "DELETE FROM monitoring_auditlog",
    ],
)
def test_database_triggers_reject_update_and_delete(db, sql):
    _rows(2)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw(sql)
    assert AuditLog.objects.filter(actor="tester").count() == 2


def test_the_model_refuses_update_and_delete(db):
    (row,) = _rows(1)
    with pytest.raises(PermissionError):
        row.save()
    with pytest.raises(PermissionError):
        row.delete()
    with pytest.raises(PermissionError):
        AuditLog.objects.filter(pk=row.pk).update(actor="x")
    with pytest.raises(PermissionError):
        AuditLog.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditLog(action="forged", seq=99, prev_hash="", hash="").save()


def test_a_failed_sign_in_is_recorded_with_username_and_ip_but_never_the_password(client, viewer):
    secret = "hunter2-never-stored"
    response = client.post(
        reverse("login"),
        {"username": "vera", "password": secret},
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT="pytest-browser/1.0",
    )
    assert response.status_code == 200
    row = AuditLog.objects.get(action=audit.Actions.SIGNIN_FAILED)
    assert row.actor == "vera"
    assert row.ip == "203.0.113.9"
    assert row.user_agent == "pytest-browser/1.0"
    everything = str(list(AuditLog.objects.values()))
    assert secret not in everything


def test_sign_in_and_sign_out_are_recorded(client, viewer):
    already = AuditLog.objects.count()  # the fixture's account creation and role grant
    client.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    client.post(reverse("logout"))
    actions = list(AuditLog.objects.order_by("seq").values_list("action", "actor"))[already:]
    assert actions == [(audit.Actions.SIGNIN, "vera"), (audit.Actions.SIGNOUT, "vera")]


def test_record_change_stores_only_changed_fields_and_masks_secrets(db, admin_user):
    integration = Integration.objects.create(name="Stripe", slug="stripe")
    before = audit.snapshot(integration)
    integration.owner_email = "pay@example.com"
    integration.save()
    row = audit.record_change(None, integration, before)
    assert row.action == audit.Actions.UPDATE
    assert row.before == {"owner_email": ""} and row.after == {"owner_email": "pay@example.com"}
    masked = audit._jsonable({"api_key": "sk_live_abc", "headers": {"Authorization": "Bearer x"}})
    assert masked == {"api_key": audit.MASK, "headers": {"Authorization": audit.MASK}}
