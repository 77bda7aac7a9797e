"""Every dashboard URL: anonymous → sign-in, signed in without a role → 403, a Viewer → 200."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import PASSWORD

# Screens that are not behind a role: signing in and out.
PUBLIC = {"login", "logout"}


def _named_patterns(patterns=None, prefix=""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            if getattr(p, "app_name", None) == "admin":
                continue
            if getattr(p.urlconf_module, "__name__", p.urlconf_name) == "api.urls":
                continue  # machine-facing: API keys, not sessions (tests/api covers access)
            yield from _named_patterns(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern) and p.name and p.name not in PUBLIC:
            yield p


def _argless_get_screens():
    """URL names that take no arguments and answer GET (actions are tested with their views)."""
    names = []
    for p in _named_patterns():
        if p.pattern.regex.groups:
            continue
        view = p.callback
        allowed = getattr(view, "__wrapped__", None) and getattr(view, "allowed_methods", None)
        names.append(p.name)
        del allowed
    return sorted(set(names))


SCREENS = _argless_get_screens()


def test_there_are_screens_to_check():
    assert "overview" in SCREENS


@pytest.mark.parametrize("name", SCREENS)
def test_anonymous_visitors_are_sent_to_sign_in(client, db, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", SCREENS)
def test_a_user_without_a_role_is_refused(client, outsider, name):
    client.force_login(outsider)
    response = client.get(reverse(name))
    assert response.status_code == 403


# Argument-free screens only an Admin opens (tests/dashboard/test_*_views.py cover them).
ADMIN_SCREENS = {
    "alert_rule_new", "integration_new", "maintenance", "api_keys", "probe_new", "channel_new",
    "onboarding_key", "webhook_new", "configuration", "configuration_export",
}  # fmt: skip


@pytest.mark.parametrize("name", [s for s in SCREENS if s not in ADMIN_SCREENS])
def test_a_viewer_can_read_every_screen(client, viewer, name):
    client.force_login(viewer)
    response = client.get(reverse(name))
    assert response.status_code in {200, 405}, name


def test_sign_in_then_overview_shows_the_shell(client, viewer, integration):
    response = client.post(
        reverse("login"), {"username": "vera", "password": PASSWORD}, follow=True
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Sign out" in body and "Viewer" in body
    assert "Paubox" in body


def test_pages_carry_a_strict_content_security_policy(client, viewer):
    client.force_login(viewer)
    csp = client.get(reverse("overview"))["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


def test_unknown_urls_get_a_friendly_404_without_a_traceback(client, viewer):
    client.force_login(viewer)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Traceback" not in response.content


# --- Screens with arguments, and every action -------------------------------------------------

# Screens that need more than the Viewer role (their access tests are below).
CONFIGURE_SCREENS = {
    "alert_rule_new", "alert_rule", "integration_edit", "integration_preview", "integration_delete",
    "probe_edit", "channel_edit", "channel_delete",
}  # fmt: skip


def _object_urls(integration, firing_alert, probe, auth_rule):
    from monitoring.models import Channel, RequestLog

    channel = Channel.objects.create(name="ops", kind="email", settings={"addresses": ["a@b.co"]})

    row = RequestLog.objects.create(
        integration=integration, method="GET", host="h", path="/x", status=200, outcome="ok",
        latency_ms=1,
    )  # fmt: skip
    return {
        "integration": reverse("integration", args=[integration.pk]),
        "scorecard": reverse("scorecard", args=[integration.pk]),
        "probe_edit": reverse("probe_edit", args=[probe.pk]),
        "channel_edit": reverse("channel_edit", args=[channel.pk]),
        "channel_delete": reverse("channel_delete", args=[channel.pk]),
        "request_log_entry": reverse("request_log_entry", args=[row.pk]),
        "alert": reverse("alert", args=[firing_alert.pk]),
        "probe": reverse("probe", args=[probe.pk]),
        "alert_rule": reverse("alert_rule", args=[auth_rule.pk]),
        "integration_edit": reverse("integration_edit", args=[integration.pk]),
        "integration_preview": reverse("integration_preview", args=[integration.pk]),
        "integration_delete": reverse("integration_delete", args=[integration.pk]),
    }


@pytest.fixture
def object_urls(integration, firing_alert, probe, auth_rule):
    return _object_urls(integration, firing_alert, probe, auth_rule)


def test_every_screen_with_arguments_is_covered(object_urls):
    with_args = {p.name for p in _named_patterns() if p.pattern.regex.groups}
    actions = set(ACTIONS) | set(OBJECT_ACTIONS)
    assert with_args == set(object_urls) | actions


def test_screens_with_arguments_send_anonymous_visitors_to_sign_in(client, object_urls):
    for url in object_urls.values():
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login"))


def test_screens_with_arguments_refuse_a_user_without_a_role(client, outsider, object_urls):
    client.force_login(outsider)
    for url in object_urls.values():
        assert client.get(url).status_code == 403, url


def test_a_viewer_reads_screens_with_arguments_but_not_rule_editing(client, viewer, object_urls):
    client.force_login(viewer)
    for name, url in object_urls.items():
        expected = 403 if name in CONFIGURE_SCREENS else 200
        assert client.get(url).status_code == expected, url
    assert client.get(reverse("alert_rule_new")).status_code == 403


def test_an_operator_cannot_edit_rules_but_an_admin_can(client, operator, admin_user, auth_rule):
    client.force_login(operator)
    assert client.get(reverse("alert_rule", args=[auth_rule.pk])).status_code == 403
    assert client.post(reverse("alert_rule_new"), {"name": "x"}).status_code == 403
    client.force_login(admin_user)
    assert client.get(reverse("alert_rule", args=[auth_rule.pk])).status_code == 200
    assert client.get(reverse("alert_rule_new")).status_code == 200


# name -> (POST data, status an Operator gets).
ACTIONS = {
    "alert_acknowledge": ({"note": "on it"}, 302),
    "alert_resolve": ({}, 302),
    "alert_silence": ({"duration": "1h", "reason": "deploy"}, 302),
    "probe_run": ({}, 302),
}


def _action_url(name, firing_alert, probe):
    return reverse(name, args=[probe.pk if name.startswith("probe") else firing_alert.pk])


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_actions_send_anonymous_visitors_to_sign_in(client, firing_alert, probe, name):
    data, _ = ACTIONS[name]
    response = client.post(_action_url(name, firing_alert, probe), data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_a_viewer_is_refused_every_action(client, viewer, firing_alert, probe, name):
    client.force_login(viewer)
    data, _ = ACTIONS[name]
    url = _action_url(name, firing_alert, probe)
    assert client.post(url, data).status_code == 403
    assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403
    firing_alert.refresh_from_db()
    assert firing_alert.state == "firing"


# An Operator's probe run reaches a real server (and the recorder): see test_probes_views.
@pytest.mark.parametrize("name", sorted(set(ACTIONS) - {"probe_run"}))
def test_an_operator_may_take_every_action(client, operator, firing_alert, probe, name):
    client.force_login(operator)
    data, expected = ACTIONS[name]
    response = client.post(_action_url(name, firing_alert, probe), data)
    assert response.status_code == expected


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_actions_answer_only_post(client, operator, firing_alert, probe, name):
    client.force_login(operator)
    assert client.get(_action_url(name, firing_alert, probe)).status_code == 405


def test_actions_need_the_csrf_token(operator, firing_alert):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    response = strict.post(reverse("alert_acknowledge", args=[firing_alert.pk]), {"note": ""})
    assert response.status_code == 403
    firing_alert.refresh_from_db()
    assert firing_alert.state == "firing"


# Actions on objects other than an alert or a probe; their success paths are tested with their
# views (tests/dashboard/test_alert_views.py, test_channel_views.py).
def _silence(firing_alert):
    import datetime as dt

    from django.utils import timezone

    from monitoring.models import Silence

    return Silence.objects.create(
        integration=firing_alert.integration, ends_at=timezone.now() + dt.timedelta(hours=1)
    )


def _channel(_alert):
    from monitoring.models import Channel

    return Channel.objects.create(kind="email", name="Ops", settings={"to": "ops@example.com"})


def _maintenance(_alert):
    import datetime as dt

    from django.utils import timezone

    from monitoring.models import MaintenanceWindow

    now = timezone.now()
    return MaintenanceWindow.objects.create(
        name="Deploy", starts_at=now, ends_at=now + dt.timedelta(hours=1)
    )


def _api_key(_alert):
    from api.models import ApiKey

    return ApiKey.issue(name="billing", scopes=["ingest"])[0]


def _webhook(alert):
    from monitoring.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(integration=alert.integration, scheme="none")


OBJECT_ACTIONS = {
    "webhook_toggle": _webhook,
    "silence_end": _silence,
    "channel_test": _channel,
    "integration_pause": lambda alert: alert.integration,
    "maintenance_end": _maintenance,
    "api_key_revoke": _api_key,
}


@pytest.mark.parametrize("name", sorted(OBJECT_ACTIONS))
def test_object_actions_refuse_anonymous_visitors_and_viewers(client, viewer, firing_alert, name):
    url = reverse(name, args=[OBJECT_ACTIONS[name](firing_alert).pk])
    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 405
