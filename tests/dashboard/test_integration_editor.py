"""The integration editor: create (blank or from a preset), edit, preview, pause, delete."""

from __future__ import annotations

import html

import pytest
from django.test import Client
from django.urls import reverse

from monitoring import presets
from monitoring.models import AuditLog, Integration, RequestLog
from tests.dashboard.conftest import make_log, record
from tests.dashboard.test_fuzz_screens import HOSTILE


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _form(**changes) -> dict:
    data = {
        "name": "Acme Mail", "slug": "", "environment": "production",
        "base_url": "https://api.acme.test/v2", "owner_email": "ops@example.com",
        "expected_api_version": "", "require_https": "on", "host_patterns": "api.acme.test",
        "path_templates": "/v2/users/{user}", "redact_names": "x-acme-key", "active": "on",
    }  # fmt: skip
    return data | changes


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


# --- access ---------------------------------------------------------------------------------


def _urls(integration) -> dict[str, str]:
    return {
        "new": reverse("integration_new"),
        "edit": reverse("integration_edit", args=[integration.pk]),
        "preview": reverse("integration_preview", args=[integration.pk]),
        "delete": reverse("integration_delete", args=[integration.pk]),
    }


def test_anonymous_visitors_are_sent_to_sign_in(client, integration):
    for url in _urls(integration).values():
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login"))
    response = client.post(reverse("integration_pause", args=[integration.pk]), {"active": "0"})
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("role", ["viewer", "operator", "outsider"])
def test_only_admins_may_open_or_use_the_editor(client, request, integration, role):
    client.force_login(request.getfixturevalue(role))
    for url in _urls(integration).values():
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("integration_new"), _form()).status_code == 403
    pause = reverse("integration_pause", args=[integration.pk])
    assert client.post(pause, {"active": "0"}).status_code == 403
    delete = reverse("integration_delete", args=[integration.pk])
    assert client.post(delete, {"confirm": "paubox"}).status_code == 403
    assert Integration.objects.filter(pk=integration.pk, active=True).exists()
    assert Integration.objects.count() == 1


def test_an_admin_opens_every_editor_page(admin, integration):
    for url in _urls(integration).values():
        assert admin.get(url).status_code == 200, url


def test_the_navigation_offers_add_integration_to_admins_only(client, viewer, admin_user):
    client.force_login(viewer)
    assert reverse("integration_new") not in client.get(reverse("overview")).content.decode()
    client.force_login(admin_user)
    body = client.get(reverse("overview")).content.decode()
    assert f'href="{reverse("integration_new")}"' in body


# --- create ---------------------------------------------------------------------------------


def test_a_blank_integration_is_created_with_a_slug_from_its_name_and_audited(admin):
    response = admin.post(reverse("integration_new"), _form())
    created = Integration.objects.get(name="Acme Mail")
    assert response.status_code == 302
    assert response["Location"] == reverse("integration", args=[created.pk])
    assert created.slug == "acme-mail"
    assert created.host_pattern_list() == ["api.acme.test"]
    assert created.explicit_templates() == ["/v2/users/{user}"]
    assert created.extra_redactions() == ["x-acme-key"]
    entry = AuditLog.objects.get(action="create", target_id=str(created.pk))
    assert entry.actor == "ada"
    assert entry.after["slug"] == "acme-mail"


def test_a_preset_fills_in_the_form(admin):
    preset = presets.get("paubox")
    response = admin.get(reverse("integration_new"), {"preset": "paubox"})
    body = _text(response)
    assert response.status_code == 200
    assert preset.base_url in body
    for template in preset.path_templates(preset.base_url):
        assert template in body
    assert "Replace the" in body  # its base URL has parts to fill in


def test_the_preset_chooser_answers_htmx_with_the_form_alone(admin):
    response = admin.get(reverse("integration_new"), {"preset": "paubox"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="integration-form"' in body
    assert "<html" not in body


def test_a_preset_base_url_with_its_placeholders_left_in_is_refused(admin):
    preset = presets.get("paubox")
    data = _form(base_url=preset.base_url, preset="paubox", slug="paubox", name="Paubox")
    response = admin.post(reverse("integration_new"), data)
    assert response.status_code == 400
    assert "Replace the <…> parts" in _text(response)
    assert not Integration.objects.exists()


def test_a_preset_brings_its_probes_and_templates_like_the_command(admin, admin_user):
    preset = presets.get("paubox")
    data = _form(
        preset="paubox", name="Paubox", slug="paubox", base_url="https://api.paubox.net/v1/acme",
        path_templates="/v1/{username}/custom/{id}", redact_names="x-mine", host_patterns="",
    )  # fmt: skip
    response = admin.post(reverse("integration_new"), data)
    assert response.status_code == 302
    created = Integration.objects.get(slug="paubox")
    assert created.preset == "paubox"
    templates = created.explicit_templates()
    # What the Admin typed first, then the preset's templates for this base URL.
    assert templates[0] == "/v1/{username}/custom/{id}"
    assert set(preset.path_templates(created.base_url)) <= set(templates)
    assert created.extra_redactions()[0] == "x-mine"
    assert created.probes.count() == len(preset.probes) + bool(
        preset.statuspage_json and preset.status_page
    )
    actors = set(AuditLog.objects.filter(action="create").values_list("actor", flat=True))
    assert actors == {"ada"}
    assert AuditLog.objects.filter(target_type="monitoring.Probe").count() == created.probes.count()


def test_an_unknown_preset_is_a_400_not_a_500(admin):
    response = admin.get(reverse("integration_new"), {"preset": "nope"})
    assert response.status_code == 400
    response = admin.post(reverse("integration_new"), _form(preset="nope"))
    assert response.status_code == 400
    assert not Integration.objects.exists()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": ""}, "This field is required."),
        ({"base_url": "not a url"}, "Enter a valid URL."),
        ({"host_patterns": "https://api.acme.test/"}, "Not a host pattern"),
        ({"path_templates": "v2/users"}, "Not a path template"),
        ({"path_templates": "/v2/{unclosed"}, "Not a path template"),
        ({"redact_names": "x key"}, "Names are letters, digits"),
        ({"owner_email": "ops@"}, "Enter a valid email address."),
        ({"name": "!!!"}, "Give a slug"),
    ],
)
def test_bad_input_is_a_400_with_the_reason(admin, changes, words):
    response = admin.post(reverse("integration_new"), _form(**changes))
    assert response.status_code == 400
    assert words in _text(response)
    assert not Integration.objects.exists()


def test_a_slug_taken_in_the_same_environment_is_refused_but_another_environment_is_fine(
    admin, integration
):
    response = admin.post(reverse("integration_new"), _form(name="Paubox"))
    assert response.status_code == 400
    assert "already has the slug paubox" in _text(response)
    response = admin.post(reverse("integration_new"), _form(name="Paubox", environment="staging"))
    assert response.status_code == 302
    assert Integration.objects.filter(slug="paubox").count() == 2


def test_creating_needs_the_csrf_token(admin_user):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post(reverse("integration_new"), _form()).status_code == 403
    assert not Integration.objects.exists()


# --- edit, preview ----------------------------------------------------------------------------


def test_an_edit_is_saved_and_audited_with_before_and_after(admin, integration):
    url = reverse("integration_edit", args=[integration.pk])
    data = _form(name="Paubox", slug="paubox", base_url=integration.base_url, owner_email="")
    data |= {"require_https": "", "path_templates": "/v1/{username}/messages"}
    response = admin.post(url, data)
    assert response.status_code == 302
    integration.refresh_from_db()
    assert integration.require_https is False
    assert integration.explicit_templates() == ["/v1/{username}/messages"]
    entry = AuditLog.objects.get(action="update", target_id=str(integration.pk))
    assert entry.before["require_https"] is True
    assert entry.after["require_https"] is False
    assert entry.after["path_templates"] == "/v1/{username}/messages"


def test_the_edit_page_shows_the_recent_paths_and_how_they_would_be_stored(
    admin, integration, now, django_assert_max_num_queries
):
    record([make_log(integration, now, path="/v1/acme/messages", method="POST") for _ in range(3)])
    url = reverse("integration_edit", args=[integration.pk])
    with django_assert_max_num_queries(12):
        body = _text(admin.get(url))
    assert "/v1/acme/messages" in body
    preview = reverse("integration_preview", args=[integration.pk])
    response = admin.get(
        preview, {"path_templates": "/v1/{username}/messages"}, HTTP_HX_REQUEST="true"
    )
    body = _text(response)
    assert response.status_code == 200
    assert "<html" not in body
    assert "<strong>/v1/{username}/messages</strong>" in body
    assert "1 endpoint in the newest calls now; 1 with these templates" in body


def test_the_preview_tries_a_sample_path_and_names_unused_templates(admin, integration):
    preview = reverse("integration_preview", args=[integration.pk])
    response = admin.get(
        preview, {"path_templates": "/v1/users/{user}\n/v9/never", "sample": "/v1/users/ada"}
    )
    body = _text(response)
    assert response.status_code == 200
    assert "<strong>/v1/users/{user}</strong>" in body
    assert "Not matching any recent call" in body and "/v9/never" in body


def test_a_bad_preview_input_is_a_400_fragment(admin, integration):
    preview = reverse("integration_preview", args=[integration.pk])
    response = admin.get(preview, {"path_templates": "no-slash"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "Not a path template" in _text(response)


def test_the_preview_reads_a_bounded_number_of_rows(
    admin, integration, now, django_assert_max_num_queries
):
    record([make_log(integration, now, path=f"/v1/things/t{n}") for n in range(60)])
    preview = reverse("integration_preview", args=[integration.pk])
    with django_assert_max_num_queries(8):
        body = _text(admin.get(preview, {"path_templates": "/v1/things/{thing}"}))
    assert body.count("<strong>/v1/things/{thing}</strong>") == 40  # PREVIEW_PATHS


# --- pause, delete ----------------------------------------------------------------------------


def test_pausing_and_resuming_are_audited(admin, integration):
    url = reverse("integration_pause", args=[integration.pk])
    assert admin.post(url, {"active": "0"}).status_code == 302
    integration.refresh_from_db()
    assert integration.active is False
    assert admin.post(url, {"active": "1"}).status_code == 302
    integration.refresh_from_db()
    assert integration.active is True
    entries = list(
        AuditLog.objects.filter(action="update", target_id=str(integration.pk)).order_by("seq")
    )
    assert [e.after for e in entries] == [{"active": False}, {"active": True}]
    assert admin.post(url, {"active": "maybe"}).status_code == 400
    assert admin.get(url).status_code == 405


def test_delete_asks_for_the_slug_then_deletes_and_audits(admin, integration, now):
    record([make_log(integration, now)])
    url = reverse("integration_delete", args=[integration.pk])
    page = _text(admin.get(url))
    assert "cannot be undone" in page
    response = admin.post(url, {"confirm": "wrong"})
    assert response.status_code == 400
    assert "Type paubox to confirm." in _text(response)
    assert Integration.objects.filter(pk=integration.pk).exists()
    response = admin.post(url, {"confirm": "paubox"})
    assert response.status_code == 302
    assert not Integration.objects.filter(pk=integration.pk).exists()
    assert not RequestLog.objects.exists()
    entry = AuditLog.objects.get(action="delete", target_id=str(integration.pk))
    assert entry.before["slug"] == "paubox"


# --- hostile input ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", [*sorted(_form()), "preset"])
def test_no_field_of_the_editor_gives_a_5xx(admin, integration, field):
    urls = [reverse("integration_new"), reverse("integration_edit", args=[integration.pk])]
    for url in urls:
        for value in HOSTILE:
            response = admin.post(url, _form(**{field: value}))
            assert response.status_code < 500, (url, field, value[:40])


def test_no_preview_or_action_input_gives_a_5xx(admin, integration):
    preview = reverse("integration_preview", args=[integration.pk])
    pause = reverse("integration_pause", args=[integration.pk])
    delete = reverse("integration_delete", args=[integration.pk])
    for value in HOSTILE:
        for params in ({"path_templates": value}, {"sample": value}):
            assert admin.get(preview, params).status_code < 500, value[:40]
        assert admin.post(pause, {"active": value}).status_code < 500, value[:40]
        assert admin.post(delete, {"confirm": value}).status_code < 500, value[:40]


def test_delete_removes_rows_and_buckets_in_chunks(admin, integration, stripe, now, monkeypatch):
    from dashboard.views import integrations
    from monitoring.models import MetricBucket

    monkeypatch.setattr(integrations, "DELETE_CHUNK", 2)
    record([make_log(integration, now, path=f"/p/{n}") for n in range(5)])
    record([make_log(stripe, now)])
    assert MetricBucket.objects.filter(integration=integration).count() > 2
    url = reverse("integration_delete", args=[integration.pk])
    assert admin.post(url, {"confirm": "paubox"}).status_code == 302
    assert not RequestLog.objects.filter(integration_id=integration.pk).exists()
    assert not MetricBucket.objects.filter(integration_id=integration.pk).exists()
    assert RequestLog.objects.filter(integration=stripe).count() == 1  # others' rows stay


def test_what_the_admin_typed_wins_over_the_preset(admin):
    preset = next(p for p in presets.ALL.values() if p.api_version and not p.placeholders())
    data = _form(
        preset=preset.name, name="Mine", slug=preset.name, base_url=preset.base_url,
        expected_api_version="", owner_email="", host_patterns="", require_https="",
    )  # fmt: skip
    assert admin.post(reverse("integration_new"), data).status_code == 302
    created = Integration.objects.get(slug=preset.name)
    assert (created.name, created.expected_api_version, created.owner_email) == ("Mine", "", "")
    assert created.require_https is False
