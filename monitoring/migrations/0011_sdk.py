"""Issue 13: streams and SDK attempts as they really happened."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0010_webhooks")]

    operations = []
