"""Issue 19: RequestLog without the integration foreign-key constraint (PostgreSQL) and its redundant index.

Measured with bench/ingest.py's rows, COPY into a copy of a day partition: the deferred
constraint's per-row trigger cost a quarter to a third of COPY's time (1.34–1.45× the
rows/s without it), and the single-column index on integration_id duplicated the leading
column of reqlog_integration_time (which serves every "one integration" read and the
cascade's delete). storage.insert_rows checks and KEY SHARE-locks a batch's integrations
once instead, and Integration's pre_delete lock (models.core.lock_out_writers) orders a
delete after the batches in flight, so no orphan rows.

The other indexes stay: reqlog_created (created, id) serves the request log's walk over
all integrations, newest first (0.2 ms for a page on 420 k rows of one day, 517 ms as a
parallel scan and sort without it); the BRIN on created is a few pages per day.

SQLite keeps its constraint in the table's definition (dropping it means rebuilding the
whole table; the recorder does not check it per row there anyway): only the index goes.
"""

from django.db import migrations, models

TABLE = "monitoring_requestlog"
INDEX = "monitoring_requestlog_integration_id_3c2e73da"
FK = "monitoring_requestlo_integration_id_3c2e73da_fk_monitorin"


def _fk_names(cursor) -> list[str]:
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'f' "
        "AND confrelid = to_regclass('monitoring_integration')",
        [TABLE],
    )
    return [row[0] for row in cursor.fetchall()]


def forwards(apps, schema_editor) -> None:
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            # On the partitioned table: PostgreSQL drops the partitions' copies with it.
            for name in _fk_names(cursor):
                cursor.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT {quote(name)}")
        cursor.execute(f"DROP INDEX IF EXISTS {quote(INDEX)}")


def backwards(apps, schema_editor) -> None:
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {quote(INDEX)} ON {TABLE} (integration_id)")
        if schema_editor.connection.vendor == "postgresql" and not _fk_names(cursor):
            cursor.execute(
                f"ALTER TABLE {TABLE} ADD CONSTRAINT {quote(FK)} FOREIGN KEY (integration_id) "
                "REFERENCES monitoring_integration (id) DEFERRABLE INITIALLY DEFERRED"
            )


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0017_rollup_grains")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="requestlog",
                    name="integration",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="monitoring.integration",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
        ),
    ]
