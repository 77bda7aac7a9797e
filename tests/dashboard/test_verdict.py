"""The overview's verdict: provider down, our calls failing, degraded, healthy, no data."""

from __future__ import annotations

import pytest

from dashboard.verdict import judge


def verdict(calls=100, call_errors=0.0, runs=10, run_errors=0.0, states=("up",)):
    return judge(
        calls=calls,
        call_error_rate=call_errors,
        probe_runs=runs,
        probe_error_rate=run_errors,
        probe_states=states,
    )


def test_calls_and_probes_succeeding_is_healthy():
    assert verdict().key == "healthy"


def test_probes_failing_with_calls_failing_is_the_provider():
    v = verdict(call_errors=0.8, run_errors=1.0, states=["down"])
    assert v.key == "provider_down"
    assert "80 %" in v.reason


def test_a_probe_down_with_no_recent_calls_is_still_the_provider():
    assert verdict(calls=0, runs=6, run_errors=1.0, states=["down"]).key == "provider_down"


def test_probes_passing_while_calls_fail_points_at_us():
    v = verdict(call_errors=0.6)
    assert v.key == "our_calls_failing"
    assert "keys" in v.reason


def test_calls_failing_without_probes_cannot_blame_anyone():
    v = verdict(call_errors=0.6, runs=0, states=[])
    assert v.key == "calls_failing"
    assert "Add a probe" in v.reason


def test_probes_failing_while_calls_succeed_is_degraded():
    assert verdict(run_errors=1.0, states=["down"]).key == "degraded"


@pytest.mark.parametrize(
    ("call_errors", "states", "expected"),
    [
        (0.06, ["up"], "degraded"),  # elevated, below failing
        (0.04, ["up"], "healthy"),
        (0.0, ["degraded"], "degraded"),
        (0.0, ["up", "degraded"], "degraded"),
    ],
)
def test_elevated_errors_or_a_degraded_probe_is_degraded(call_errors, states, expected):
    assert verdict(call_errors=call_errors, states=states).key == expected


def test_a_handful_of_failed_calls_is_not_enough_to_judge():
    # 3 of 4 calls failed: too few to call it failing.
    assert verdict(calls=4, call_errors=0.75).key == "healthy"


def test_the_reason_says_what_was_checked():
    assert verdict(runs=0, states=[]).reason == "Calls succeed; no probe watches the provider yet."
    assert verdict(runs=0, states=["unknown"]).reason.startswith("Calls succeed; no probe")
    assert verdict(calls=0).reason == "Probes pass; no calls in the last 15 min."
    assert verdict().reason == "Calls and probes succeed."


def test_nothing_at_all_is_no_data():
    assert verdict(calls=0, runs=0, states=[]).key == "no_data"
    assert verdict(calls=0, runs=0, states=["unknown"]).key == "no_data"


def test_an_open_incident_on_the_status_page_leads_the_verdict_with_its_link():
    from dashboard.verdict import Incident

    incident = Incident("Elevated API error rates", "https://stspg.io/abc")
    v = judge(
        calls=100, call_error_rate=0.6, probe_runs=10, probe_error_rate=1.0,
        probe_states=["down"], incident=incident,
    )  # fmt: skip
    assert (v.key, v.label, v.link) == (
        "provider_incident", "Provider reports an incident", "https://stspg.io/abc",
    )  # fmt: skip
    assert v.reason.startswith("Elevated API error rates.")
    assert "60 %" in v.reason
    calm = judge(
        calls=100, call_error_rate=0.0, probe_runs=10, probe_error_rate=0.0,
        probe_states=["up"], incident=incident,
    )  # fmt: skip
    assert calm.key == "provider_incident"
    assert "still succeed" in calm.reason


def test_most_failures_being_expired_tokens_names_the_token():
    v = judge(
        calls=40, call_error_rate=0.5, probe_runs=10, probe_error_rate=0.0,
        probe_states=["up"], error_codes={"token_expired": 18, "invalid_request": 2},
    )  # fmt: skip
    assert (v.key, v.label) == ("token_expired", "Token expired")
    assert "sign in again" in v.reason and "18 of 20 recent failures" in v.reason


def test_api_access_disabled_is_its_own_verdict_not_provider_down():
    # OpenPanel answers every route (probes included) with 404 "API access is disabled!".
    v = judge(
        calls=30, call_error_rate=1.0, probe_runs=4, probe_error_rate=1.0,
        probe_states=["down"], error_codes={"api_disabled": 30},
    )  # fmt: skip
    assert (v.key, v.label) == ("api_disabled", "API access is disabled")
    assert "enable API access" in v.reason


def test_a_diagnosis_behind_few_failures_or_healthy_signals_changes_nothing():
    few = judge(
        calls=40, call_error_rate=0.5, probe_runs=10, probe_error_rate=0.0,
        probe_states=["up"], error_codes={"token_expired": 2, "card_declined": 18},
    )  # fmt: skip
    assert few.key == "our_calls_failing"
    calm = judge(
        calls=100, call_error_rate=0.01, probe_runs=10, probe_error_rate=0.0,
        probe_states=["up"], error_codes={"token_expired": 1},
    )  # fmt: skip
    assert calm.key == "healthy"
    advisory = judge(
        calls=40, call_error_rate=0.5, probe_runs=10, probe_error_rate=0.0,
        probe_states=["up"], error_codes={"batch_too_large": 20},
    )  # fmt: skip
    assert advisory.key == "our_calls_failing"  # an advisory never names the verdict


@pytest.mark.django_db
def test_the_overview_names_the_diagnosis_behind_most_failures(client, viewer, integration):
    import datetime as dt

    from django.urls import reverse
    from django.utils import timezone

    from tests.dashboard.conftest import make_log, record

    now = timezone.now()
    rows = [make_log(integration, now - dt.timedelta(minutes=5), status=200) for _ in range(5)]
    rows += [
        make_log(integration, now - dt.timedelta(minutes=4), status=401, error_code="token_expired")
        for _ in range(15)
    ]
    record(rows)
    client.force_login(viewer)
    page = client.get(reverse("overview")).content.decode()
    assert "Token expired" in page
    detail = client.get(reverse("integration", args=[integration.pk])).content.decode()
    assert "15 of 15 recent failures" in detail
