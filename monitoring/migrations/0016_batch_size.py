"""Issue 14: the size of a batch the caller sent (Paubox bulk messages), flagged past the preset's limit."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0015_caller_facts")]

    operations = []
