"""Webhook secrets: references under the envref policy, encryption, fingerprints only."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from monitoring.models import WebhookSecret
from monitoring.webhooks import secrets as hook_secrets
from tests.monitoring.webhooks.hookkit import KEY, make_endpoint, whsec

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", KEY)


def test_a_value_is_stored_encrypted_and_resolves_back(key):
    endpoint = make_endpoint("standard")
    value = whsec()
    secret = hook_secrets.create(endpoint, value=value)
    stored = WebhookSecret.objects.get(pk=secret.pk)
    assert value not in stored.encrypted and stored.reference == ""
    assert stored.fingerprint == hook_secrets.fingerprint(value)
    assert value not in str(stored) and stored.fingerprint in str(stored)
    assert hook_secrets.resolve(stored) == value


def test_a_decrypted_value_is_reused_only_for_the_same_ciphertext(key):
    endpoint = make_endpoint("standard")
    value, other = whsec(), whsec()
    secret = hook_secrets.create(endpoint, value=value)
    assert hook_secrets.resolve(secret) == value
    assert hook_secrets.resolve(secret) == value  # from process memory, no Fernet run
    secret.encrypted = hook_secrets.encrypt(other)  # the row was edited
    assert hook_secrets.resolve(secret) == other


def test_without_a_key_a_value_is_refused_not_stored_in_clear(monkeypatch):
    monkeypatch.delenv("UPSTREAM_SECRETS_KEY", raising=False)
    endpoint = make_endpoint("standard")
    with pytest.raises(ValidationError, match="UPSTREAM_SECRETS_KEY"):
        hook_secrets.create(endpoint, value=whsec())
    assert not WebhookSecret.objects.exists()


def test_a_rotated_encryption_key_still_decrypts_old_values(monkeypatch, key):
    endpoint = make_endpoint("stripe")
    secret = hook_secrets.create(endpoint, value="whsec_old")
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", f"a-brand-new-key-0123456789,{KEY}")
    assert hook_secrets.resolve(secret) == "whsec_old"
    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", "an-unrelated-key-0123456789")
    assert hook_secrets.resolve(secret) is None  # logged, never raised


def test_references_follow_the_envref_policy(monkeypatch):
    endpoint = make_endpoint("github")
    monkeypatch.setenv("UPSTREAM_SECRET_GH", "gh-secret")
    secret = hook_secrets.create(endpoint, reference="${UPSTREAM_SECRET_GH}")
    assert secret.fingerprint == hook_secrets.fingerprint("gh-secret")
    assert hook_secrets.resolve(secret) == "gh-secret"
    monkeypatch.setenv("UPSTREAM_SECRET_GH", "rotated")
    assert hook_secrets.resolve(secret) == "rotated"  # read at verification time
    assert hook_secrets.live_fingerprint(secret) == hook_secrets.fingerprint("rotated")
    monkeypatch.delenv("UPSTREAM_SECRET_GH")
    assert hook_secrets.resolve(secret) is None
    assert hook_secrets.live_fingerprint(secret) == "unset: UPSTREAM_SECRET_GH"
    for bad in ("${HOME}", "${DATABASE_URL}", "${UPSTREAM_SECRETS_KEY}", "x${UPSTREAM_SECRET_A}"):
        with pytest.raises(ValidationError):
            hook_secrets.create(endpoint, reference=bad)


def test_secrets_the_scheme_cannot_use_are_refused(key):
    with pytest.raises(ValidationError, match="whsec_"):
        hook_secrets.create(make_endpoint("standard"), value="whsec_!!!")
    with pytest.raises(ValidationError, match="takes no secrets"):
        hook_secrets.create(make_endpoint("none"), value="anything")
    with pytest.raises(ValidationError, match="either"):
        hook_secrets.create(make_endpoint("github"))
