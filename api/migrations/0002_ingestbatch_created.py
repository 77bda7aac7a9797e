"""IngestBatch ids are pruned by age (api.apps registers them with monitoring.retention)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ingestbatch",
            index=models.Index(fields=["created"], name="api_batch_created"),
        ),
    ]
