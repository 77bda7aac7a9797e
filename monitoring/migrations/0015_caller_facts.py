"""Issue 18: what the caller's request said — a credential fingerprint, a version header's
name, a token's age (never the credential or a value)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0014_scorecard")]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="key_fingerprint",
            field=models.CharField(blank=True, db_default="", default="", max_length=16),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="version_header",
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="token_age_s",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="KeySighting",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("fingerprint", models.CharField(max_length=16)),
                ("first_seen", models.DateTimeField()),
                ("last_seen", models.DateTimeField()),
                (
                    "integration",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="monitoring.integration",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("integration", "fingerprint"), name="keysighting_one_per_key"
                    )
                ],
            },
        ),
    ]
