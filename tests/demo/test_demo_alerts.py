"""The demo's alerts reach someone: its user has an address, its integrations an owner."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from demo import scenario
from demo.management.commands import demo as demo_command
from monitoring.alerts import lifecycle, notify
from monitoring.models import Integration, NotificationStatus
from tests.monitoring.alerts.alertkit import calls


@pytest.fixture
def demo_setup(db, monkeypatch):
    # Seven days of history are beside the point here, and slow.
    monkeypatch.setattr(demo_command, "seed_history", lambda: 0)
    monkeypatch.setattr(demo_command.demo_webhooks, "seed_webhook_history", lambda: 0)
    call_command("demo", stdout=open("/dev/null", "w"))  # noqa: SIM115


def test_the_demo_user_has_an_address_and_owns_the_demo_integrations(demo_setup):
    user = get_user_model().objects.get(username="demo")
    assert user.email == demo_command.DEMO_EMAIL
    owners = set(Integration.objects.values_list("owner_email", flat=True))
    assert owners == {demo_command.DEMO_EMAIL}


def test_an_existing_demo_user_without_an_address_gets_one(demo_setup):
    get_user_model().objects.filter(username="demo").update(email="")
    call_command("demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert get_user_model().objects.get(username="demo").email == demo_command.DEMO_EMAIL


def test_the_spike_s_email_is_written_to_the_mail_folder(demo_setup, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    lifecycle.ensure_default_rules()
    stripe = Integration.objects.get(slug="stripe", environment="production")
    calls(stripe, timezone.now(), 15, status=401)  # the revoked-key window's calls
    lifecycle.evaluate()
    notify.send_due(timezone.now() + dt.timedelta(minutes=1))
    (written,) = tmp_path.iterdir()
    text = written.read_text()
    assert f"To: {demo_command.DEMO_EMAIL}" in text
    assert "[FIRING] Stripe · production — failed-auth spike" in text
    assert not stripe.alerts.get().notifications.exclude(status=NotificationStatus.SENT).exists()


def test_the_timeline_shows_both_verdicts_within_ten_minutes():
    windows = (scenario.OUTAGE_WINDOW, scenario.EXPIRED_TOKEN_WINDOW, scenario.REVOKED_KEY_WINDOW)
    for window in windows:
        start, length = window
        assert start + length <= 10 * 60
    # They do not overlap: each verdict is seen on its own.
    for earlier, later in itertools.pairwise(windows):
        assert sum(earlier) <= later[0]
    outage_end = sum(scenario.OUTAGE_WINDOW)
    assert outage_end <= scenario.REVOKED_KEY_WINDOW[0]
    assert scenario.in_window(scenario.REVOKED_KEY_WINDOW, scenario.REVOKED_KEY_WINDOW[0])
    assert not scenario.in_window(scenario.OUTAGE_WINDOW, outage_end)
