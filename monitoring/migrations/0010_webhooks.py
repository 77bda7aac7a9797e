"""Issue 15: webhook endpoints, their secrets and deliveries."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import monitoring.models.webhooks


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0009_budgets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="metricbucket",
            name="source",
            field=models.CharField(
                choices=[
                    ("client", "Client"),
                    ("probe", "Probe"),
                    ("ingest", "Ingest"),
                    ("otlp", "OpenTelemetry"),
                    ("webhook", "Webhook"),
                ],
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="requestlog",
            name="source",
            field=models.CharField(
                choices=[
                    ("client", "Client"),
                    ("probe", "Probe"),
                    ("ingest", "Ingest"),
                    ("otlp", "OpenTelemetry"),
                    ("webhook", "Webhook"),
                ],
                default="client",
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="WebhookEndpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(blank=True, max_length=100)),
                (
                    "token",
                    models.CharField(
                        default=monitoring.models.webhooks.new_token,
                        editable=False,
                        max_length=64,
                        unique=True,
                    ),
                ),
                (
                    "scheme",
                    models.CharField(
                        choices=[
                            ("standard", "Standard Webhooks"),
                            ("svix", "Svix"),
                            ("stripe", "Stripe"),
                            ("github", "GitHub"),
                            ("hmac_sha256", "Generic HMAC-SHA256"),
                            ("none", "None (secret URL only)"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "header_name",
                    models.CharField(
                        blank=True,
                        help_text="Generic HMAC only: the header carrying the signature, e.g. X-Signature.",
                        max_length=100,
                    ),
                ),
                (
                    "signature_encoding",
                    models.CharField(
                        choices=[("hex", "Hex"), ("base64", "Base64")], default="hex", max_length=10
                    ),
                ),
                (
                    "timestamp_header",
                    models.CharField(
                        blank=True,
                        help_text="Generic HMAC only: a header with the send time (epoch seconds); when set it is signed as '<timestamp>.<body>' and checked against the replay window.",
                        max_length=100,
                    ),
                ),
                (
                    "replay_window_s",
                    models.PositiveIntegerField(
                        default=300, help_text="Deliveries signed longer ago than this are refused."
                    ),
                ),
                (
                    "event_types",
                    models.TextField(
                        blank=True, help_text="Event types expected, one per line; blank means any."
                    ),
                ),
                (
                    "max_silence_s",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="'Webhooks stopped' after this long without a delivery (blank: learned).",
                        null=True,
                    ),
                ),
                ("cadence_s", models.FloatField(blank=True, editable=False, null=True)),
                ("last_delivery_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "sample_bodies",
                    models.BooleanField(
                        default=False,
                        help_text="Keep one capped, redacted sample body per event type (off: only type and id).",
                    ),
                ),
                ("active", models.BooleanField(default=True)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "integration",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_endpoints",
                        to="monitoring.integration",
                    ),
                ),
            ],
            options={
                "ordering": ["integration__name", "name", "id"],
            },
        ),
        migrations.CreateModel(
            name="WebhookSample",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_type", models.CharField(max_length=100)),
                ("body", models.TextField()),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="samples",
                        to="monitoring.webhookendpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["endpoint", "event_type"],
            },
        ),
        migrations.CreateModel(
            name="WebhookSecret",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "reference",
                    models.CharField(
                        blank=True,
                        help_text="${NAME} of an environment variable holding the secret.",
                        max_length=200,
                    ),
                ),
                (
                    "encrypted",
                    models.TextField(
                        blank=True,
                        editable=False,
                        help_text="The secret encrypted with UPSTREAM_SECRETS_KEY.",
                    ),
                ),
                ("fingerprint", models.CharField(blank=True, editable=False, max_length=40)),
                (
                    "not_after",
                    models.DateTimeField(
                        blank=True,
                        help_text="End of this secret's use (the old one in a rotation).",
                        null=True,
                    ),
                ),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="secrets",
                        to="monitoring.webhookendpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["endpoint", "-created", "-id"],
            },
        ),
        migrations.CreateModel(
            name="WebhookSeen",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=64)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="monitoring.webhookendpoint",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="webhookendpoint",
            index=models.Index(
                condition=models.Q(("active", True)),
                fields=["integration"],
                name="webhook_endpoint_active",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhooksample",
            constraint=models.UniqueConstraint(
                fields=("endpoint", "event_type"), name="webhook_sample_per_type"
            ),
        ),
        migrations.AddConstraint(
            model_name="webhooksecret",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("reference", ""), _negated=True),
                    models.Q(("encrypted", ""), _negated=True),
                    _connector="OR",
                ),
                name="webhook_secret_has_value",
            ),
        ),
        migrations.AddIndex(
            model_name="webhookseen",
            index=models.Index(fields=["created"], name="webhook_seen_created"),
        ),
        migrations.AddConstraint(
            model_name="webhookseen",
            constraint=models.UniqueConstraint(fields=("endpoint", "key"), name="webhook_seen_key"),
        ),
    ]
