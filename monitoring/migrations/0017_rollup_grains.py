"""Issue 19: rollup grains for week and month windows (filled by the overview work if it needs them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0016_batch_size")]

    operations = []
