"""API keys: issue, hash, scopes, revocation, failed-key audit and throttling, rate limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from api.models import ApiKey, hash_key
from monitoring.models import ActorType, AuditLog

pytestmark = pytest.mark.django_db


def _key(**fields):
    fields.setdefault("name", "svc")
    fields.setdefault("scopes", ["ingest", "read"])
    return ApiKey.issue(**fields)


def _get(client, key, path="/api/v1/integrations", **extra):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}", **extra)


def test_it_stores_only_the_hash_and_shows_the_prefix():
    obj, key = _key()
    assert key.startswith("up_") and len(key) > 40
    assert obj.prefix == key[:11]
    assert obj.key_hash == hash_key(key) and key not in obj.key_hash
    assert obj.matches(key) and not obj.matches(key + "x")


def test_a_good_key_reads_and_updates_last_used_once_a_minute(client):
    obj, key = _key()
    assert _get(client, key).status_code == 200
    obj.refresh_from_db()
    first = obj.last_used
    assert first is not None
    assert _get(client, key).status_code == 200
    obj.refresh_from_db()
    assert obj.last_used == first


@pytest.mark.parametrize("header", ["", "Basic abc", "Bearer up_nothere_secret", "Bearer x"])
def test_a_missing_or_unknown_key_gets_401_problem(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/api/v1/integrations", **extra)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_and_expired_keys_are_refused_and_audited_as_failed_authentication(client):
    revoked, revoked_key = _key(revoked=timezone.now())
    expired, expired_key = _key(name="old", expires=timezone.now() - timedelta(seconds=1))
    assert _get(client, revoked_key).status_code == 401
    assert _get(client, expired_key).status_code == 401
    rows = AuditLog.objects.filter(action="auth.signin_failed", actor_type=ActorType.API_KEY)
    assert sorted(r.after["reason"] for r in rows) == ["expired", "revoked"]
    assert {r.actor for r in rows} == {revoked.prefix, expired.prefix}
    assert all(r.ip == "127.0.0.1" for r in rows)
    for r in rows:  # never the key itself
        assert revoked_key not in str(r.after) and expired_key not in str(r.after)


def test_repeated_bad_keys_lock_the_address_out(client, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "SIGNIN_FAILURES_PER_USER": 3}
    for _ in range(3):
        assert _get(client, "up_AAAAAAAA_wrong").status_code == 401
    response = _get(client, "up_AAAAAAAA_wrong")
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def test_a_key_without_the_scope_gets_403(client):
    _, key = _key(scopes=["ingest"])
    response = _get(client, key)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


def test_the_rate_limit_answers_429_with_ratelimit_headers(client, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "API_RATE_PER_S": 1, "API_RATE_BURST": 3}
    _, key = _key()
    answers = [_get(client, key) for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    refused = answers[-1]
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/problem+json"
    assert refused["RateLimit-Policy"] == '"burst";q=3;w=3'
    assert refused["RateLimit"].startswith('"burst";r=0;t=')
    assert int(refused["Retry-After"]) >= 1
    assert answers[0]["RateLimit"].startswith('"burst";r=2;')


def test_unknown_api_paths_and_methods_answer_problem_json(client):
    _, key = _key()
    missing = _get(client, key, "/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"
    wrong = client.delete("/api/v1/integrations", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert wrong.status_code == 405 and wrong["Allow"] == "GET"
    assert wrong["Content-Type"] == "application/problem+json"


def test_create_api_key_prints_the_key_alone_on_the_last_line(capsys):
    call_command("create_api_key", "--name", "billing", "--scope", "ingest", "--scope", "read")
    out = capsys.readouterr().out.strip().splitlines()
    key = out[-1]
    obj = ApiKey.objects.get(name="billing")
    assert obj.matches(key) and sorted(obj.scopes) == ["ingest", "read"]
    row = AuditLog.objects.get(action="api_key.create")
    assert row.after["prefix"] == obj.prefix and key not in str(row.after)


def test_revoke_api_key_revokes_by_prefix(client):
    obj, key = _key()
    call_command("revoke_api_key", obj.prefix)
    obj.refresh_from_db()
    assert obj.revoked is not None
    assert _get(client, key).status_code == 401
    assert AuditLog.objects.filter(action="api_key.revoke").count() == 1


def test_the_signin_failures_rule_counts_bad_api_keys_and_says_so(client, settings):
    from monitoring.alerts import lifecycle
    from monitoring.models import Alert, AlertRule, RuleKind

    settings.UPSTREAM = {**settings.UPSTREAM, "SIGNIN_FAILURES_PER_ADDRESS": 100}
    AlertRule.objects.create(name="Sign-ins", kind=RuleKind.SIGNIN_FAILURES)
    for n in range(12):  # distinct prefixes: each one below its own lockout
        assert _get(client, f"up_{n:08d}_guess").status_code == 401
    lifecycle.evaluate()
    alert = Alert.objects.get()
    assert alert.title.startswith("Upstream API keys — 12 failed API key authentications")
    assert alert.figures["api_key_failures"] == 12


def test_the_admin_creates_a_key_shown_once_and_revokes_it(client, superuser):
    admin_client = client
    admin_client.force_login(superuser)
    response = admin_client.post(
        "/admin/api/apikey/add/",
        {"name": "from admin", "scopes": ["read"], "_save": "Save"},
        follow=True,
    )
    assert response.status_code == 200
    obj = ApiKey.objects.get(name="from admin")
    shown = [str(m) for m in response.context["messages"]]
    key = next(m for m in shown if obj.prefix in m).rsplit(" ", 1)[1]
    assert obj.matches(key)
    created = AuditLog.objects.get(action="api_key.create")
    assert created.after["prefix"] == obj.prefix and key not in str(created.after)
    listing = admin_client.get("/admin/api/apikey/")
    assert obj.prefix.encode() in listing.content and key.encode() not in listing.content
    admin_client.post(
        "/admin/api/apikey/", {"action": "revoke", "_selected_action": [obj.pk]}, follow=True
    )
    obj.refresh_from_db()
    assert obj.revoked is not None
    assert AuditLog.objects.filter(action="api_key.revoke").count() == 1
