"""The demo's scorecards differ for reasons one can see, right after ``manage.py demo``."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from demo import scenario
from demo.management.commands import demo as demo_command
from monitoring import audit
from monitoring.models import Grade
from monitoring.models.scorecards import Scorecard

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def graded(django_db_setup, django_db_blocker):
    """``manage.py demo`` at NOW with two days of history (enough for every sample), once for
    the module: each demo integration's stored checks by handle, and what it printed."""
    upstream = {**settings.UPSTREAM, "RETAIN_MINUTE_DAYS": 1}
    out = StringIO()
    with django_db_blocker.unblock():
        try:
            with pytest.MonkeyPatch.context() as patch, override_settings(UPSTREAM=upstream):
                patch.setattr(demo_command, "seed_history", lambda: scenario.seed_history(days=2))
                # A day of webhook deliveries is beside the point here, and slow.
                patch.setattr(demo_command.demo_webhooks, "seed_webhook_history", lambda: 0)
                with time_machine.travel(NOW, tick=False):
                    call_command("demo", stdout=out)
            cards = {}
            for handle, integration in scenario.demo_integrations().items():
                (card,) = Scorecard.objects.filter(integration=integration)  # the command's
                cards[handle] = {check["key"]: check for check in card.checks}
            yield cards, out.getvalue()
        finally:
            # Written outside any test's transaction: leave the database as tests expect it
            # (as pytest-django's own flush does, with the audit log's allowance).
            with audit.maintenance():
                call_command("flush", interactive=False, verbosity=0)


def test_manage_py_demo_grades_every_demo_integration_at_once(graded):
    cards, out = graded
    assert set(cards) == {d.handle for d in scenario.DEMO_INTEGRATIONS}
    assert "Demo scorecards: " in out
    for name in ("Stripe · production", "Stripe · staging", "OpenPanel · production"):
        assert name in out
    # Each of the three mistakes fails its own check, and only where it was made.
    failing = {
        handle: {k for k, c in checks.items() if c["grade"] == Grade.FAIL and k in ("https",
                 "errors", "retries")}
        for handle, checks in cards.items()
    }  # fmt: skip
    assert failing == {
        "stripe": {"errors"},
        "stripe-staging": {"https"},
        "paubox": set(),
        "openpanel": {"retries"},
        "sandbox-crm": set(),
    }


def test_the_staging_integration_fails_https_naming_its_plain_http_endpoints(graded):
    cards, _ = graded
    https = cards["stripe-staging"]["https"]
    assert "used plain http" in https["evidence"]
    assert "GET /v1/customers" in https["evidence"]
    # The production ones call the TLS port, and the integration refuses plain http.
    for handle in ("stripe", "paubox", "openpanel", "sandbox-crm"):
        assert cards[handle]["https"]["grade"] == Grade.PASS, cards[handle]["https"]
        assert "plain http is refused" in cards[handle]["https"]["evidence"]


def test_stripe_retries_401s_and_openpanel_retries_before_retry_after(graded):
    cards, _ = graded
    errors = cards["stripe"]["errors"]
    assert "after 401" in errors["evidence"]
    assert errors["figures"]["pointless_retries"] > 0
    # Its retries themselves wait and grow: what is wrong is *what* it retries.
    assert cards["stripe"]["retries"]["grade"] == Grade.PASS

    retries = cards["openpanel"]["retries"]
    assert "sooner than Retry-After" in retries["evidence"]
    assert retries["figures"]["early"] > 0
    assert cards["openpanel"]["errors"]["grade"] != Grade.FAIL  # 429s are worth retrying
    # Stripe's staging side is the other Stripe integration, so production "tested in a
    # sandbox" passes where Paubox, with none, fails.
    assert cards["stripe"]["sandbox"]["grade"] == Grade.PASS
    assert cards["paubox"]["sandbox"]["grade"] == Grade.FAIL
