"""Issue 12, OTLP: integrations' host patterns, the unmapped-host counts, the otlp source."""

import django.utils.timezone
from django.db import migrations, models

import monitoring.models.hosts


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0003_rename_rollupstate_jobstate")]

    operations = [
        migrations.CreateModel(
            name="UnmappedHost",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=255, unique=True)),
                ("spans", models.PositiveBigIntegerField(default=0)),
                ("first_seen", models.DateTimeField(default=django.utils.timezone.now)),
                ("last_seen", models.DateTimeField(default=django.utils.timezone.now)),
                ("service", models.CharField(blank=True, max_length=200)),
            ],
            options={"ordering": ["-last_seen"]},
        ),
        migrations.AddField(
            model_name="integration",
            name="host_patterns",
            field=models.TextField(
                blank=True,
                help_text="Hosts whose OpenTelemetry spans belong here, one per line, e.g. api.stripe.com or *.paubox.net.",
                validators=[monitoring.models.hosts.validate_host_patterns],
            ),
        ),
        migrations.AlterField(
            model_name="metricbucket",
            name="source",
            field=models.CharField(
                choices=[
                    ("client", "Client"),
                    ("probe", "Probe"),
                    ("ingest", "Ingest"),
                    ("otlp", "OpenTelemetry"),
                ],
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="requestlog",
            name="source",
            field=models.CharField(
                choices=[
                    ("client", "Client"),
                    ("probe", "Probe"),
                    ("ingest", "Ingest"),
                    ("otlp", "OpenTelemetry"),
                ],
                default="client",
                max_length=10,
            ),
        ),
    ]
