"""Issue 18: stored scorecards."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0013_webhook_rules")]

    operations = [
        migrations.AddField(
            model_name="notificationpreference",
            name="scorecard_digest",
            field=models.BooleanField(
                default=False,
                help_text="A weekly e-mail listing the scorecard checks that changed.",
            ),
        ),
        migrations.CreateModel(
            name="Scorecard",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("computed_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("score", models.PositiveSmallIntegerField(blank=True, null=True)),
                (
                    "grade",
                    models.CharField(
                        help_text="A–F, or — when nothing could be graded", max_length=2
                    ),
                ),
                ("checks", models.JSONField(default=list)),
                (
                    "changes",
                    models.JSONField(default=list, help_text="Checks whose grade moved in a week"),
                ),
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
                "indexes": [
                    models.Index(fields=["integration", "computed_at"], name="scorecard_latest")
                ],
            },
        ),
    ]
