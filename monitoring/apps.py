"""App config for the monitoring engine."""

from __future__ import annotations

from django.apps import AppConfig
from django.contrib import admin
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers and system checks register themselves on import.
        from monitoring import audit, checks, identity, retention  # noqa: F401
        from monitoring.alerts import rules  # noqa: F401
        from monitoring.roles import sync_role_permissions

        # After migrate, when Django has created every model's permissions.
        post_migrate.connect(sync_role_permissions, sender=self)

        # The SDK's capture (upstream_client) records through this process's recorder.
        from upstream_client import sink

        from monitoring.local_sink import LocalSink

        sink.set_default(LocalSink())


class UpstreamAdminConfig(admin_apps.AdminConfig):
    """Django's admin, entered by role (see UpstreamAdminSite), not only by the staff flag."""

    default = False  # named explicitly in INSTALLED_APPS
    # Not in monitoring/admin.py: building the site while that module registers into it
    # would make two sites.
    default_site = "monitoring.apps.UpstreamAdminSite"


class UpstreamAdminSite(admin.AdminSite):
    site_header = "Upstream administration"
    site_title = "Upstream admin"
    index_title = "Configuration and records"

    def has_permission(self, request):
        from monitoring.roles import Action, can

        # Admins configure through the admin even without the staff flag; what they may do
        # per model comes from the Admin group's permissions (roles.sync_role_permissions).
        return request.user.is_active and (
            request.user.is_staff or can(request.user, Action.CONFIGURE)
        )
