"""Issue 15: the webhook rule kinds (signature failures, webhooks stopped, delivery lag).

The longest new value is 26 characters, so the kind columns widen from 20 to 40.
"""

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
    ("webhook_signature_failures", "Webhook signature failures"),
    ("webhooks_stopped", "Webhooks stopped"),
    ("webhook_lag", "Webhook delivery lag"),
]


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0012_dashboard")]

    operations = [
        migrations.AlterField(
            model_name="alertrule",
            name="kind",
            field=models.CharField(choices=_RULE_KINDS, max_length=40),
        ),
        migrations.AlterField(
            model_name="silence",
            name="rule_kind",
            field=models.CharField(blank=True, choices=_RULE_KINDS, max_length=40),
        ),
    ]
