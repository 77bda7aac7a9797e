"""Issue 19's schema: the quarter-hour bucket grain, then PostgreSQL partitioning."""

from django.db import migrations, models

from monitoring.partitions import partition_table, unpartition_table


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0006_channels")]

    operations = [
        # Only the choices change: "15m" fits the column, so no table rewrite.
        migrations.AlterField(
            model_name="metricbucket",
            name="grain",
            field=models.CharField(
                choices=[
                    ("minute", "Minute"),
                    ("15m", "Quarter-hour"),
                    ("hour", "Hour"),
                    ("day", "Day"),
                ],
                max_length=6,
            ),
        ),
        # partitioning operations follow (issue 19, PostgreSQL)
        # RequestLog partitioned by day; on SQLite both directions do nothing.
        migrations.RunPython(partition_table, unpartition_table, elidable=False),
    ]
