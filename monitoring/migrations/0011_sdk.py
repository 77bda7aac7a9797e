"""Issue 13: streams and SDK attempts as they really happened."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0010_webhooks")]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="first_byte_ms",
            field=models.FloatField(blank=True, help_text="To the first body byte", null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="duration_ms",
            field=models.FloatField(blank=True, help_text="To the end of the body", null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="streamed",
            field=models.BooleanField(
                default=False, db_default=False, help_text="An event stream (SSE, NDJSON)"
            ),
        ),
    ]
