"""Issue 14: the integration's preset."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0007_scale")]

    operations = []
