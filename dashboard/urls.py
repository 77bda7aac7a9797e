"""URL map: one URL per dashboard screen, its HTMX actions, sign-in/out and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.access import throttled_signin
from dashboard.views import alerts, channels, health, logs, probes

urlpatterns = [
    path("", health.overview, name="overview"),
    path("integrations/<int:pk>/", health.integration_detail, name="integration"),
    path("requests/", logs.request_log, name="request_log"),
    path("requests/<int:pk>/", logs.request_log_entry, name="request_log_entry"),
    path("alerts/", alerts.alert_list, name="alerts"),
    path("alerts/<int:pk>/", alerts.alert_detail, name="alert"),
    path("alerts/<int:pk>/acknowledge/", alerts.alert_acknowledge, name="alert_acknowledge"),
    path("alerts/<int:pk>/resolve/", alerts.alert_resolve, name="alert_resolve"),
    path("alerts/<int:pk>/silence/", alerts.alert_silence, name="alert_silence"),
    path("alerts/silences/<int:pk>/end/", alerts.silence_end, name="silence_end"),
    path("alerts/channels/", channels.channel_list, name="channels"),
    path("alerts/channels/<int:pk>/test/", channels.channel_test, name="channel_test"),
    path("alerts/rules/", alerts.rule_list, name="alert_rules"),
    path("alerts/rules/new/", alerts.rule_edit, name="alert_rule_new"),
    path("alerts/rules/<int:pk>/", alerts.rule_edit, name="alert_rule"),
    path("probes/", probes.probe_list, name="probes"),
    path("probes/<int:pk>/", probes.probe_detail, name="probe"),
    path("probes/<int:pk>/run/", probes.probe_run, name="probe_run"),
    path(
        "accounts/login/",
        throttled_signin(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Ahead of the admin's own URLs, so its sign-in form is throttled like the dashboard's.
    path("admin/login/", throttled_signin(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
]

handler400 = "dashboard.errors.bad_request"
handler403 = "dashboard.errors.forbidden"
handler404 = "dashboard.errors.not_found"
handler500 = "dashboard.errors.server_error"
