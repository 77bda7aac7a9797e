"""URL map: one URL per dashboard screen, its HTMX actions, sign-in/out and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.access import throttled_signin
from dashboard.views import (
    account,
    alerts,
    channels,
    configuration,
    health,
    integrations,
    logs,
    onboarding,
    probe_editor,
    probes,
    scorecard,
    webhooks,
)

urlpatterns = [
    # The machine-facing URLs first (api/v1/, otlp/, hooks/: no screen starts so): ingest
    # and webhook deliveries then cost a few pattern matches, not one per screen.
    path("", include("api.urls")),
    path("", health.overview, name="overview"),
    path("integrations/<int:pk>/", health.integration_detail, name="integration"),
    path("integrations/<int:pk>/scorecard/", scorecard.scorecard_page, name="scorecard"),
    path("integrations/new/", integrations.integration_new, name="integration_new"),
    path("integrations/<int:pk>/edit/", integrations.integration_edit, name="integration_edit"),
    path(
        "integrations/<int:pk>/preview/",
        integrations.integration_preview,
        name="integration_preview",
    ),
    path("integrations/<int:pk>/pause/", integrations.integration_pause, name="integration_pause"),
    path(
        "integrations/<int:pk>/delete/",
        integrations.integration_delete,
        name="integration_delete",
    ),
    path("requests/", logs.request_log, name="request_log"),
    path("requests/<int:pk>/", logs.request_log_entry, name="request_log_entry"),
    path("requests/export/", logs.request_log_export, name="request_log_export"),
    path("alerts/", alerts.alert_list, name="alerts"),
    path("alerts/<int:pk>/", alerts.alert_detail, name="alert"),
    path("alerts/<int:pk>/acknowledge/", alerts.alert_acknowledge, name="alert_acknowledge"),
    path("alerts/<int:pk>/resolve/", alerts.alert_resolve, name="alert_resolve"),
    path("alerts/<int:pk>/silence/", alerts.alert_silence, name="alert_silence"),
    path("alerts/silences/<int:pk>/end/", alerts.silence_end, name="silence_end"),
    path("alerts/channels/", channels.channel_list, name="channels"),
    path("alerts/channels/new/", channels.channel_edit, name="channel_new"),
    path("alerts/channels/<int:pk>/edit/", channels.channel_edit, name="channel_edit"),
    path("alerts/channels/<int:pk>/delete/", channels.channel_delete, name="channel_delete"),
    path("alerts/channels/<int:pk>/test/", channels.channel_test, name="channel_test"),
    path("alerts/rules/", alerts.rule_list, name="alert_rules"),
    path("alerts/rules/new/", alerts.rule_edit, name="alert_rule_new"),
    path("alerts/rules/<int:pk>/", alerts.rule_edit, name="alert_rule"),
    path("onboarding/test-email/", onboarding.test_email, name="onboarding_test_email"),
    path("onboarding/key/", onboarding.make_key, name="onboarding_key"),
    path("onboarding/hide/", onboarding.hide, name="onboarding_hide"),
    path("configuration/", configuration.configuration, name="configuration"),
    path("configuration/export/", configuration.export_download, name="configuration_export"),
    path("webhooks/", webhooks.webhook_list, name="webhooks"),
    path("webhooks/new/", webhooks.webhook_new, name="webhook_new"),
    path("webhooks/<int:pk>/toggle/", webhooks.webhook_toggle, name="webhook_toggle"),
    path("probes/", probes.probe_list, name="probes"),
    path("probes/new/", probe_editor.probe_edit, name="probe_new"),
    path("probes/<int:pk>/", probes.probe_detail, name="probe"),
    path("probes/<int:pk>/edit/", probe_editor.probe_edit, name="probe_edit"),
    path("probes/<int:pk>/run/", probes.probe_run, name="probe_run"),
    path("maintenance/", account.maintenance_list, name="maintenance"),
    path("maintenance/<int:pk>/end/", account.maintenance_end, name="maintenance_end"),
    path("api-keys/", account.api_key_list, name="api_keys"),
    path("api-keys/<int:pk>/revoke/", account.api_key_revoke, name="api_key_revoke"),
    path("profile/", account.profile, name="profile"),
    path(
        "accounts/login/",
        throttled_signin(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Ahead of the admin's own URLs, so its sign-in form is throttled like the dashboard's.
    path("admin/login/", throttled_signin(admin.site.login)),
    path("admin/", admin.site.urls),
]

handler400 = "dashboard.errors.bad_request"
handler403 = "dashboard.errors.forbidden"
handler404 = "dashboard.errors.not_found"
handler500 = "dashboard.errors.server_error"
