"""Issue 17: profile, time zone and onboarding."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0011_sdk")]

    operations = []
