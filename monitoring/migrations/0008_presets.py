"""Issue 14: the integration's preset."""

from django.db import migrations, models

import monitoring.models.core


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0007_scale")]

    operations = [
        migrations.AddField(
            model_name="integration",
            name="preset",
            field=models.CharField(
                blank=True,
                help_text="The provider preset this integration was built from (error shapes, "
                "diagnoses, templates), blank for none.",
                max_length=40,
                validators=[monitoring.models.core.validate_preset],
            ),
        ),
    ]
