"""Issue 14: the size of a batch the caller sent (Paubox bulk messages), flagged past the preset's limit."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0015_caller_facts")]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="batch_size",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="flags",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="e.g. batch_too_large",
                max_length=100,
            ),
        ),
    ]
