"""Rule kinds: one class per kind — its parameters, its check, what it adds when an alert opens.

`KINDS` maps each `RuleKind` value to its class, as healthchecks' TRANSPORTS maps a channel
kind to its transport: the evaluator, the lifecycle and the rule form ask the kind, and
adding a kind is adding one class here (and its `RuleKind` choice; a system check keeps
the two in step).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from django.core.checks import Error, register
from django.core.exceptions import ValidationError

from monitoring import metrics
from monitoring.alerts.snapshot import HOUR_GRAIN_FROM_MIN, BucketData, Counts
from monitoring.models import AlertRule, Integration, Probe, ProbeKind, ProbeState, RuleKind
from monitoring.redaction import Redactor

# --- Parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    default: int | float | bool
    low: float | None = None
    high: float | None = None
    help: str = ""


_WINDOW = Param(5, 1, 1440, "window W in minutes")


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _shown(value: object) -> str:
    """``value`` as an error message quotes it: clipped, and never raising on a huge int."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr() of an int past Python's digit limit raises; nobody needs the digits anyway.
        return f"{float(value):.3g}" if value.bit_length() < 1000 else "a number that large"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


# --- Findings --------------------------------------------------------------------------------


@dataclass
class Finding:
    """A rule's condition holds for one subject (integration, maybe endpoint)."""

    rule: AlertRule
    integration: Integration | None
    title: str
    summary: str = ""
    figures: dict = field(default_factory=dict)
    endpoint: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            self.rule.pk, self.integration.pk if self.integration else None, self.endpoint
        )


def fingerprint(rule_id: int, integration_id: int | None, endpoint: str = "") -> str:
    key = f"{rule_id}:{integration_id or '-'}"
    return f"{key}:{endpoint}" if endpoint else key


def _num(x: float) -> str:
    """3, 0.4, 1,250: whole numbers plain, small fractions with one decimal."""
    if abs(x - round(x)) < 0.05 or abs(x) >= 10:
        return f"{round(x):,}"
    return f"{x:.1f}"


def _auth_counts(s401: int, s403: int) -> str:
    parts = [f"{s401:,} × 401"] if s401 else []
    if s403:
        parts.append(f"{s403:,} × 403")
    return ", ".join(parts)


def _top(endpoints: dict[str, Counts], key: Callable[[Counts], float], detail, limit=5) -> list:
    ranked = sorted(endpoints.items(), key=lambda kv: (-key(kv[1]), kv[0]))
    return [{"endpoint": ep, "detail": detail(c)} for ep, c in ranked[:limit] if key(c) > 0]


# --- The kind interface ----------------------------------------------------------------------


class Kind:
    """One rule kind. An instance is one rule bound to its validated parameters (`self.p`)."""

    value: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    # (name, repeat interval in seconds) of the all-integrations rule a fresh install gets.
    default_rule: ClassVar[tuple[str, int] | None] = None
    # Figures looked up once when the alert opened (`opened`); the per-cycle figures do not
    # carry them, so the lifecycle keeps them across cycles.
    kept_figures: ClassVar[tuple[str, ...]] = ()

    def __init__(self, rule: AlertRule, params: dict) -> None:
        self.rule = rule
        self.p = params

    @classmethod
    def label(cls) -> str:
        return dict(RuleKind.choices).get(cls.value, cls.value)

    @classmethod
    def help(cls) -> str:
        """One line describing the parameters and defaults, for forms and errors."""
        if not cls.params:
            return "no parameters"
        return "; ".join(
            f"{name} ({p.help}, default {p.default})" for name, p in cls.params.items()
        )

    @classmethod
    def validate(cls, params: object) -> dict:
        """The parameters with defaults filled in; ValidationError listing every problem."""
        if params in (None, ""):
            params = {}
        if not isinstance(params, dict):
            raise ValidationError('Parameters must be a JSON object, e.g. {"window_min": 5}.')
        spec = cls.params
        errors = []
        unknown = sorted(set(params) - set(spec))
        if unknown:
            expected = ", ".join(spec) or "none"
            errors.append(
                f"Unknown parameter {', '.join(unknown)} for {cls.value}; expected: {expected}."
            )
        clean = {}
        for name, p in spec.items():
            value = params.get(name, p.default)
            if isinstance(p.default, bool):
                if not isinstance(value, bool):
                    errors.append(f"{name} must be true or false, got {_shown(value)}.")
                    continue
            elif isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(f"{name} must be a number, got {_shown(value)}.")
                continue
            elif isinstance(value, float) and not math.isfinite(value):
                # int() of these raises; JSON has no such numbers but Python's parser allows them.
                errors.append(f"{name} must be a finite number, got {_shown(value)}.")
                continue
            elif isinstance(p.default, int):
                if value != int(value):
                    errors.append(f"{name} must be a whole number, got {_shown(value)}.")
                    continue
                value = int(value)
            if not isinstance(value, bool) and not (p.low <= value <= p.high):
                errors.append(
                    f"{name} must be between {_plain(p.low)} and {_plain(p.high)}, "
                    f"got {_shown(value)}."
                )
                continue
            clean[name] = value
        if errors:
            raise ValidationError(errors)
        return clean

    @classmethod
    def scope_error(cls, integration: Integration | None) -> str:
        """Why a rule of this kind may not be limited to `integration` ("" when it may)."""
        return ""

    def subjects(self, integrations: dict[int, Integration]) -> list[Integration | None]:
        """What this rule is checked for: its own integration if active, else every active one."""
        iid = self.rule.integration_id
        if iid is not None:
            return [integrations[iid]] if iid in integrations else []
        return list(integrations.values())

    def check(self, subject: Integration | None, data: BucketData) -> list[Finding]:
        raise NotImplementedError

    def opened(self, finding: Finding, now: dt.datetime) -> None:
        """Add to a finding that opens a new alert what is worth looking up only once."""


def kind_of(rule: AlertRule) -> Kind:
    """The rule's kind bound to its validated parameters; ValidationError if they are not."""
    cls = KINDS.get(rule.kind)
    if cls is None:
        raise ValidationError(f"Unknown rule kind {rule.kind!r}.")
    return cls(rule, cls.validate(rule.params))


def validate_params(kind: str, params: object) -> dict:
    """Return the rule's parameters with defaults filled in; raise ValidationError if invalid."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValidationError(f"Unknown rule kind {kind!r}.")
    return cls.validate(params)


def params_help(kind: str) -> str:
    """One line describing a kind's parameters and defaults, for forms and errors."""
    cls = KINDS.get(kind)
    return cls.help() if cls is not None else "no parameters"


# --- The kinds -------------------------------------------------------------------------------


class AuthSpike(Kind):
    value = RuleKind.AUTH_SPIKE
    params = {
        "window_min": _WINDOW,
        "min_count": Param(5, 1, 10**9, "fire only from this many 401 + 403 in W"),
        "factor": Param(3.0, 1, 10**6, "… and at least this many times the baseline"),
    }
    default_rule = ("Failed-auth spike", 4 * 3600)

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w = p["window_min"]
        c = data.window(w).get(integ.pk)
        if c is None:
            return []
        count = c.s401 + c.s403
        if count < p["min_count"]:
            return []
        auth = {h: v[0] for h, v in data.hourly().get(integ.pk, {}).items()}
        per_hour, days = data.baseline(auth, since=integ.created, trailing=True)
        baseline = per_hour * w / 60
        if count < p["factor"] * baseline:
            return []
        advice = []
        if c.s401:
            advice.append(
                f"{c.s401:,} × 401 Unauthorized: the key is missing, wrong, expired or revoked."
            )
        if c.s403:
            advice.append(
                f"{c.s403:,} × 403 Forbidden: the key works but lacks a scope or permission for "
                "these calls (least privilege)."
            )
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — failed-auth spike: {_auth_counts(c.s401, c.s403)} in {w} min "
                f"(baseline {_num(baseline)})",
                summary="\n".join(advice),
                figures={
                    "s401": c.s401,
                    "s403": c.s403,
                    "count": count,
                    "window_min": w,
                    "baseline": round(baseline, 2),
                    "baseline_days": days,
                    "facts": [
                        ["401 + 403 in the window", f"{count:,} in {w} min"],
                        ["Baseline for the window", f"{_num(baseline)} (median of {days} days)"],
                        ["Calls in the window", f"{c.total:,}"],
                    ],
                    "endpoints": _top(
                        data.endpoints(w, integ.pk),
                        lambda e: e.s401 + e.s403,
                        lambda e: _auth_counts(e.s401, e.s403),
                    ),
                },
            )
        ]


class SigninFailures(Kind):
    """Failed sign-ins to Upstream itself: one check per rule, about no integration."""

    value = RuleKind.SIGNIN_FAILURES
    params = {
        "window_min": _WINDOW,
        "min_count": Param(10, 1, 10**9, "failed sign-ins in W, all addresses together"),
        "per_ip_min": Param(5, 1, 10**9, "failed sign-ins in W from one address"),
        "factor": Param(3.0, 1, 10**6, "… and at least this many times the baseline"),
    }
    default_rule = ("Failed sign-ins to Upstream", 4 * 3600)

    @classmethod
    def scope_error(cls, integration: Integration | None) -> str:
        if integration is None:
            return ""
        return "Failed sign-ins concern Upstream itself: leave the integration empty."

    def subjects(self, integrations: dict[int, Integration]) -> list[Integration | None]:
        return [None]

    @staticmethod
    def _api_key_failures(data: BucketData, minutes: int) -> int:
        # Refused API keys (api/auth.py) share the sign-in audit action: the rule counts
        # both and says which. Only asked when the window has failures at all.
        from monitoring.alerts.snapshot import _ATTEMPTS
        from monitoring.models import ActorType, AuditLog

        rows = AuditLog.objects.filter(
            action="auth.signin_failed",
            actor_type=ActorType.API_KEY,
            created__gt=data.now - dt.timedelta(minutes=minutes),
            created__lte=data.now,
        )
        return rows.order_by().aggregate(n=_ATTEMPTS)["n"] or 0

    def check(self, _subject: Integration | None, data: BucketData) -> list[Finding]:
        p = self.p
        w = p["window_min"]
        per_ip = data.signins(w)
        total = sum(per_ip.values())
        if not total:
            return []
        hourly = data.signin_hourly()
        per_hour, _days = data.baseline(hourly.get("*", {}), since=None, trailing=True)
        baseline = per_hour * w / 60
        overall = total >= p["min_count"] and total >= p["factor"] * baseline
        hot = []
        for ip, n in per_ip.items():
            ip_hour, _ = data.baseline(hourly.get(ip, {}), since=None, trailing=True)
            if n >= p["per_ip_min"] and n >= p["factor"] * ip_hour * w / 60:
                hot.append((n, ip))
        if not overall and not hot:
            return []
        top = sorted(((n, ip) for ip, n in per_ip.items()), key=lambda t: (-t[0], t[1]))
        busiest_n, busiest_ip = top[0]
        keys = self._api_key_failures(data, w)
        if keys >= total:
            what, noun = "API keys", "failed API key authentications"
            summary = "Someone is guessing API keys, or a service still sends a revoked or "
            summary += "expired key. The audit log lists every attempt with its key prefix."
        else:
            what = "sign-ins" if not keys else "sign-ins and API keys"
            noun = "failed sign-ins" if not keys else "failed sign-ins and API key authentications"
            summary = "Someone is guessing passwords, or a user is locked out. The audit log "
            summary += "lists every attempt with its address and user agent."
        title = f"Upstream {what} — {total:,} {noun} in {w} min (baseline {_num(baseline)})"
        if busiest_n > 1:
            title += f", {busiest_n:,} from {busiest_ip or 'an unknown address'}"
        return [
            Finding(
                self.rule,
                None,
                title=title,
                summary=summary,
                figures={
                    "count": total,
                    "api_key_failures": keys,
                    "window_min": w,
                    "baseline": round(baseline, 2),
                    "addresses": [[ip or "unknown", n] for n, ip in top[:10]],
                    "facts": [
                        [f"{noun.capitalize()} in the window", f"{total:,} in {w} min"],
                        ["Baseline for the window", _num(baseline)],
                        ["Addresses", ", ".join(f"{ip or 'unknown'} ({n})" for n, ip in top[:5])],
                    ],
                },
            )
        ]


class ErrorRate(Kind):
    value = RuleKind.ERROR_RATE
    params = {
        "window_min": _WINDOW,
        "threshold_pct": Param(5.0, 0.01, 100, "fire at this error rate (%)"),
        "min_volume": Param(20, 1, 10**9, "only with at least this many calls in W"),
        "include_4xx": Param(False, help="count 4xx answers as errors too"),
    }
    default_rule = ("Error rate", 4 * 3600)

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w = p["window_min"]
        c = data.window(w).get(integ.pk)
        if c is None or c.total < p["min_volume"]:
            return []
        errors = c.errors(p["include_4xx"])
        rate = 100 * errors / c.total
        if rate < p["threshold_pct"]:
            return []
        breakdown = [
            ("5xx", c.server_errors), ("timeouts", c.timeouts),
            ("connect errors", c.connect_errors), ("TLS errors", c.tls_errors),
            ("other transport errors", c.other_errors),
        ]  # fmt: skip
        if p["include_4xx"]:
            breakdown.append(("4xx", c.client_errors))
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — error rate {rate:.1f} % in {w} min "
                f"({errors:,} of {c.total:,} calls)",
                figures={
                    "rate_pct": round(rate, 2),
                    "errors": errors,
                    "total": c.total,
                    "window_min": w,
                    "facts": [
                        ["Error rate", f"{rate:.1f} % (threshold {p['threshold_pct']:g} %)"],
                        ["Errors", ", ".join(f"{n:,} {label}" for label, n in breakdown if n)],
                        ["Calls in the window", f"{c.total:,} in {w} min"],
                    ],
                    "endpoints": _top(
                        data.endpoints(w, integ.pk),
                        lambda e: e.errors(p["include_4xx"]),
                        lambda e: f"{e.errors(p['include_4xx']):,} errors of {e.total:,} calls",
                    ),
                },
            )
        ]


class Latency(Kind):
    value = RuleKind.LATENCY
    params = {
        "window_min": _WINDOW,
        "percentile": Param(95.0, 1, 100, "which percentile (50, 95, 99.9 …)"),
        "threshold_ms": Param(2000, 1, 600_000, "fire at this latency (ms)"),
        "min_volume": Param(10, 1, 10**9, "only with at least this many calls in W"),
    }

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w, q = p["window_min"], p["percentile"]
        c = data.window(w).get(integ.pk)
        if c is None or c.total < p["min_volume"]:
            return []
        hist, low, high = data.latency(w, integ.pk)
        value = hist.percentile(q, low, high)
        if value is None or value < p["threshold_ms"]:
            return []
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — p{q:g} latency {value:,.0f} ms in {w} min "
                f"(threshold {p['threshold_ms']:,} ms)",
                figures={
                    "percentile": q,
                    "value_ms": round(value, 1),
                    "window_min": w,
                    "facts": [
                        [
                            f"p{q:g} latency",
                            f"{value:,.0f} ms (threshold {p['threshold_ms']:,} ms)",
                        ],
                        ["Slowest call", f"{high:,.0f} ms" if high is not None else "—"],
                        ["Calls in the window", f"{c.total:,} in {w} min"],
                    ],
                    "endpoints": _top(
                        data.endpoints(w, integ.pk),
                        lambda e: e.latency_sum / e.total if e.total else 0,
                        lambda e: (
                            f"average {e.latency_sum / e.total:,.0f} ms over {e.total:,} calls"
                        ),
                    ),
                },
            )
        ]


class ProbeDown(Kind):
    value = RuleKind.PROBE_DOWN
    default_rule = ("Probe down", 4 * 3600)

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        down = [pr for pr in data.probes().get(integ.pk, []) if pr.state == ProbeState.DOWN]
        if not down:
            return []
        redactor = Redactor(integ.extra_redactions())
        names = ", ".join(pr.name for pr in down[:3]) + (
            f" +{len(down) - 3} more" if len(down) > 3 else ""
        )
        facts = []
        for pr in down:
            since = f" since {pr.since:%Y-%m-%d %H:%M} UTC" if pr.since else ""
            why = " — ".join(x for x in (pr.reason, redactor.text(pr.message)[:200]) if x)
            facts.append([pr.name, f"down{since}" + (f": {why}" if why else "")])
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — probe down: {names}",
                summary="Upstream's own synthetic checks fail too: if your calls fail as well, "
                "the provider is the likely cause.",
                figures={"probes": [pr.name for pr in down], "facts": facts},
            )
        ]


class RateLimit(Kind):
    value = RuleKind.RATE_LIMIT
    params = {
        "window_min": Param(15, 2, HOUR_GRAIN_FROM_MIN, "window W in minutes"),
        "headroom_pct": Param(10.0, 0, 100, "fire when remaining / limit falls to this (%)"),
        "horizon_min": Param(15, 1, 1440, "… or the burn rate empties it within this (min)"),
    }

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        series = data.ratelimit(p["window_min"]).get(integ.pk)
        if not series:
            return []
        _, remaining, limit = series[-1]
        headroom = 100 * remaining / limit
        left = f"{remaining:,} of {limit:,} left"
        if headroom <= p["headroom_pct"]:
            title = f"{integ} — rate-limit headroom {headroom:.0f} % ({left})"
            facts = [["Headroom", f"{headroom:.1f} % (threshold {p['headroom_pct']:g} %)"]]
        else:
            # Burn rate over the stretch since the quota last went up (a reset), on the same
            # budget: the tightest one (requests or tokens) can change from minute to minute.
            run = [series[-1]]
            for point in reversed(series[:-1]):
                if point[1] < run[-1][1] or point[2] != limit:
                    break
                run.append(point)
            first, last = run[-1], run[0]
            minutes = (last[0] - first[0]).total_seconds() / 60
            burn = (first[1] - last[1]) / minutes if minutes else 0
            if burn <= 0 or remaining / burn > p["horizon_min"]:
                return []
            eta = remaining / burn
            title = (
                f"{integ} — rate limit runs out in about {eta:.0f} min ({left}, {burn:,.0f}/min)"
            )
            # Calls or tokens: whichever budget is the tightest.
            facts = [["Projected exhaustion", f"in {eta:.0f} min at {burn:,.1f} a minute"]]
        facts.append(["Remaining", left])
        return [
            Finding(
                self.rule,
                integ,
                title=title,
                summary="Slow down, batch calls or ask the provider for a higher quota before "
                "calls start failing with 429.",
                figures={"remaining": remaining, "limit": limit, "facts": facts},
            )
        ]


class CertExpiry(Kind):
    value = RuleKind.CERT_EXPIRY
    params = {"days": Param(14, 0, 365, "fire when a probed certificate expires within this")}
    default_rule = ("Certificate expiring", 24 * 3600)

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        probed = [pr for pr in data.probes().get(integ.pk, []) if pr.cert_days_left is not None]
        if not probed:
            return []
        worst = min(probed, key=lambda pr: pr.cert_days_left)
        days = worst.cert_days_left
        if days > self.p["days"]:
            return []
        when = "has expired" if days <= 0 else f"expires in {int(days)} days"
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — TLS certificate {when} (probe {worst.name})",
                figures={
                    "days_left": round(days, 1),
                    "facts": [
                        [pr.name, f"{pr.cert_days_left:.0f} days left"] for pr in probed[:10]
                    ],
                },
            )
        ]


class Deprecation(Kind):
    """One alert per deprecated endpoint; the sunset date is looked up when it opens."""

    value = RuleKind.DEPRECATION
    params = {"window_min": Param(1440, 1, 1440, "look-back in minutes; clears after W without")}
    default_rule = ("Deprecated endpoint", 7 * 24 * 3600)
    kept_figures = ("sunset_at",)

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        w = self.p["window_min"]
        c = data.window(w).get(integ.pk)
        if c is None or not c.deprecated:
            return []
        return [
            Finding(
                self.rule,
                integ,
                endpoint=endpoint,
                title=f"{integ} — deprecated endpoint {endpoint}",
                summary="The provider marks this endpoint deprecated (Deprecation or Sunset "
                "header). Move to its successor before the sunset date.",
                figures={
                    "deprecated_calls": c.deprecated,
                    "facts": [["Deprecated responses", f"{c.deprecated:,} of {c.total:,} calls"]],
                },
            )
            for endpoint, c in sorted(data.endpoints(w, integ.pk).items())
            if c.deprecated
        ]

    def opened(self, finding: Finding, now: dt.datetime) -> None:
        """The sunset date of a newly deprecated endpoint (buckets only count the header).

        One indexed raw-log read per *new* deprecation alert, never per cycle.
        """
        found = metrics.deprecations(
            finding.integration.pk,
            now - dt.timedelta(minutes=self.p["window_min"]),
            endpoint=finding.endpoint,
            limit=1,
        )
        if not found:
            return
        row = found[0]
        figures = finding.figures
        if row.sunset_at:
            figures["sunset_at"] = row.sunset_at.isoformat()
            days = (row.sunset_at - now).days
            countdown = f"in {days} days" if days >= 0 else f"{-days} days ago"
            finding.title += f", sunset {row.sunset_at:%Y-%m-%d} ({countdown})"
            figures["facts"].append(["Sunset", f"{row.sunset_at:%Y-%m-%d %H:%M} UTC"])
        if row.deprecation_at:
            figures["facts"].append(["Deprecated since", f"{row.deprecation_at:%Y-%m-%d}"])
        if row.link:
            figures["facts"].append(["Details", row.link[:300]])


class TrafficStopped(Kind):
    value = RuleKind.TRAFFIC_STOPPED
    params = {
        "window_min": Param(15, 1, 1440, "window W in minutes"),
        "min_expected": Param(20, 1, 10**9, "fire only if the baseline expects this many"),
        "min_history_days": Param(3, 1, 7, "days of history needed before it can fire"),
    }

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        p = self.p
        w = p["window_min"]
        c = data.window(w).get(integ.pk)
        if c is not None and c.calls:
            return []
        calls = {h: v[1] for h, v in data.hourly().get(integ.pk, {}).items()}
        per_hour, days = data.baseline(calls, since=integ.created, trailing=False)
        expected = per_hour * w / 60
        if days < p["min_history_days"] or expected < p["min_expected"]:
            return []
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — traffic stopped: no calls in {w} min (usually {_num(expected)})",
                summary="Your application has stopped calling this provider (probes are not "
                "counted). A deploy, a crashed worker or a feature flag?",
                figures={
                    "expected": round(expected, 1),
                    "window_min": w,
                    "baseline_days": days,
                    "facts": [
                        [
                            "Expected calls in the window",
                            f"{_num(expected)} (median of {days} days)",
                        ]
                    ],
                },
            )
        ]


class ProviderIncident(Kind):
    """The provider's own status page reports an open incident (a status-page probe)."""

    value = RuleKind.PROVIDER_INCIDENT

    def __init__(self, rule: AlertRule, params: dict) -> None:
        super().__init__(rule, params)
        self._open: dict[int, list[tuple[str, str, str, dt.datetime | None]]] | None = None

    def _incidents(self) -> dict[int, list[tuple[str, str, str, dt.datetime | None]]]:
        # One query per rule and cycle, over every integration at once.
        if self._open is None:
            found: dict[int, list] = {}
            rows = (
                Probe.objects.filter(enabled=True, kind=ProbeKind.STATUSPAGE)
                .exclude(incident_name="")
                .values_list("integration_id", "name", "incident_name", "incident_url",
                             "incident_since")
            )  # fmt: skip
            for iid, *rest in rows:
                found.setdefault(iid, []).append(tuple(rest))
            self._open = found
        return self._open

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        open_ = self._incidents().get(integ.pk, [])
        if not open_:
            return []
        facts = []
        for probe_name, title, link, since in open_:
            when = f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""
            facts.append([probe_name, f"{title}{when}" + (f" — {link}" if link else "")])
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — provider reports an incident: {open_[0][1]}"[:300],
                summary="The provider's status page lists an unresolved incident: failures "
                "now are likely on their side.",
                figures={"incidents": [t for _, t, _, _ in open_], "facts": facts},
            )
        ]


class VersionDrift(Kind):
    """Responses announce an API version other than the integration's expected one."""

    value = RuleKind.VERSION_DRIFT
    params = {"window_min": Param(60, 1, 1440, "look-back in minutes; clears after W without")}

    def check(self, integ: Integration, data: BucketData) -> list[Finding]:
        expected = (integ.expected_api_version or "").strip()
        if not expected:
            return []
        since = data.now - dt.timedelta(minutes=self.p["window_min"])
        seen = metrics.announced_versions(integ.pk, since)
        other = [v for v in seen if v.version != expected]
        if not other:
            return []
        shown = ", ".join(v.version for v in other[:3])
        return [
            Finding(
                self.rule,
                integ,
                title=f"{integ} — API version drift: expected {expected}, seen {shown}"[:300],
                summary="The provider answers with an API version other than the one this "
                "integration was built against: check its changelog, then update the code "
                "or the expected version.",
                figures={
                    "expected": expected,
                    "seen": [v.version for v in other],
                    "facts": [
                        [v.version, f"{v.responses:,} recent responses, last {v.last_seen:%H:%M}"]
                        for v in other[:5]
                    ],
                },
            )
        ]


# The webhook kinds live in their own module; it subclasses Kind, so it is imported here,
# after everything it needs (importing it first still works: the package loads rules first).
from monitoring.alerts import webhook_rules  # noqa: E402

# In RuleKind's order: the rule form lists the kinds' parameters in this order.
KINDS: dict[str, type[Kind]] = {
    cls.value: cls
    for cls in (
        AuthSpike,
        SigninFailures,
        ErrorRate,
        Latency,
        ProbeDown,
        RateLimit,
        CertExpiry,
        Deprecation,
        TrafficStopped,
        ProviderIncident,
        VersionDrift,
        *webhook_rules.WEBHOOK_KINDS,
    )
}


@register()
def check_rule_kinds(app_configs, **kwargs) -> list[Error]:
    """The registry and the model's choices must name the same kinds."""
    missing = [k for k in RuleKind.values if k not in KINDS]
    extra = [k for k in KINDS if k not in RuleKind.values]
    if not missing and not extra:
        return []
    problems = []
    if missing:
        problems.append(f"RuleKind choices without a rule class: {', '.join(missing)}")
    if extra:
        problems.append(f"rule classes without a RuleKind choice: {', '.join(extra)}")
    return [
        Error(
            "Alert rule kinds out of step: " + "; ".join(problems),
            hint="Add a Kind subclass to monitoring.alerts.rules.KINDS for every RuleKind "
            "choice in monitoring/models.py, and a choice (with a migration) for every class.",
            obj="monitoring.alerts.rules.KINDS",
            id="upstream.E020",
        )
    ]
