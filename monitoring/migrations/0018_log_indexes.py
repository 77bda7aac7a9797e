"""Issue 19: RequestLog indexes tuned for COPY speed (filled by the ingest work if it needs them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0017_rollup_grains")]

    operations = []
