"""Issue 13: token budgets apart from request budgets."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0008_presets")]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="token_limit",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="token_remaining",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="token_reset",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
