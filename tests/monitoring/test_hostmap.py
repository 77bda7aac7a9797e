"""Host patterns: matching, the best claim, environments, the cache and validation."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from monitoring import hostmap
from monitoring.models import Integration, UnmappedHost, validate_host_patterns


@pytest.fixture(autouse=True)
def _fresh_map():
    hostmap.clear()
    yield
    hostmap.clear()


def _integration(slug: str, patterns: str, environment: str = "production") -> Integration:
    return Integration.objects.create(
        name=slug, slug=slug, environment=environment, host_patterns=patterns
    )


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("api.stripe.com", "api.stripe.com", True),
        ("api.stripe.com", "files.stripe.com", False),
        ("*.paubox.net", "api.paubox.net", True),
        ("*.paubox.net", "eu.api.paubox.net", True),
        ("*.paubox.net", "paubox.net", False),
        ("*.paubox.net", "evilpaubox.net", False),
    ],
)
def test_it_matches_exact_names_and_wildcards(pattern, host, expected):
    assert hostmap.matches(pattern, host) is expected


@pytest.mark.django_db
def test_it_resolves_a_host_to_the_integration_claiming_it():
    stripe = _integration("stripe", "api.stripe.com\n\n  files.stripe.com  ")
    paubox = _integration("paubox", "*.paubox.net")
    assert hostmap.resolve("api.stripe.com") == stripe.pk
    assert hostmap.resolve("FILES.stripe.com:443") == stripe.pk
    assert hostmap.resolve("api.paubox.net") == paubox.pk
    assert hostmap.resolve("example.com") is None


@pytest.mark.django_db
def test_an_exact_pattern_beats_a_wildcard():
    _integration("paubox", "*.paubox.net")
    special = _integration("paubox-eu", "eu.paubox.net")
    assert hostmap.resolve("eu.paubox.net") == special.pk


@pytest.mark.django_db
def test_the_environment_picks_between_claims_and_production_wins_without_one():
    live = _integration("stripe", "api.stripe.com", "production")
    test = _integration("stripe", "api.stripe.com", "staging")
    assert hostmap.resolve("api.stripe.com", "staging") == test.pk
    assert hostmap.resolve("api.stripe.com", "production") == live.pk
    assert hostmap.resolve("api.stripe.com") == live.pk
    assert hostmap.resolve("api.stripe.com", "sandbox") is None


@pytest.mark.django_db
def test_inactive_integrations_claim_nothing():
    _integration("stripe", "api.stripe.com")
    Integration.objects.update(active=False)
    assert hostmap.resolve("api.stripe.com") is None


@pytest.mark.django_db
def test_answers_are_cached_until_cleared(django_assert_num_queries):
    stripe = _integration("stripe", "api.stripe.com")
    assert hostmap.resolve("api.stripe.com") == stripe.pk
    with django_assert_num_queries(0):
        assert hostmap.resolve("api.stripe.com") == stripe.pk
        assert hostmap.resolve("other.example") is None
    Integration.objects.filter(pk=stripe.pk).update(host_patterns="other.example")
    hostmap.clear()
    assert hostmap.resolve("other.example") == stripe.pk


def test_validation_refuses_urls_and_ports():
    validate_host_patterns("api.stripe.com\n*.paubox.net\n")
    for bad in ("https://api.stripe.com", "api.stripe.com:443", "*paubox.net", "a b"):
        with pytest.raises(ValidationError):
            validate_host_patterns(bad)


@pytest.mark.django_db
def test_the_model_form_checks_host_patterns():
    integration = Integration(name="X", slug="x", host_patterns="https://x.example/")
    with pytest.raises(ValidationError) as caught:
        integration.full_clean()
    assert "host_patterns" in caught.value.message_dict


@pytest.mark.django_db
def test_unmapped_hosts_are_counted_per_host():
    UnmappedHost.count("api.example.com", 3, "checkout")
    UnmappedHost.count("api.example.com", 2, "billing")
    row = UnmappedHost.objects.get()
    assert (row.host, row.spans, row.service) == ("api.example.com", 5, "billing")
    assert row.first_seen <= row.last_seen
    assert str(row) == "api.example.com (5 spans)"


def test_admins_create_an_integration_for_an_unmapped_host(client, admin_user):
    from django.urls import reverse

    from monitoring.models import AuditLog

    UnmappedHost.count("api.nobody.io", 4, "shop")
    client.force_login(admin_user)
    changelist = reverse("admin:monitoring_unmappedhost_changelist")
    page = client.get(changelist)
    assert page.status_code == 200
    assert b"api.nobody.io" in page.content
    assert hostmap.resolve("api.nobody.io") is None
    unmapped = UnmappedHost.objects.get()
    client.post(changelist, {"action": "create_integrations", "_selected_action": [unmapped.pk]})
    created = Integration.objects.get(slug="api-nobody-io")
    assert created.host_pattern_list() == ["api.nobody.io"]
    assert hostmap.resolve("api.nobody.io") == created.pk
    assert not UnmappedHost.objects.exists()
    row = AuditLog.objects.get(action="integration.created_from_host")
    assert row.actor == "ada"


def test_the_unmapped_host_list_is_for_admins_only(client, viewer, operator):
    from django.urls import reverse

    changelist = reverse("admin:monitoring_unmappedhost_changelist")
    for user in (viewer, operator):
        client.force_login(user)
        assert client.get(changelist).status_code in (302, 403)
