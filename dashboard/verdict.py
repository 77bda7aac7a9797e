"""The overview's answer per integration: is the provider down, or is it us?

Joins the signals over the last few minutes: our calls (client and ingest traffic), the
provider's probes (their recent runs and their stored up/degraded/down state), and the
provider's own status page (an open incident, read by a status-page probe). The webhooks
the provider sends back join last (`with_webhooks`): deliveries failing verification, or
none for longer than usual.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from monitoring.models import ProbeState
from monitoring.presets import DIAGNOSES

# The verdict speaks about now, whatever range the charts show.
WINDOW = dt.timedelta(minutes=15)
# Below this many calls a failure rate says little.
MIN_CALLS = 5
FAILING = 0.25
ELEVATED = 0.05
PROBE_FAILING = 0.5
PROBE_SHAKY = 0.2


@dataclass(frozen=True)
class Verdict:
    key: str
    label: str
    reason: str
    #: Where to read more: the provider's incident page, when it reports one.
    link: str = ""


@dataclass(frozen=True)
class Incident:
    """An unresolved incident on the provider's status page."""

    title: str
    link: str = ""


def _pct(rate: float) -> str:
    return f"{rate * 100:.0f} %" if rate >= 0.1 else f"{rate * 100:.1f} %"


def judge(
    *,
    calls: int,
    call_error_rate: float,
    probe_runs: int,
    probe_error_rate: float,
    probe_states: Iterable[str],
    incident: Incident | None = None,
    error_codes: Mapping[str, int] | None = None,
) -> Verdict:
    """Decide from recent call and probe figures plus the probes' current states.

    An open incident on the provider's status page is the provider's own word: it leads the
    verdict, and the other signals say how much of it reaches us. ``error_codes`` counts the
    recent failures by error code: where a preset's diagnosis (an expired token, API access
    switched off) explains most of them, it names the verdict instead of a guess at whose
    side failed.
    """
    if incident is None and error_codes:
        plain = _judge(calls, call_error_rate, probe_runs, probe_error_rate, probe_states)
        diagnosed = _diagnosed(plain, error_codes)
        if diagnosed is not None:
            return diagnosed
    if incident is not None:
        plain = _judge(calls, call_error_rate, probe_runs, probe_error_rate, probe_states)
        if plain.key in ("provider_down", "our_calls_failing", "calls_failing"):
            effect = f" {plain.reason}"
        elif plain.key == "healthy":
            effect = " Our calls and probes still succeed."
        else:
            effect = ""
        return Verdict(
            "provider_incident",
            "Provider reports an incident",
            f"{incident.title}.{effect}",
            incident.link,
        )
    return _judge(calls, call_error_rate, probe_runs, probe_error_rate, probe_states)


_FAILING_KEYS = frozenset({"provider_down", "our_calls_failing", "calls_failing", "degraded"})


def _diagnosed(plain: Verdict, error_codes: Mapping[str, int]) -> Verdict | None:
    """The diagnosis behind at least half of the recent failures, if the signals fail."""
    if plain.key not in _FAILING_KEYS:
        return None
    failures = sum(n for n in error_codes.values() if n > 0)
    named = [
        (n, code)
        for code, n in error_codes.items()
        if n > 0 and code in DIAGNOSES and DIAGNOSES[code].verdict
    ]
    if not named or failures == 0:
        return None
    count, code = max(named)
    if count * 2 < failures:
        return None
    diagnosis = DIAGNOSES[code]
    share = f"{count} of {failures} recent failure{'s' if failures != 1 else ''}"
    return Verdict(diagnosis.code, diagnosis.label, f"{diagnosis.advice} ({share}.)")


def _judge(
    calls: int,
    call_error_rate: float,
    probe_runs: int,
    probe_error_rate: float,
    probe_states: Iterable[str],
) -> Verdict:
    states = [str(s) for s in probe_states]
    # A probe that has never run says nothing yet.
    has_probes = probe_runs > 0 or any(s != ProbeState.UNKNOWN for s in states)
    probes_down = ProbeState.DOWN in states or (
        probe_runs >= 2 and probe_error_rate >= PROBE_FAILING
    )
    probes_degraded = ProbeState.DEGRADED in states or (
        probe_runs > 0 and probe_error_rate >= PROBE_SHAKY
    )
    probes_pass = (
        has_probes
        and not probes_down
        and not probes_degraded
        and (all(s == ProbeState.UP for s in states) or probe_runs > 0)
    )
    enough = calls >= MIN_CALLS
    calls_failing = enough and call_error_rate >= FAILING
    calls_elevated = enough and call_error_rate >= ELEVATED

    if probes_down and (calls_failing or not enough):
        if calls_failing:
            reason = f"Probes fail and {_pct(call_error_rate)} of our calls fail."
        else:
            reason = "Probes fail; too few recent calls to compare."
        return Verdict("provider_down", "Provider down", reason)
    if calls_failing and probes_pass:
        return Verdict(
            "our_calls_failing",
            "Our calls failing",
            f"Probes pass but {_pct(call_error_rate)} of our calls fail: "
            "check keys, configuration and payloads.",
        )
    if calls_failing and not has_probes:
        return Verdict(
            "calls_failing",
            "Calls failing",
            f"{_pct(call_error_rate)} of calls fail. Add a probe to tell the provider from us.",
        )
    if probes_down:
        return Verdict("degraded", "Degraded", "Probes fail while our calls still succeed.")
    if calls_failing or calls_elevated or probes_degraded:
        parts = []
        if calls_elevated:
            parts.append(f"{_pct(call_error_rate)} of calls fail")
        if probes_degraded:
            parts.append("a probe is degraded")
        return Verdict("degraded", "Degraded", (" and ".join(parts) or "Errors are up") + ".")
    if calls == 0 and probe_runs == 0:
        return Verdict("no_data", "No recent data", "No calls or probe runs in the last 15 min.")
    if not has_probes:
        return Verdict("healthy", "Healthy", "Calls succeed; no probe watches the provider yet.")
    if calls == 0:
        return Verdict("healthy", "Healthy", "Probes pass; no calls in the last 15 min.")
    return Verdict("healthy", "Healthy", "Calls and probes succeed.")


# --- Webhooks, the third signal ----------------------------------------------------------------

# This many failed verifications, as at least this share of the deliveries, is "failing";
# fewer among good deliveries only earns a note (forged traffic, most likely).
WEBHOOK_MIN_FAILED = 3
WEBHOOK_FAILING = 0.5
# Verdicts webhook trouble may lead; any other (one that already blames someone) gets it added.
_WEBHOOKS_LEAD = ("healthy", "degraded", "no_data")


@dataclass(frozen=True)
class Webhooks:
    """What an integration's webhook endpoints told us over the verdict's WINDOW."""

    deliveries: int = 0
    failed: int = 0  # failed verification (401)
    #: When every delivery started failing, as the firing signature alert dates a drift.
    failing_since: dt.datetime | None = None
    #: Set when an endpoint has been silent past its limit: for how long, and what is usual.
    silent_for: dt.timedelta | None = None
    usual: str = ""


def _probes_pass(probe_runs: int, probe_error_rate: float, probe_states: Iterable[str]) -> bool:
    states = [str(s) for s in probe_states]
    if ProbeState.DOWN in states or ProbeState.DEGRADED in states:
        return False
    if probe_runs > 0:
        return probe_error_rate < PROBE_SHAKY
    return bool(states) and all(s == ProbeState.UP for s in states)


def _silence(hooks: Webhooks) -> str:
    minutes = hooks.silent_for.total_seconds() / 60
    gap = f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
    return f"none for {gap}" + (f", {hooks.usual}" if hooks.usual else "")


def with_webhooks(
    plain: Verdict,
    hooks: Webhooks | None,
    *,
    calls: int,
    probe_runs: int,
    probe_error_rate: float,
    probe_states: Iterable[str],
) -> Verdict:
    """`plain` (judge's verdict) with what the provider's webhooks say joined in.

    Signatures failing (most deliveries refused) or webhooks stopped (silent past the usual
    gap while probes pass or our calls go on) lead a healthy, degraded or empty verdict;
    a verdict that already blames someone keeps its lead and gets the webhook sentence added.
    A few refused deliveries among good ones add a note only.
    """
    if hooks is None:
        return plain
    probes_pass = _probes_pass(probe_runs, probe_error_rate, probe_states)
    # A drift the signature alert dates counts however many good deliveries came before it.
    failing = hooks.failing_since is not None or (
        hooks.failed >= WEBHOOK_MIN_FAILED
        and hooks.failed >= WEBHOOK_FAILING * max(hooks.deliveries, 1)
    )
    if failing:
        since = f" since {hooks.failing_since:%H:%M} UTC" if hooks.failing_since else ""
        counted = "" if since else f" ({hooks.failed:,} of {hooks.deliveries:,} deliveries)"
        key, label = "webhook_signatures_failing", "Webhook signatures failing"
        lead = f"Webhook signatures failing{since}{counted} — check the rotated secret."
        also = f"Webhook signatures fail too{since}."
    elif hooks.silent_for is not None and (probes_pass or calls >= MIN_CALLS):
        key, label = "webhooks_stopped", "Webhooks stopped"
        why = "while probes pass" if probes_pass else "while our calls succeed"
        if plain.key != "healthy":
            why = "while we still call the provider"
        lead = f"Webhooks stopped arriving {why}: {_silence(hooks)}."
        also = f"Webhooks stopped arriving too: {_silence(hooks)}."
    elif hooks.failed >= WEBHOOK_MIN_FAILED:
        note = (
            f" {hooks.failed:,} webhook deliveries failed verification among good ones: "
            "forged traffic?"
        )
        return replace(plain, reason=plain.reason + note)
    else:
        return plain
    if plain.key not in _WEBHOOKS_LEAD:
        return replace(plain, reason=f"{plain.reason} {also}")
    if plain.key == "degraded":
        lead = f"{lead} {plain.reason[:1].upper()}{plain.reason[1:]}"
    return Verdict(key, label, lead, plain.link)
