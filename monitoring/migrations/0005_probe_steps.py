"""Issue 14: multi-step and status-page probes, and the incident and version-drift rule kinds."""

from django.db import migrations, models

_RULE_KINDS = [
    ("auth_spike", "Failed-auth spike (401/403)"),
    ("signin_failures", "Failed sign-ins to Upstream"),
    ("error_rate", "Error rate"),
    ("latency", "Latency percentile"),
    ("probe_down", "Probe down"),
    ("rate_limit", "Rate-limit headroom"),
    ("cert_expiry", "Certificate expiry"),
    ("deprecation", "Deprecation seen"),
    ("traffic_stopped", "Traffic stopped"),
    ("provider_incident", "Provider reports an incident"),
    ("version_drift", "API version drift"),
]


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0004_otlp_hosts")]

    operations = [
        migrations.AddField(
            model_name="probe",
            name="incident_name",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="probe",
            name="incident_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="probe",
            name="incident_url",
            field=models.URLField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="probe",
            name="kind",
            field=models.CharField(
                choices=[
                    ("http", "HTTP request (single or multi-step)"),
                    ("statuspage", "Provider status page (Atlassian Statuspage JSON)"),
                ],
                default="http",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="probe",
            name="steps",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Optional steps run in order instead of the single request above "
                "(sign in, then call); values extracted from one step feed the next as "
                "{{name}}.",
            ),
        ),
        migrations.AlterField(
            model_name="alertrule",
            name="kind",
            field=models.CharField(choices=_RULE_KINDS, max_length=20),
        ),
        migrations.AlterField(
            model_name="silence",
            name="rule_kind",
            field=models.CharField(blank=True, choices=_RULE_KINDS, max_length=20),
        ),
    ]
