"""Issue 15: the webhook rule kinds."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0012_dashboard")]

    operations = []
