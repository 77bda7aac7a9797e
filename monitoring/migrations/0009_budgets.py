"""Issue 13: token budgets apart from request budgets."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0008_presets")]

    operations = []
