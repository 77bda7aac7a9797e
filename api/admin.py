"""API keys in the admin: created with the key shown once, listed by prefix, revoked."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from api.models import PREFIX_LENGTH, ApiKey, Scope, generate_key, hash_key
from monitoring import audit
from monitoring.admin import UpstreamAdminMixin

_AUDITED = ("name", "scopes", "allow_create", "expires")


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "integrations", "allow_create", "expires")


def _facts(key: ApiKey) -> dict:
    # Never the hash, let alone the key: the prefix names it.
    facts = {name: getattr(key, name) for name in _AUDITED}
    facts["expires"] = key.expires.isoformat() if key.expires else None
    return {"prefix": key.prefix, **facts}


@admin.register(ApiKey)
class ApiKeyAdmin(UpstreamAdminMixin, admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "scopes", "last_used", "expires", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_by", "created", "last_used", "revoked")
    filter_horizontal = ("integrations",)
    actions = ("revoke",)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the audit log keeps naming the prefix

    def save_model(self, request, obj, form, change):
        if change:
            before = _facts(ApiKey.objects.get(pk=obj.pk))
            super().save_model(request, obj, form, change)
            audit.record(
                "api_key.update", request=request, target=obj, before=before, after=_facts(obj)
            )
            return
        key = generate_key()
        obj.prefix, obj.key_hash = key[:PREFIX_LENGTH], hash_key(key)
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
        audit.record("api_key.create", request=request, target=obj, after=_facts(obj))
        messages.warning(request, f"The new API key, shown this once (copy it now): {key}")

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        now = timezone.now()
        for key in queryset.filter(revoked__isnull=True):
            ApiKey.objects.filter(pk=key.pk).update(revoked=now)
            audit.record(
                "api_key.revoke", request=request, target=key, after={"prefix": key.prefix}
            )
        messages.success(request, "Revoked.")
