"""Admin for webhook endpoints with their secrets inline: audited, secrets shown by fingerprint."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from monitoring import audit
from monitoring.admin import AuditedAdmin
from monitoring.models import WebhookEndpoint, WebhookSample, WebhookSecret
from monitoring.webhooks import schemes
from monitoring.webhooks import secrets as hook_secrets

__all__ = ["WebhookEndpointAdmin", "WebhookSecretForm"]

# What the audit log keeps of a secret: never the ciphertext either.
_SECRET_AUDIT_FIELDS = ["endpoint", "reference", "fingerprint", "not_after"]


class WebhookSecretForm(forms.ModelForm):
    """A reference (``${NAME}``) or a value typed once: stored encrypted, never shown again."""

    value = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Or paste the secret itself: it is stored encrypted (UPSTREAM_SECRETS_KEY) "
        "and only its fingerprint is shown.",
    )

    class Meta:
        model = WebhookSecret
        fields = ["reference", "value", "not_after"]

    def clean(self):
        data = super().clean()
        reference, value = data.get("reference", "").strip(), data.get("value", "")
        instance = self.instance
        if reference and value:
            raise ValidationError("Give a ${NAME} reference or a value, not both.")
        if not reference and not value and not (instance.pk and instance.encrypted):
            raise ValidationError("Give a ${NAME} reference or the secret's value.")
        endpoint = getattr(instance, "endpoint", None) if instance.endpoint_id else None
        scheme = schemes.SCHEMES.get(endpoint.scheme) if endpoint else None
        if reference:
            try:
                data["reference"] = f"${{{hook_secrets.parse_reference(reference)}}}"
            except ValidationError as exc:
                self.add_error("reference", exc)
        if value and scheme is not None:
            problem = scheme.check_secret(value)
            if problem:
                self.add_error("value", f"This secret cannot work with {scheme.label}: {problem}.")
        return data

    def save(self, commit=True):
        secret = super().save(commit=False)
        value = self.cleaned_data.get("value")
        try:
            if value:
                secret.reference = ""
                secret.encrypted = hook_secrets.encrypt(value)
                secret.fingerprint = hook_secrets.fingerprint(value)
            elif secret.reference:
                secret.encrypted = ""
                secret.fingerprint = hook_secrets.live_fingerprint(secret)[:40]
        except ValidationError as exc:
            # No encryption key: refuse the form rather than store anything in clear.
            raise ValidationError({"value": exc.messages}) from None
        if commit:
            secret.save()
        return secret


class WebhookSecretInline(admin.TabularInline):
    model = WebhookSecret
    form = WebhookSecretForm
    extra = 1
    fields = ["reference", "value", "not_after", "fingerprint_now", "created"]
    readonly_fields = ["fingerprint_now", "created"]

    @admin.display(description="Fingerprint")
    def fingerprint_now(self, obj):
        return hook_secrets.live_fingerprint(obj) if obj and obj.pk else "—"


class WebhookSampleInline(admin.TabularInline):
    """The opt-in samples (scrubbed, capped): read-only, like every record."""

    model = WebhookSample
    extra = 0
    fields = ["event_type", "body", "created"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditedAdmin):
    list_display = [
        "__str__",
        "scheme",
        "receiving_path",
        "active",
        "last_delivery_at",
        "cadence_s",
    ]
    list_filter = ["scheme", "active", "integration"]
    search_fields = ["name", "integration__name", "integration__slug"]
    fields = [
        "integration",
        "name",
        "scheme",
        "receiving_path",
        "header_name",
        "signature_encoding",
        "timestamp_header",
        "replay_window_s",
        "event_types",
        "max_silence_s",
        "sample_bodies",
        "active",
        "last_delivery_at",
        "cadence_s",
    ]
    readonly_fields = ["receiving_path", "last_delivery_at", "cadence_s"]
    inlines = [WebhookSecretInline, WebhookSampleInline]

    @admin.display(description="Receiving path")
    def receiving_path(self, obj):
        return format_html("<code>{}</code>", obj.path) if obj and obj.pk else "(after saving)"

    def save_formset(self, request, form, formset, change):
        if formset.model is not WebhookSecret:
            return super().save_formset(request, form, formset, change)
        # From the database: the forms' instances already carry the posted values.
        pks = [f.instance.pk for f in formset.initial_forms if f.instance.pk]
        befores = {
            row.pk: audit.snapshot(row, _SECRET_AUDIT_FIELDS)
            for row in WebhookSecret.objects.filter(pk__in=pks)
        }
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                audit.record(
                    audit.Actions.DELETE,
                    request=request,
                    target=deleted.instance,
                    before=befores.get(deleted.instance.pk),
                )
        saved = formset.save()
        for obj in saved:
            audit.record_change(request, obj, befores.get(obj.pk), fields=_SECRET_AUDIT_FIELDS)
        return saved
