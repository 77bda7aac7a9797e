"""Admin list of unmapped OTLP hosts, with "create integration for this host" (audited)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.utils.text import slugify

from monitoring import audit, hostmap
from monitoring.admin import ReadOnlyAdmin
from monitoring.models import Environment, Integration, UnmappedHost

__all__ = ["UnmappedHostAdmin", "create_integration_for"]


def create_integration_for(host: str, request=None) -> Integration | None:
    """A production integration claiming ``host`` (None if its slug is taken there)."""
    slug = slugify(host.replace(".", "-"))[:100] or "host"
    with transaction.atomic():
        if Integration.objects.filter(slug=slug, environment=Environment.PRODUCTION).exists():
            return None
        integration = Integration.objects.create(
            name=host[:100],
            slug=slug,
            environment=Environment.PRODUCTION,
            base_url=f"https://{host}"[:500],
            host_patterns=host,
        )
        audit.record(
            "integration.created_from_host",
            request=request,
            target=integration,
            after={"slug": slug, "environment": integration.environment, "host_patterns": host},
        )
        UnmappedHost.objects.filter(host=host).delete()
    hostmap.clear()
    return integration


@admin.register(UnmappedHost)
class UnmappedHostAdmin(ReadOnlyAdmin):
    list_display = ["host", "spans", "service", "first_seen", "last_seen"]
    search_fields = ["host", "service"]
    actions = ["create_integrations"]

    @admin.action(description="Create integration for this host", permissions=["create"])
    def create_integrations(self, request, queryset):
        for unmapped in queryset[:50]:
            integration = create_integration_for(unmapped.host, request)
            if integration is None:
                self.message_user(
                    request,
                    f"{unmapped.host}: an integration with that slug exists; add the host to "
                    "its host patterns instead.",
                    messages.WARNING,
                )
            else:
                self.message_user(request, f"Created {integration} for {unmapped.host}.")

    def has_create_permission(self, request) -> bool:
        return request.user.has_perm("monitoring.add_integration")
