"""The best-practice scorecard: each integration graded against its guides, from evidence.

Every check reads one ``Evidence``: the window's metric buckets (``monitoring.metrics``) and
a bounded sample of the integration's newest attempts (at most ``SAMPLE_ROWS``, read through
the (integration, created, id) index), never a scan of the raw log over the window. Checks
are one class each in ``CHECKS`` (adding a check is adding a class); ``compute`` runs them,
``refresh`` stores the result as a ``Scorecard`` row so pages and the API read it cheaply,
and the week-old row tells what changed.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from monitoring import metrics
from monitoring.models import (
    AlertRule,
    Delivery,
    DeliveryStatus,
    Environment,
    Integration,
    Notification,
    NotificationStatus,
    RequestLog,
)
from monitoring.models.scorecards import Grade, KeySighting, Scorecard

WINDOW = timedelta(days=7)
SAMPLE_ROWS = 2000
MIN_CALLS = 20  # fewer calls than this in the window: not enough data for traffic checks
LARGE_BODY = 256 * 1024  # a list answer this big without paging parameters
CACHE_WINDOW_S = 60  # identical GETs this close together could have been cached
BURST_CALLS = 20  # this many sequential calls to one endpoint …
BURST_S = 10.0  # … within this many seconds is a burst a batch would serve
BURSTS_FAIL = 5  # this many bursts in the sample: batching is clearly missing
KEY_MAX_AGE_DAYS = 90
SUNSET_FAIL_DAYS = 30
DELIVERED_DAYS = 30
#: 4xx a retry can fix: timeout, conflict, too early, rate limited.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
PAGING_PARAMS = frozenset(
    {
        "page",
        "per_page",
        "page_size",
        "pagesize",
        "limit",
        "offset",
        "cursor",
        "starting_after",
        "ending_before",
        "after",
        "before",
        "next",
        "page_token",
        "pagetoken",
        "max_results",
    }
)
_SCORES = {Grade.PASS: 100, Grade.WARN: 50, Grade.FAIL: 0}
_LETTERS = ((90, "A"), (75, "B"), (60, "C"), (40, "D"), (0, "F"))


@dataclass
class Result:
    """One check's grade with one sentence of evidence and where to look."""

    key: str
    title: str
    grade: str
    evidence: str
    guide: str
    link: str = ""  # a dashboard URL (path and query) showing the evidence
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sampled:
    """The slice of an attempt the checks read (a bounded, newest-first sample)."""

    created: datetime
    source: str
    method: str
    scheme: str
    path: str
    query: str
    status: int | None
    error_code: str
    call_id: str
    attempt: int
    backoff_ms: float
    retry_after_s: float | None
    ratelimit_reset: datetime | None
    response_bytes: int | None
    deprecated: bool
    sunset_at: datetime | None
    api_version: str
    key_fingerprint: str
    version_header: str
    flags: str  # comma-separated request-side diagnoses (batch_too_large)

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


_SAMPLED = tuple(Sampled.__dataclass_fields__)


class Evidence:
    """What the checks see of one integration over the window; each part is read once."""

    def __init__(self, integration: Integration, now: datetime) -> None:
        self.integration = integration
        self.now = now
        self.start = now - WINDOW
        self._cache: dict[str, Any] = {}

    def _once(self, name: str, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def summary(self) -> metrics.Summary:
        return self._once(
            "summary",
            lambda: metrics.summary([self.integration.pk], self.start, self.now, now=self.now),
        )

    @property
    def endpoints(self) -> list[metrics.EndpointStat]:
        return self._once(
            "endpoints",
            lambda: metrics.top_endpoints(
                self.integration.pk, self.start, self.now, by="volume", limit=50, now=self.now
            ),
        )

    @property
    def sample(self) -> list[Sampled]:
        """The newest attempts in the window, oldest first (bounded by SAMPLE_ROWS)."""

        def read() -> list[Sampled]:
            rows = (
                RequestLog.objects.filter(
                    integration_id=self.integration.pk, created__gte=self.start
                )
                .order_by("-created", "-id")
                .values_list(*_SAMPLED)[:SAMPLE_ROWS]
            )
            return [Sampled(*row) for row in reversed(rows)]

        return self._once("sample", read)

    @property
    def calls(self) -> list[Sampled]:
        """The sample's own calls (client, ingest, OTLP): not probes, not webhooks."""
        return self._once(
            "calls", lambda: [s for s in self.sample if s.source in ("client", "ingest", "otlp")]
        )

    @property
    def by_call(self) -> dict[str, list[Sampled]]:
        """Attempts of each call id, in order (calls with retries only)."""

        def group() -> dict[str, list[Sampled]]:
            calls: dict[str, list[Sampled]] = defaultdict(list)
            for s in self.calls:
                if s.call_id:
                    calls[s.call_id].append(s)
            return {
                cid: sorted(attempts, key=lambda a: a.attempt)
                for cid, attempts in calls.items()
                if len(attempts) > 1
            }

        return self._once("by_call", group)

    def log_link(self, **query: Any) -> str:
        """The request log filtered to this integration over the scorecard's own window."""
        from urllib.parse import urlencode

        from django.urls import reverse

        params = {"integration": self.integration.pk, "range": f"{WINDOW.days}d", **query}
        return f"{reverse('request_log')}?{urlencode(params)}"

    def integration_link(self) -> str:
        from django.urls import reverse

        return reverse("integration", args=[self.integration.pk])


class Check:
    """One recommendation from the guides, graded from evidence."""

    key: ClassVar[str]
    title: ClassVar[str]
    guide: ClassVar[str]

    def run(self, ev: Evidence) -> Result:
        raise NotImplementedError

    def result(self, grade: str, evidence: str, link: str = "", **figures: Any) -> Result:
        return Result(self.key, self.title, grade, evidence, self.guide, link, figures)

    def too_little(self, ev: Evidence, what: str = "calls") -> Result:
        return self.result(
            Grade.UNKNOWN,
            f"Only {len(ev.calls)} {what} seen in the last 7 days; {MIN_CALLS} are needed.",
        )


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "0 %"


class HttpsEverywhere(Check):
    key = "https"
    title = "HTTPS everywhere"
    guide = "Always call the API over HTTPS; never send a credential over plain HTTP."

    def run(self, ev: Evidence) -> Result:
        if not ev.calls:
            return self.too_little(ev)
        plain = [s for s in ev.calls if s.scheme == "http"]
        if plain:
            endpoints = Counter(s.endpoint for s in plain)
            worst = ", ".join(e for e, _ in endpoints.most_common(3))
            return self.result(
                Grade.FAIL,
                f"{len(plain)} of {len(ev.calls)} sampled calls used plain http ({worst}).",
                ev.log_link(),
                plain=len(plain),
                endpoints=len(endpoints),
            )
        if not ev.integration.require_https:
            return self.result(
                Grade.WARN,
                f"All {len(ev.calls)} sampled calls used https, but the integration accepts "
                "plain http (its https policy is off).",
                plain=0,
            )
        return self.result(
            Grade.PASS,
            f"All {len(ev.calls)} sampled calls used https, and plain http is refused.",
            plain=0,
        )


class ErrorsHandled(Check):
    key = "errors"
    title = "Errors handled"
    guide = (
        "Read the provider's error codes and handle them; never retry a 4xx that a retry "
        "cannot fix (400, 401, 403, 422)."
    )

    def run(self, ev: Evidence) -> Result:
        if len(ev.calls) < MIN_CALLS:
            return self.too_little(ev)
        failures = [s for s in ev.calls if s.status is not None and s.status >= 400]
        coded = sum(1 for s in failures if s.error_code)
        pointless = Counter()
        for attempts in ev.by_call.values():
            for retried in attempts[:-1]:  # each attempt a later one repeated
                status = retried.status
                if status and 400 <= status < 500 and status not in RETRYABLE_4XX:
                    pointless[status] += 1
        if pointless:
            listed = ", ".join(f"{n}× after {code}" for code, n in sorted(pointless.items()))
            return self.result(
                Grade.FAIL,
                f"{sum(pointless.values())} retries of answers a retry cannot fix ({listed}).",
                ev.log_link(),
                pointless_retries=sum(pointless.values()),
            )
        if not failures:
            return self.result(Grade.PASS, f"No failed answers among {len(ev.calls)} calls.")
        grade = Grade.PASS if coded / len(failures) >= 0.8 else Grade.WARN
        return self.result(
            grade,
            f"{_share(coded, len(failures))} of {len(failures)} failures carried an error code "
            "the monitor could read; no 4xx was retried in vain.",
            ev.log_link(outcome="client_error"),
            coded_share=round(coded / len(failures), 3),
        )


class RetriesBackOff(Check):
    key = "retries"
    title = "Retries with exponential backoff"
    guide = (
        "Retry transient failures with exponential backoff and jitter, and never sooner than "
        "Retry-After or the rate-limit reset."
    )

    def run(self, ev: Evidence) -> Result:
        if len(ev.calls) < MIN_CALLS:
            return self.too_little(ev)
        early = immediate = flat = 0
        for attempts in ev.by_call.values():
            waits = [a.backoff_ms for a in attempts[1:]]
            for before, after in pairwise(attempts):
                asked = _asked_wait_ms(before)
                if asked is not None and after.backoff_ms + 50 < asked:
                    early += 1
                elif after.backoff_ms < 50:
                    immediate += 1
            if len(waits) >= 2 and any(b <= a for a, b in pairwise(waits)):
                flat += 1
        storms = _retry_storm_minutes(ev.calls)
        retried = len(ev.by_call)
        if early or storms:
            parts = []
            if early:
                parts.append(f"{early} retries came sooner than Retry-After or the reset")
            if storms:
                parts.append(f"{storms} minute(s) held more retries than first attempts")
            return self.result(
                Grade.FAIL,
                "; ".join(parts) + ".",
                ev.log_link(),
                early=early,
                storm_minutes=storms,
            )
        if immediate or flat:
            return self.result(
                Grade.WARN,
                f"{immediate} immediate retries and {flat} calls whose waits did not grow, "
                f"of {retried} retried calls.",
                ev.log_link(),
                immediate=immediate,
                flat=flat,
            )
        if not retried:
            return self.result(Grade.PASS, "No call needed a retry in the sample.")
        return self.result(
            Grade.PASS,
            f"{retried} retried calls all waited, with growing waits, and honoured Retry-After.",
        )


def _asked_wait_ms(attempt: Sampled) -> float | None:
    """How long the answer asked the caller to wait before trying again, if it did."""
    if attempt.retry_after_s is not None:
        return attempt.retry_after_s * 1000
    if attempt.status == 429 and attempt.ratelimit_reset is not None:
        return max(0.0, (attempt.ratelimit_reset - attempt.created).total_seconds() * 1000)
    return None


def _retry_storm_minutes(calls: list[Sampled]) -> int:
    firsts: Counter = Counter()
    retries: Counter = Counter()
    for s in calls:
        minute = s.created.replace(second=0, microsecond=0)
        (retries if s.attempt > 1 else firsts)[minute] += 1
    return sum(1 for minute, n in retries.items() if n >= 3 and n > firsts[minute])


class RateLimitsRespected(Check):
    key = "rate_limits"
    title = "Rate limits respected"
    guide = (
        "Read the rate-limit headers and slow down as the quota runs low instead of running "
        "into 429s."
    )

    def run(self, ev: Evidence) -> Result:
        s = ev.summary
        if s.total < MIN_CALLS:
            return self.too_little(ev)
        headroom = None
        if s.ratelimit_limit and s.ratelimit_remaining_min is not None:
            headroom = s.ratelimit_remaining_min / s.ratelimit_limit
        share = s.s429 / s.total
        kept_going = _full_speed_into_429s(ev.calls)
        text = f"{s.s429} of {s.total} calls answered 429 ({_share(s.s429, s.total)})"
        if headroom is not None:
            text += f"; the lowest headroom was {100 * headroom:.0f} % of the quota"
        figures = {"s429": s.s429, "share": round(share, 4), "headroom": headroom}
        if share > 0.01 or kept_going:
            if kept_going:
                text += f"; the request rate did not slow before {kept_going} 429 bursts"
            return self.result(Grade.FAIL, text + ".", ev.log_link(status=429), **figures)
        if s.s429 or (headroom is not None and headroom < 0.1):
            return self.result(Grade.WARN, text + ".", ev.log_link(status=429), **figures)
        if headroom is None:
            text += "; the provider publishes no rate-limit headers here"
        return self.result(Grade.PASS, text + ".", **figures)


def _full_speed_into_429s(calls: list[Sampled]) -> int:
    """Minutes whose 429s came at a rate no lower than the minute before: nobody slowed."""
    per_minute: Counter = Counter()
    limited: Counter = Counter()
    for s in calls:
        minute = s.created.replace(second=0, microsecond=0)
        per_minute[minute] += 1
        if s.status == 429:
            limited[minute] += 1
    bursts = 0
    for minute, n in limited.items():
        before = per_minute.get(minute - timedelta(minutes=1), 0)
        if n >= 5 and per_minute[minute] >= before > 0:
            bursts += 1
    return bursts


class Pagination(Check):
    key = "pagination"
    title = "Pagination"
    guide = "Page through list endpoints instead of fetching everything in one answer."

    def run(self, ev: Evidence) -> Result:
        lists = [s for s in ev.calls if s.method == "GET" and s.status and s.status < 300]
        if len(lists) < MIN_CALLS:
            return self.too_little(ev, "successful GETs")
        large = [s for s in lists if (s.response_bytes or 0) > LARGE_BODY and not _paged(s.query)]
        paged = sum(1 for s in lists if _paged(s.query))
        if large:
            endpoints = Counter(s.endpoint for s in large)
            worst = ", ".join(e for e, _ in endpoints.most_common(3))
            grade = Grade.FAIL if len(large) >= 10 else Grade.WARN
            return self.result(
                grade,
                f"{len(large)} answers over {LARGE_BODY // 1024} KiB came without paging "
                f"parameters ({worst}).",
                ev.log_link(method="GET"),
                unpaged_large=len(large),
            )
        return self.result(
            Grade.PASS,
            f"No large unpaged answers; {paged} of {len(lists)} GETs used paging parameters.",
            paged=paged,
        )


def _paged(query: str) -> bool:
    return any(name.lower() in PAGING_PARAMS for name, _ in parse_qsl(query or ""))


class Versioning(Check):
    key = "versioning"
    title = "Versioning"
    guide = (
        "Pin the API version you built against and move off deprecated endpoints before "
        "their sunset."
    )

    def run(self, ev: Evidence) -> Result:
        if len(ev.calls) < MIN_CALLS:
            return self.too_little(ev)
        deprecated = metrics.deprecations(ev.integration.pk, ev.start, limit=10)
        expected = ev.integration.expected_api_version
        drift = Counter(
            s.api_version
            for s in ev.calls
            if s.api_version and expected and s.api_version != expected
        )
        figures = {"deprecated_endpoints": len(deprecated), "drift": sum(drift.values())}
        soonest = min((d.sunset_at for d in deprecated if d.sunset_at), default=None)
        if soonest is not None and soonest - ev.now <= timedelta(days=SUNSET_FAIL_DAYS):
            days = max(0, (soonest - ev.now).days)
            return self.result(
                Grade.FAIL,
                f"{len(deprecated)} deprecated endpoint(s) still in use; the first sunset is in "
                f"{days} days ({deprecated[0].endpoint}).",
                ev.integration_link(),
                **figures,
            )
        unpinned = _unpinned(ev)
        if unpinned:
            figures["unpinned"] = unpinned[0]
        if deprecated or drift or unpinned:
            parts = []
            if unpinned:
                parts.append(
                    f"{unpinned[0]} of {unpinned[1]} calls sent no {unpinned[2]} header "
                    "(the version is not pinned)"
                )
            if deprecated:
                parts.append(f"{len(deprecated)} deprecated endpoint(s) still in use")
            if drift:
                version, n = drift.most_common(1)[0]
                parts.append(f"{n} answers came in version {version}, not {expected}")
            return self.result(Grade.WARN, "; ".join(parts) + ".", ev.integration_link(), **figures)
        text = "No deprecated endpoint in use"
        text += f", every answer in version {expected}." if expected else "."
        return self.result(Grade.PASS, text, **figures)


def _unpinned(ev: Evidence) -> tuple[int, int, str] | None:
    """(calls without the preset's version header, calls whose caller reported headers, the
    header's name), when the preset names one and the SDK reported what was sent."""
    from monitoring import presets

    name = ""
    if ev.integration.preset:
        try:
            name = presets.get(ev.integration.preset).version_header
        except KeyError:
            name = ""
    if not name:
        return None
    reported = [s for s in ev.calls if s.key_fingerprint or s.version_header]
    if len(reported) < MIN_CALLS:
        return None
    missing = sum(1 for s in reported if s.version_header.lower() != name.lower())
    return (missing, len(reported), name) if missing else None


class KeysKeptSafe(Check):
    key = "keys"
    title = "API keys kept safe"
    guide = "Send keys in headers, never in URLs; rotate them; keep production and test keys apart."

    def run(self, ev: Evidence) -> Result:
        if not ev.calls:
            return self.too_little(ev)
        in_query = [s for s in ev.calls if "[redacted]" in (s.query or "")]
        if in_query:
            names = Counter(
                name
                for s in in_query
                for name, value in parse_qsl(s.query, keep_blank_values=True)
                if value == "[redacted]"
            )
            listed = ", ".join(n for n, _ in names.most_common(3))
            return self.result(
                Grade.FAIL,
                f"{len(in_query)} sampled calls carried a credential in the query string "
                f"({listed}).",
                ev.log_link(),
                in_query=len(in_query),
            )
        keys = {s.key_fingerprint for s in ev.calls if s.key_fingerprint}
        shared = _keys_shared_across_environments(ev, keys)
        if shared:
            return self.result(
                Grade.FAIL,
                f"The same key (fingerprint {sorted(shared)[0]}) is used in "
                f"{ev.integration.get_environment_display().lower()} and in "
                f"{', '.join(sorted(shared.values()))}: keep production and test keys apart.",
                shared=len(shared),
            )
        oldest = _oldest_key(ev, keys)
        if oldest is not None and (ev.now - oldest[1]).days > KEY_MAX_AGE_DAYS:
            return self.result(
                Grade.WARN,
                f"Key {oldest[0]} has been in use for {(ev.now - oldest[1]).days} days; rotate "
                f"keys at least every {KEY_MAX_AGE_DAYS} days.",
                oldest_days=(ev.now - oldest[1]).days,
            )
        text = f"No credential in the query string of {len(ev.calls)} sampled calls"
        if keys:
            text += f"; {len(keys)} key(s) in use, none shared with another environment"
        return self.result(Grade.PASS, text + ".", in_query=0, keys=len(keys))


def _keys_shared_across_environments(ev: Evidence, keys: set[str]) -> dict[str, str]:
    """Fingerprints this integration's calls share with its other environments (each
    sibling's bounded sample of newest rows), mapped to that environment."""
    if not keys:
        return {}
    siblings = Integration.objects.filter(slug=ev.integration.slug).exclude(pk=ev.integration.pk)
    shared: dict[str, str] = {}
    for sibling in siblings:
        seen = set(
            RequestLog.objects.filter(integration=sibling, created__gte=ev.start)
            .exclude(key_fingerprint="")
            .order_by("-created", "-id")
            .values_list("key_fingerprint", flat=True)[:SAMPLE_ROWS]
        )
        for fp in keys & seen:
            shared.setdefault(fp, sibling.get_environment_display().lower())
    return shared


def _oldest_key(ev: Evidence, keys: set[str]) -> tuple[str, datetime] | None:
    """The key in use that Upstream has seen longest (its first sighting), noting the sample's
    keys as seen now."""
    if not keys:
        return None
    first: dict[str, datetime] = {}
    for s in ev.calls:
        if s.key_fingerprint and s.key_fingerprint not in first:
            first[s.key_fingerprint] = s.created
    known = {
        k.fingerprint: k
        for k in KeySighting.objects.filter(integration=ev.integration, fingerprint__in=keys)
    }
    for fp, seen in first.items():
        row = known.get(fp)
        if row is None:
            known[fp] = KeySighting.objects.create(
                integration=ev.integration, fingerprint=fp, first_seen=seen, last_seen=ev.now
            )
        elif row.last_seen < ev.now - timedelta(hours=1):
            KeySighting.objects.filter(pk=row.pk).update(last_seen=ev.now)
    fp, row = min(known.items(), key=lambda item: item[1].first_seen)
    return fp, row.first_seen


class LeastPrivilege(Check):
    key = "least_privilege"
    title = "Least privilege"
    guide = (
        "Give each key only the scopes it needs, and notice the calls it is not allowed to make."
    )

    def run(self, ev: Evidence) -> Result:
        s = ev.summary
        if s.total < MIN_CALLS:
            return self.too_little(ev)
        scoped = [e for e in ev.endpoints if e.s403]
        text = f"{s.s403} answers 403 (missing permission) and {s.s401} answers 401 (no or bad key)"
        figures = {"s403": s.s403, "s401": s.s401}
        if scoped:
            listed = ", ".join(e.endpoint for e in scoped[:3])
            grade = Grade.FAIL if s.s403 / s.total > 0.05 else Grade.WARN
            return self.result(
                grade,
                f"{text}; the key lacks a scope for {listed}.",
                ev.log_link(status=403),
                **figures,
            )
        return self.result(Grade.PASS, f"{text} in {s.total} calls.", **figures)


class InputValidated(Check):
    key = "validation"
    title = "Input validated before sending"
    guide = "Validate input before sending it, so the provider never has to answer 400 or 422."

    def run(self, ev: Evidence) -> Result:
        if len(ev.calls) < MIN_CALLS:
            return self.too_little(ev)
        bad = [s for s in ev.calls if s.status in (400, 422)]
        share = len(bad) / len(ev.calls)
        if not bad:
            return self.result(Grade.PASS, f"No 400 or 422 among {len(ev.calls)} sampled calls.")
        worst = Counter(f"{s.endpoint} ({s.error_code or s.status})" for s in bad).most_common(3)
        listed = ", ".join(f"{e} {n}×" for e, n in worst)
        grade = Grade.FAIL if share > 0.05 else Grade.WARN
        return self.result(
            grade,
            f"{len(bad)} of {len(ev.calls)} sampled calls ({_share(len(bad), len(ev.calls))}) "
            f"were refused as invalid: {listed}.",
            ev.log_link(outcome="client_error"),
            share=round(share, 4),
        )


class Caching(Check):
    key = "caching"
    title = "Caching"
    guide = "Cache answers that do not change instead of asking for them again."

    def run(self, ev: Evidence) -> Result:
        gets = [s for s in ev.calls if s.method == "GET" and s.attempt == 1]
        if len(gets) < MIN_CALLS:
            return self.too_little(ev, "GETs")
        last: dict[tuple[str, str], datetime] = {}
        repeated = Counter()
        for s in gets:
            key = (s.path, s.query or "")
            seen = last.get(key)
            if seen is not None and (s.created - seen).total_seconds() <= CACHE_WINDOW_S:
                repeated[f"GET {s.path}"] += 1
            last[key] = s.created
        n = sum(repeated.values())
        share = n / len(gets)
        if share > 0.2:
            grade = Grade.FAIL if share > 0.5 else Grade.WARN
            listed = ", ".join(e for e, _ in repeated.most_common(3))
            return self.result(
                grade,
                f"{n} of {len(gets)} GETs repeated an identical request within "
                f"{CACHE_WINDOW_S} s ({listed}); a cache would have saved them.",
                ev.log_link(method="GET"),
                repeated=n,
            )
        return self.result(
            Grade.PASS, f"{n} of {len(gets)} GETs repeated an identical request within a minute."
        )


class Batching(Check):
    key = "batching"
    title = "Concurrency and batching"
    guide = (
        "Use the batch endpoint (or concurrency within the rate limit) instead of long runs of "
        "sequential calls; keep batches within the documented size."
    )

    def run(self, ev: Evidence) -> Result:
        if len(ev.calls) < MIN_CALLS:
            return self.too_little(ev)
        bursts = Counter()
        runs: dict[str, list[datetime]] = defaultdict(list)
        for s in ev.calls:
            if s.method not in ("POST", "PUT", "PATCH") or s.attempt != 1:
                continue
            times = runs[s.endpoint]
            times.append(s.created)
            while (times[-1] - times[0]).total_seconds() > BURST_S:
                times.pop(0)
            if len(times) >= BURST_CALLS:
                bursts[s.endpoint] += 1
                times.clear()
        # The writer marks a bulk request over the preset's advice (RequestLog.flags).
        oversize = sum(1 for s in ev.calls if s.flags and "batch_too_large" in s.flags)
        if oversize:
            return self.result(
                Grade.FAIL,
                f"{oversize} batches exceeded the provider's documented batch size.",
                ev.log_link(q="batch_too_large"),
                oversize=oversize,
            )
        if bursts:
            listed = ", ".join(e for e, _ in bursts.most_common(3))
            return self.result(
                Grade.FAIL if sum(bursts.values()) >= BURSTS_FAIL else Grade.WARN,
                f"{sum(bursts.values())} bursts of {BURST_CALLS}+ sequential writes within "
                f"{BURST_S:.0f} s ({listed}); a batch endpoint would serve them in fewer calls.",
                ev.log_link(),
                bursts=sum(bursts.values()),
            )
        return self.result(Grade.PASS, "No long runs of sequential writes to one endpoint.")


class MonitoredAlerted(Check):
    key = "monitored"
    title = "Monitored and alerted"
    guide = (
        "Watch the integration with a probe and alert rules, and make sure alerts reach someone."
    )

    def run(self, ev: Evidence) -> Result:
        integration = ev.integration
        probes = integration.probes.filter(enabled=True).count()
        rules = list(
            AlertRule.objects.filter(enabled=True).filter(
                Q(integration=integration) | Q(integration__isnull=True)
            )
        )
        told = bool(integration.owner_email) or any(r.recipients.strip() for r in rules)
        if not told:
            from django.contrib.auth import get_user_model

            told = get_user_model().objects.filter(is_active=True).exclude(email="").exists()
        since = ev.now - timedelta(days=DELIVERED_DAYS)
        delivered = (
            Delivery.objects.filter(status=DeliveryStatus.SENT, sent_at__gte=since).exists()
            or Notification.objects.filter(
                status=NotificationStatus.SENT, sent_at__gte=since
            ).exists()
        )
        missing = []
        if not probes:
            missing.append("no probe")
        if not rules:
            missing.append("no alert rule")
        elif not told:
            missing.append("nobody to notify")
        if not delivered:
            missing.append(f"nothing delivered in {DELIVERED_DAYS} days")
        figures = {"probes": probes, "rules": len(rules), "delivered": delivered}
        if not probes and not rules:
            return self.result(Grade.FAIL, "No probe and no alert rule watch it.", **figures)
        if missing:
            return self.result(
                Grade.WARN,
                f"{probes} probe(s), {len(rules)} rule(s); " + ", ".join(missing) + ".",
                **figures,
            )
        return self.result(
            Grade.PASS,
            f"{probes} probe(s), {len(rules)} rule(s) with somebody to notify, and a delivery in "
            f"the last {DELIVERED_DAYS} days.",
            **figures,
        )


class SandboxTested(Check):
    key = "sandbox"
    title = "Tested in a sandbox"
    guide = "Try changes against the provider's sandbox or a staging integration first."

    def run(self, ev: Evidence) -> Result:
        integration = ev.integration
        if integration.environment != Environment.PRODUCTION:
            return self.result(
                Grade.PASS, f"This is the {integration.get_environment_display().lower()} side."
            )
        siblings = list(
            Integration.objects.filter(slug=integration.slug)
            .exclude(environment=Environment.PRODUCTION)
            .values_list("pk", "environment")
        )
        if not siblings:
            return self.result(
                Grade.FAIL, "No sandbox or staging integration of this provider exists."
            )
        traffic = metrics.summary_by_integration(
            [pk for pk, _ in siblings], ev.start, ev.now, now=ev.now
        )
        busy = [env for pk, env in siblings if traffic[pk].total]
        if not busy:
            return self.result(
                Grade.WARN,
                f"A {siblings[0][1]} integration exists but saw no traffic in 7 days.",
            )
        return self.result(Grade.PASS, f"The {busy[0]} integration saw traffic this week.")


class WebhooksVerified(Check):
    key = "webhooks"
    title = "Webhooks verified"
    guide = "Prefer webhooks to polling, and verify every delivery's signature."

    def run(self, ev: Evidence) -> Result:
        endpoints = _webhook_endpoints(ev.integration)
        if endpoints is None or not endpoints:
            return self.result(
                Grade.UNKNOWN, "No webhook endpoint receives this provider's events."
            )
        unsigned = [e for e in endpoints if e["scheme"] == "none"]
        deliveries = metrics.summary(
            [ev.integration.pk], ev.start, ev.now, source="webhook", now=ev.now
        )
        failing = deliveries.s401
        text = (
            f"{len(endpoints)} endpoint(s), {len(unsigned)} unsigned; {failing} of "
            f"{deliveries.total} deliveries failed verification"
        )
        figures = {"unsigned": len(unsigned), "failed": failing, "total": deliveries.total}
        if deliveries.total and failing / deliveries.total > 0.05:
            return self.result(Grade.FAIL, text + ".", **figures)
        if unsigned or failing:
            return self.result(Grade.WARN, text + ".", **figures)
        return self.result(Grade.PASS, text + ".", **figures)


def _webhook_endpoints(integration: Integration) -> list[dict] | None:
    """The integration's webhook endpoints, or None where webhooks are not installed."""
    related = getattr(integration, "webhook_endpoints", None)
    if related is None:
        return None
    return list(related.filter(active=True).values("scheme"))


CHECKS: tuple[Check, ...] = (
    HttpsEverywhere(),
    ErrorsHandled(),
    RetriesBackOff(),
    RateLimitsRespected(),
    Pagination(),
    Versioning(),
    KeysKeptSafe(),
    LeastPrivilege(),
    InputValidated(),
    Caching(),
    Batching(),
    MonitoredAlerted(),
    SandboxTested(),
    WebhooksVerified(),
)


@dataclass
class Report:
    """One integration's scorecard: an overall grade and every check's result."""

    integration_id: int
    computed_at: datetime
    score: int | None
    letter: str
    results: list[Result]
    changes: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "integration_id": self.integration_id,
            "computed_at": self.computed_at.isoformat(),
            "score": self.score,
            "grade": self.letter,
            "checks": [asdict(r) for r in self.results],
            "changed_since_last_week": self.changes,
        }


def overall(results: list[Result]) -> tuple[int | None, str]:
    graded = [_SCORES[r.grade] for r in results if r.grade in _SCORES]
    if not graded:
        return None, "—"
    score = round(sum(graded) / len(graded))
    return score, next(letter for floor, letter in _LETTERS if score >= floor)


def compute(integration: Integration, now: datetime | None = None) -> Report:
    """Run every check against the integration's evidence now."""
    now = now or timezone.now()
    ev = Evidence(integration, now)
    results = []
    for check in CHECKS:
        results.append(check.run(ev))
    score, letter = overall(results)
    return Report(integration.pk, now, score, letter, results)


def refresh(integration: Integration, now: datetime | None = None) -> Report:
    """Compute and store the scorecard, with what changed against the one a week older."""
    report = compute(integration, now)
    before = (
        Scorecard.objects.filter(
            integration=integration, computed_at__lte=report.computed_at - timedelta(days=7)
        )
        .order_by("-computed_at")
        .first()
    )
    report.changes = changes(before.checks if before else [], report.results)
    values = {
        "computed_at": report.computed_at,
        "score": report.score,
        "grade": report.letter,
        "checks": [asdict(r) for r in report.results],
        "changes": report.changes,
    }
    # One row a day is history enough for "since last week": a refresh on the same UTC day
    # replaces that day's row; 35 days are kept.
    day = report.computed_at.replace(hour=0, minute=0, second=0, microsecond=0)
    today = Scorecard.objects.filter(integration=integration, computed_at__gte=day).first()
    if today is None:
        Scorecard.objects.create(integration=integration, **values)
    else:
        Scorecard.objects.filter(pk=today.pk).update(**values)
    Scorecard.objects.filter(
        integration=integration, computed_at__lt=report.computed_at - timedelta(days=35)
    ).delete()
    return report


def changes(before: list[dict], after: list[Result]) -> list[dict]:
    """The checks whose grade moved, as {key, title, was, now}."""
    was = {c["key"]: c["grade"] for c in before}
    return [
        {"key": r.key, "title": r.title, "was": was[r.key], "now": r.grade}
        for r in after
        if r.key in was and was[r.key] != r.grade
    ]


def latest(integration: Integration, *, max_age: timedelta = timedelta(hours=1)) -> Report:
    """The stored scorecard if fresh enough, else a new one (stored)."""
    row = Scorecard.objects.filter(integration=integration).order_by("-computed_at").first()
    if row is None or timezone.now() - row.computed_at > max_age:
        return refresh(integration)
    return row.report()


def latest_grades(integration_ids: list[int]) -> dict[int, str]:
    """Each integration's newest stored letter grade (one query), for lists."""
    newest = Scorecard.objects.filter(integration_id=OuterRef("integration_id")).order_by(
        "-computed_at"
    )
    rows = Scorecard.objects.filter(
        integration_id__in=integration_ids, pk=Subquery(newest.values("pk")[:1])
    ).values_list("integration_id", "grade")
    return dict(rows)


def refresh_all(now: datetime | None = None) -> int:
    """The background task: refresh every active integration's scorecard."""
    n = 0
    for integration in Integration.objects.filter(active=True):
        refresh(integration, now)
        n += 1
    return n


def send_weekly_digest(now: datetime | None = None) -> int:
    """E-mail each person who opted in the scorecard checks that changed this week.

    Follows the person's integration choice in their notification preferences (none chosen:
    every integration); nothing changed means no e-mail. Returns the e-mails sent.
    """
    from django.core.mail import EmailMultiAlternatives, get_connection
    from django.urls import reverse

    from monitoring.alerts.notify import render
    from monitoring.models import NotificationPreference

    now = now or timezone.now()
    newest = Scorecard.objects.filter(
        integration_id=OuterRef("integration_id"), computed_at__gte=now - timedelta(days=7)
    ).order_by("-computed_at")
    rows = (
        Scorecard.objects.filter(pk=Subquery(newest.values("pk")[:1]))
        .exclude(changes=[])
        .select_related("integration")
    )
    changed = {row.integration_id: row for row in rows}
    if not changed:
        return 0
    people = (
        NotificationPreference.objects.filter(scorecard_digest=True, user__is_active=True)
        .exclude(user__email="")
        .select_related("user")
        .prefetch_related("integrations")
    )
    sent = 0
    connection = None
    for pref in people:
        followed = {i.pk for i in pref.integrations.all()}
        items = [
            {
                "integration": row.integration,
                "grade": row.grade,
                "changes": row.changes,
                "link": reverse("scorecard", args=[row.integration_id]),
            }
            for iid, row in sorted(changed.items())
            if not followed or iid in followed
        ]
        if not items:
            continue
        subject, text, html = render("scorecard_digest", {"items": items, "count": len(items)})
        connection = connection or get_connection(fail_silently=False)
        message = EmailMultiAlternatives(subject, text, to=[pref.user.email], connection=connection)
        message.attach_alternative(html, "text/html")
        message.send()
        sent += 1
    return sent


_CHECK_KEYS = re.compile(r"^[a-z_]+$")
assert all(_CHECK_KEYS.match(c.key) for c in CHECKS)
assert len({c.key for c in CHECKS}) == len(CHECKS), "check keys must be unique"
