"""RollupState was never the rollup's: it holds job locks, counters and markers."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_roles_and_audit_triggers")]

    operations = [migrations.RenameModel(old_name="RollupState", new_name="JobState")]
