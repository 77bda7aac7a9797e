"""Sign-in throttling through the real sign-in pages: lockouts per username and per address,
429 with Retry-After before any password is checked, a bounded audit trail the rule still reads."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
import time_machine
from django.contrib.auth import SESSION_KEY
from django.contrib.auth import forms as auth_forms
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import IntegerField, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from monitoring import audit, throttle
from monitoring.models import Alert, AlertRule, AuditLog, RuleKind
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _empty_cache():
    # Counters live in the process-wide cache: no test may inherit another's lockout.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def sign_in(client, username: str, password: str, *, ip: str = "203.0.113.7", url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


def signed_in(client) -> bool:
    return SESSION_KEY in client.session


def failures() -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=audit.Actions.SIGNIN_FAILED).order_by("seq"))


def attempts_recorded() -> int:
    """Failed attempts per address, summed the way the failed-sign-ins rule should read them:
    a row stands for its `attempts`, or for one."""
    attempts = Coalesce(Cast(KT("after__attempts"), IntegerField()), Value(1))
    per_ip = (
        AuditLog.objects.filter(action=audit.Actions.SIGNIN_FAILED)
        .order_by()
        .values("ip")
        .annotate(n=Sum(attempts))
    )
    return sum(row["n"] for row in per_ip)


def test_fifty_wrong_passwords_for_one_user_are_throttled_from_any_address(client, viewer, clock):
    statuses = [
        sign_in(client, "vera", f"wrong-{n}", ip=f"198.51.100.{n}").status_code for n in range(50)
    ]
    assert statuses == [200] * 5 + [429] * 45
    response = sign_in(client, "vera", "wrong", ip="192.0.2.1")
    assert response["Retry-After"] == "60"
    assert "no-store" in response["Cache-Control"]
    assert "Too many failed sign-ins. Try again in 1 minute." in response.content.decode()
    # However the name is typed, it is the same account.
    assert sign_in(client, " VERA ", "wrong", ip="192.0.2.2").status_code == 429


def test_fifty_usernames_from_one_address_are_throttled(client, viewer, clock):
    statuses = [sign_in(client, f"user{n}", "guess").status_code for n in range(50)]
    assert statuses == [200] * 20 + [429] * 30
    # The address is locked for every name, a real one included; other addresses are not.
    assert sign_in(client, "vera", PASSWORD).status_code == 429
    assert not signed_in(client)
    assert sign_in(client, "vera", PASSWORD, ip="192.0.2.10").status_code == 302
    assert signed_in(client)


def test_the_right_password_during_a_lockout_does_not_sign_in(client, viewer, clock):
    for n in range(5):
        sign_in(client, "vera", f"wrong-{n}")
    response = sign_in(client, "vera", PASSWORD)
    assert response.status_code == 429
    assert not signed_in(client)
    assert client.get("/").status_code == 302  # still sent to the sign-in page


def test_the_lockout_ends_and_a_repeat_locks_twice_as_long(client, viewer, clock):
    for n in range(5):
        sign_in(client, "vera", f"wrong-{n}")
    clock.shift(59)
    assert sign_in(client, "vera", PASSWORD).status_code == 429
    clock.shift(2)
    for n in range(5):
        assert sign_in(client, "vera", f"again-{n}").status_code == 200
    assert sign_in(client, "vera", PASSWORD)["Retry-After"] == "120"
    clock.shift(121)
    assert sign_in(client, "vera", PASSWORD).status_code == 302
    assert signed_in(client)


def test_a_successful_sign_in_forgets_the_failures_before_it(client, viewer, clock):
    for n in range(4):
        sign_in(client, "vera", f"wrong-{n}", ip=f"198.51.100.{n}")
    assert sign_in(client, "vera", PASSWORD, ip="198.51.100.99").status_code == 302
    client.logout()
    for n in range(4):
        assert sign_in(client, "vera", f"wrong-{n}", ip=f"198.51.100.{n}").status_code == 200


def test_a_locked_out_attempt_is_refused_before_any_password_is_checked(client, viewer, clock):
    with mock.patch.object(auth_forms, "authenticate", wraps=auth_forms.authenticate) as checked:
        for n in range(50):
            sign_in(client, "vera", f"wrong-{n}")
    assert checked.call_count == 5


def test_the_admin_sign_in_is_throttled_too(client, admin_user, clock):
    statuses = [sign_in(client, "ada", f"wrong-{n}", url=ADMIN_LOGIN).status_code for n in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    response = sign_in(client, "ada", PASSWORD, url=ADMIN_LOGIN)
    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert not signed_in(client)
    # One account, one counter, whichever page the guesses came through.
    assert sign_in(client, "ada", PASSWORD).status_code == 429


def test_a_lockout_answers_json_to_a_json_caller(client, viewer, clock):
    for n in range(5):
        sign_in(client, "vera", f"wrong-{n}")
    response = client.post(
        LOGIN,
        {"username": "vera", "password": "x"},
        REMOTE_ADDR="203.0.113.7",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 429
    assert response.json()["error"] == "Too many attempts"
    assert response["Retry-After"] == "60"


def test_audit_rows_stay_bounded_and_still_add_up_to_every_attempt(client, viewer, clock):
    for n in range(50):
        sign_in(client, "vera", f"wrong-{n}")
    rows = failures()
    # 5 failures, then refused attempts 1, 2, 4, 8, 16 and 32 of the lockout.
    assert len(rows) == 5 + 6
    throttled = [r.after for r in rows if r.after.get("throttled")]
    assert [t["attempts"] for t in throttled] == [1, 1, 2, 4, 8, 16]
    assert {t["throttled"] for t in throttled} == {"name"}
    assert {r.ip for r in rows} == {"203.0.113.7"}
    assert attempts_recorded() == 5 + 32
    # The attempts the last row did not reach are carried by the subject's next row.
    clock.shift(61)
    for n in range(6):
        sign_in(client, "vera", f"later-{n}")
    assert attempts_recorded() == 56
    assert audit.verify_chain().ok


def test_hundreds_of_refused_attempts_cost_a_handful_of_rows(client, viewer, clock):
    for n in range(5):
        sign_in(client, "vera", f"wrong-{n}")
    before = AuditLog.objects.count()
    for _ in range(300):
        sign_in(client, "vera", "wrong")
    assert AuditLog.objects.count() - before == 9  # refused attempts 1, 2, 4 … 256


def test_the_failed_sign_ins_rule_still_sees_a_throttled_attack(client, viewer, clock):
    AlertRule.objects.create(name="Sign-ins", kind=RuleKind.SIGNIN_FAILURES)
    for n in range(50):
        sign_in(client, "vera", f"wrong-{n}", ip=f"198.51.100.{n}")
    call_command("evaluate_alerts", stdout=mock.MagicMock())
    assert Alert.objects.filter(rule__kind=RuleKind.SIGNIN_FAILURES).exists()


def test_an_ipv6_client_is_limited_by_its_64():
    assert throttle.address_subject("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert throttle.address_subject("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle.address_subject("192.0.2.1") == "192.0.2.1"
    assert throttle.address_subject("not an address") is None


def test_the_throttle_takes_any_kind_of_credential(db, clock):
    """The check API-key authentication calls, with the key's prefix and the address."""
    keys = throttle.Throttle(
        "apikey",
        audit_action="auth.apikey_failed",
        limits=lambda: throttle.Limits(3, 100, 900, 30, 300),
        name_label="prefix",
    )
    for _ in range(3):
        assert keys.check("upk_ab12", "192.0.2.5") is None
        keys.failed("upk_ab12", "192.0.2.5")
    lock = keys.check("upk_ab12", "192.0.2.99")
    assert lock is not None and lock.kind == "name" and lock.retry_after() == 30
    assert keys.check("upk_cd34", "192.0.2.5") is None
    assert throttle.SIGNIN.check("upk_ab12", "192.0.2.5") is None  # scopes are apart
    assert [keys.refused(lock, request=None, name="upk_ab12") for _ in range(3)] == [
        True,
        True,
        False,
    ]
    rows = AuditLog.objects.filter(action="auth.apikey_failed")
    assert [(r.target_repr, r.after["attempts"]) for r in rows] == [("prefix 'upk_ab12'", 1)] * 2
