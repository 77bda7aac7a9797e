"""API keys page: create (the key shown once, only its hash stored), revoke; Admins only."""

from __future__ import annotations

import html
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from api.models import ApiKey, hash_key
from monitoring.models import AuditLog
from tests.dashboard.test_fuzz_screens import HOSTILE

KEY = re.compile(r"up_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{20,}")


def _text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def test_access(client, viewer, operator, outsider, admin_user):
    url = reverse("api_keys")
    assert client.get(url)["Location"].startswith(reverse("login"))
    for user in (viewer, operator, outsider):
        client.force_login(user)
        assert client.get(url).status_code == 403
        assert client.post(url, {"name": "x", "scopes": ["ingest"]}).status_code == 403
    assert not ApiKey.objects.exists()
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(admin, admin_user, integration):
    data = {"name": "billing", "scopes": ["ingest", "read"], "integrations": [integration.pk]}
    response = admin.post(reverse("api_keys"), data)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = KEY.search(_text(response)).group(0)
    stored = ApiKey.objects.get()
    assert stored.key_hash == hash_key(key)
    assert stored.scopes == ["ingest", "read"]
    assert list(stored.integrations.all()) == [integration]
    assert stored.created_by == admin_user
    # Never again: the list shows the prefix only.
    again = _text(admin.get(reverse("api_keys")))
    assert key not in again and stored.prefix in again
    entry = AuditLog.objects.get(action="api_key.create")
    assert entry.actor == "ada"
    assert entry.after["integrations"] == ["paubox"]
    assert key not in str(entry.after) and key[12:] not in str(AuditLog.objects.values_list())


def test_the_command_and_the_page_make_keys_the_same_way(admin, capsys):
    call_command("create_api_key", "--name", "cli", "--scope", "ingest")
    admin.post(reverse("api_keys"), {"name": "page", "scopes": ["ingest"]})
    cli, page = ApiKey.objects.get(name="cli"), ApiKey.objects.get(name="page")
    assert (cli.scopes, page.scopes) == (["ingest"], ["ingest"])
    actors = dict(
        AuditLog.objects.filter(action="api_key.create").values_list("target_id", "actor")
    )
    assert actors == {str(cli.pk): "manage.py create_api_key", str(page.pk): "ada"}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"name": "", "scopes": ["ingest"]}, "This field is required."),
        ({"name": "   ", "scopes": ["ingest"]}, "This field is required."),
        ({"name": "x"}, "This field is required."),
        ({"name": "x", "scopes": ["root"]}, "Select a valid choice. root is not one of"),
        ({"name": "x", "scopes": ["ingest"], "integrations": ["999"]}, "Select a valid choice"),
    ],
)
def test_bad_input_is_a_400_with_the_reason(admin, data, words):
    response = admin.post(reverse("api_keys"), data)
    assert response.status_code == 400
    assert words in _text(response)
    assert not ApiKey.objects.exists()


def test_revoking_is_audited_once_and_the_key_stops_working(admin, client):
    obj, key = ApiKey.issue(name="billing", scopes=["read"])
    url = reverse("api_key_revoke", args=[obj.pk])
    assert admin.post(url).status_code == 302
    assert admin.post(url).status_code == 302  # again: nothing more happens
    obj.refresh_from_db()
    assert obj.revoked is not None and not obj.usable()
    assert AuditLog.objects.filter(action="api_key.revoke", target_id=str(obj.pk)).count() == 1
    response = client.get("/api/v1/integrations", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 401
    assert "revoked" in _text(admin.get(reverse("api_keys")))


def test_revoking_is_admin_only_and_post_only(client, operator, admin_user):
    obj, _ = ApiKey.issue(name="billing", scopes=["read"])
    url = reverse("api_key_revoke", args=[obj.pk])
    client.force_login(operator)
    assert client.post(url).status_code == 403
    client.force_login(admin_user)
    assert client.get(url).status_code == 405
    obj.refresh_from_db()
    assert obj.revoked is None


def test_the_list_costs_few_queries(admin, integration, django_assert_max_num_queries):
    for n in range(30):
        obj, _ = ApiKey.issue(name=f"k{n}", scopes=["ingest"])
        obj.integrations.set([integration])
    with django_assert_max_num_queries(10):
        body = _text(admin.get(reverse("api_keys")))
    assert body.count("Revoke</button>") == 30


def test_no_field_gives_a_5xx(admin):
    base = {"name": "k", "scopes": ["ingest"], "integrations": [], "allow_create": ""}
    for field in base:
        for value in HOSTILE:
            response = admin.post(reverse("api_keys"), base | {field: value})
            assert response.status_code < 500, (field, value[:40])
