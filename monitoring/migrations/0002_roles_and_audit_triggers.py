"""Create the three roles as groups, and make the audit table append-only in the database."""

from django.db import migrations

ROLES = ("Viewer", "Operator", "Admin")
TABLE = "monitoring_auditlog"

SQLITE_UP = [
    # upstream_audit_writable() exists only on Upstream's own connections (monitoring.audit),
    # so any other client fails too; it returns 1 only inside audit.maintenance().
    f"""CREATE TRIGGER auditlog_no_update BEFORE UPDATE ON {TABLE}
        WHEN upstream_audit_writable() = 0
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER auditlog_no_delete BEFORE DELETE ON {TABLE}
        WHEN upstream_audit_writable() = 0
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS auditlog_no_update",
    "DROP TRIGGER IF EXISTS auditlog_no_delete",
]
PG_UP = [
    """CREATE OR REPLACE FUNCTION upstream_auditlog_append_only() RETURNS trigger AS $$
       BEGIN
         RAISE EXCEPTION 'audit log is append-only: % refused', TG_OP;
       END; $$ LANGUAGE plpgsql""",
    f"""CREATE TRIGGER auditlog_no_update BEFORE UPDATE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION upstream_auditlog_append_only()""",
    f"""CREATE TRIGGER auditlog_no_delete BEFORE DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION upstream_auditlog_append_only()""",
]
PG_DOWN = [
    f"DROP TRIGGER IF EXISTS auditlog_no_update ON {TABLE}",
    f"DROP TRIGGER IF EXISTS auditlog_no_delete ON {TABLE}",
    "DROP FUNCTION IF EXISTS upstream_auditlog_append_only()",
]


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in {"sqlite": SQLITE_UP, "postgresql": PG_UP}.get(vendor, []):
        # No parameters: the PL/pgSQL body's % is RAISE's placeholder, not the driver's.
        schema_editor.execute(sql, params=None)


def remove_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in {"sqlite": SQLITE_DOWN, "postgresql": PG_DOWN}.get(vendor, []):
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("monitoring", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
