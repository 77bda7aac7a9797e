"""App config for the web face."""

from django.apps import AppConfig
from django.core.checks import Tags, register


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from dashboard.middleware import check_debug_is_local

        register(check_debug_is_local, Tags.security)
