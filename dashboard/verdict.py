"""The overview's answer per integration: is the provider down, or is it us?

Joins the signals over the last few minutes: our calls (client and ingest traffic), the
provider's probes (their recent runs and their stored up/degraded/down state), and the
provider's own status page (an open incident, read by a status-page probe).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from monitoring.models import ProbeState

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
) -> Verdict:
    """Decide from recent call and probe figures plus the probes' current states.

    An open incident on the provider's status page is the provider's own word: it leads the
    verdict, and the other signals say how much of it reaches us.
    """
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
