"""Issue 17: profile, time zone and onboarding."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0011_sdk")]

    operations = [
        migrations.AddField(
            model_name="notificationpreference",
            name="time_zone",
            field=models.CharField(
                blank=True,
                help_text="Pages show times in this zone; empty means UTC.",
                max_length=64,
            ),
        ),
    ]
