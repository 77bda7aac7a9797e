"""The onboarding checklist: it ticks itself as Upstream sees each step done, and goes away."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse

from api.models import ApiKey
from dashboard import onboarding
from monitoring.models import Channel, Integration, JobState, Probe, RequestLog
from tests.monitoring.alerts.alertkit import SmtpSink


def checklist(client) -> str:
    html = client.get(reverse("overview")).content.decode()
    start = html.find('id="onboarding"')
    return html[start : html.find("</section>", start)] if start >= 0 else ""


def done_steps(html: str) -> set[str]:
    import re

    return set(re.findall(r'<li class="done" data-step="([a-z_]+)"', html))


@pytest.fixture
def smtp(settings):
    sink = SmtpSink()
    sink.configure(settings)
    sink.start()
    yield sink
    sink.stop()


def test_a_fresh_install_shows_every_step_to_do(client, viewer):
    viewer.email = ""
    viewer.save()
    client.force_login(viewer)
    html = checklist(client)
    assert "Get started" in html and "0 of 6 done" in html
    assert done_steps(html) == set()


def test_steps_tick_themselves_as_the_product_sees_them(client, admin_user):
    admin_user.email = "me@example.com"
    admin_user.save()
    client.force_login(admin_user)
    assert done_steps(checklist(client)) == {"email"}
    paubox = Integration.objects.create(name="Paubox", slug="paubox", environment="production")
    assert "integration=&quot;paubox&quot;" in checklist(client)  # the snippets name it
    Probe.objects.create(integration=paubox, name="up", url="https://93.184.216.34/")
    RequestLog.objects.create(
        integration=paubox, method="GET", host="h", path="/x", status=200, outcome="ok",
        latency_ms=1, source="ingest",
    )  # fmt: skip
    assert done_steps(checklist(client)) == {"email", "integration", "probe", "first_call"}


def test_a_probe_call_is_not_a_first_call(client, viewer, integration):
    RequestLog.objects.create(
        integration=integration, method="GET", host="h", path="/x", status=200, outcome="ok",
        latency_ms=1, source="probe",
    )  # fmt: skip
    client.force_login(viewer)
    assert "first_call" not in done_steps(checklist(client))


def test_the_test_email_goes_through_smtp_and_ticks_delivery(client, viewer, smtp):
    viewer.email = "viewer@example.com"
    viewer.save()
    client.force_login(viewer)
    response = client.post(reverse("onboarding_test_email"))
    assert response.status_code == 302
    (message,) = smtp.messages
    assert message["To"] == "viewer@example.com"
    assert "delivery" in done_steps(checklist(client))


def test_a_failed_test_email_does_not_tick(client, viewer, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    viewer.email = "viewer@example.com"
    viewer.save()
    client.force_login(viewer)
    client.post(reverse("onboarding_test_email"))
    assert not JobState.objects.filter(name=onboarding.EMAIL_OK_MARKER).exists()


def test_make_key_shows_the_key_once_and_stores_only_its_hash(client, admin_user):
    client.force_login(admin_user)
    response = client.post(reverse("onboarding_key"))
    html = response.content.decode()
    key = ApiKey.objects.get()
    assert key.scopes == ["ingest"]
    text = html[html.index("Bearer ") + 7 :].split("&quot;")[0]
    assert text.startswith(key.prefix) and key.matches(text)
    assert "no-store" in response["Cache-Control"]
    for session in Session.objects.all():
        assert text not in str(session.get_decoded())
    assert text not in checklist(client)  # never shown again


def test_viewers_cannot_make_keys(client, viewer):
    client.force_login(viewer)
    assert client.post(reverse("onboarding_key")).status_code == 403
    assert not ApiKey.objects.exists()


def test_the_checklist_goes_away_when_done_or_hidden(client, admin_user, django_assert_num_queries):
    admin_user.email = "me@example.com"
    admin_user.save()
    client.force_login(admin_user)
    client.post(reverse("onboarding_hide"))
    assert checklist(client) == ""
    client.logout()
    client.force_login(admin_user)
    paubox = Integration.objects.create(name="Paubox", slug="paubox", environment="production")
    Probe.objects.create(integration=paubox, name="up", url="https://93.184.216.34/")
    RequestLog.objects.create(
        integration=paubox, method="GET", host="h", path="/x", status=200, outcome="ok",
        latency_ms=1,
    )  # fmt: skip
    Channel.objects.create(name="ops", kind="email", settings={"to": "ops@example.com"})
    JobState.objects.create(name=onboarding.EMAIL_OK_MARKER)
    assert checklist(client) == ""
    assert JobState.objects.filter(name=onboarding.DONE_MARKER).exists()


def test_the_checklist_costs_one_query_and_none_once_done(
    client, viewer, integration, django_assert_num_queries
):
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user, request.session = viewer, {}
    with django_assert_num_queries(1):
        assert onboarding.checklist(request) is not None
    JobState.objects.create(name=onboarding.DONE_MARKER)
    with django_assert_num_queries(1):
        assert onboarding.checklist(request) is None
