"""Benchmark an alert evaluation cycle over metric buckets against the same rules on raw rows.

1 000 rules (20 per integration, every integration-scoped kind, windows of 5 to 30 minutes and
a day for deprecations) over the 50 integrations of the shared benchmark database
(bench/_benchdb.py). Timed in the same run:

- buckets, find: monitoring.alerts.lifecycle.find() — every rule checked, nothing written;
- buckets, cycle: monitoring.alerts.lifecycle.evaluate() — find plus alert updates and
  notifications;
- raw, find: the same find() with the reads swapped for aggregates over RequestLog
  (RawData below), i.e. what the evaluator would cost without buckets.

Both finds must agree on what fires (percentiles may differ by the histogram's ~1 %, so a
latency rule sitting exactly on its threshold could legitimately flip; the report says so).
"Now" is the last millisecond of an hour a day before the data ends, inside the data set's
burst of 401s, so bucket and raw windows cover exactly the same calls.

The default size is the 2 M-row database (built once, reused); --rows 10000000 for the full
size; --database-url postgres://… runs the same on PostgreSQL (the data copied from the
SQLite benchmark database once, see bench/_benchdb.py). Rules, alerts and notifications it
creates are deleted afterwards. Last line: JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _benchdb

GOAL_CYCLE_MS = 1000
GOAL_SPEEDUP = 20
KINDS_CYCLE = (
    ("auth_spike", [{"min_count": 3}, {"min_count": 5, "window_min": 10}]),
    ("error_rate", [{"threshold_pct": 5}, {"threshold_pct": 10, "window_min": 15}]),
    (
        "latency",
        [{"threshold_ms": 800}, {"percentile": 99, "threshold_ms": 2000, "window_min": 15}],
    ),
    ("rate_limit", [{}, {"headroom_pct": 20, "window_min": 30}]),
    ("deprecation", [{}]),
    ("traffic_stopped", [{}, {"window_min": 30}]),
    ("probe_down", [{}]),
    ("cert_expiry", [{"days": 21}]),
)


def make_rules(integration_ids: list[int], count: int):
    from monitoring.models import AlertRule

    variants = [(kind, params) for kind, options in KINDS_CYCLE for params in options]
    rules = []
    for n in range(count):
        kind, params = variants[n % len(variants)]
        iid = integration_ids[(n // len(variants)) % len(integration_ids)]
        rules.append(
            AlertRule(
                name=f"bench-{n}",
                kind=kind,
                params=params,
                integration_id=iid,
                recovery_s=300,
                recipients="oncall@example.com",
            )
        )
    return AlertRule.objects.bulk_create(rules)


def raw_data_class():
    """BucketData with every bucket read replaced by the equivalent raw-table aggregate."""
    from django.db.models import Count, Q, Sum
    from django.db.models.functions import TruncHour

    from monitoring.alerts import snapshot
    from monitoring.models import Grain, Outcome, RequestLog, endpoint_of

    def n(q):
        return Count("id", filter=q)

    other = [Outcome.PROTOCOL_ERROR, Outcome.READ_ERROR, Outcome.BLOCKED, Outcome.OTHER_ERROR]
    sums = {
        "n_total": Count("id"),
        "n_ok": n(Q(outcome=Outcome.OK)),
        "n_client_errors": n(Q(outcome=Outcome.CLIENT_ERROR)),
        "n_server_errors": n(Q(outcome=Outcome.SERVER_ERROR)),
        "n_timeouts": n(Q(outcome=Outcome.TIMEOUT)),
        "n_connect_errors": n(Q(outcome=Outcome.CONNECT_ERROR)),
        "n_tls_errors": n(Q(outcome=Outcome.TLS_ERROR)),
        "n_other_errors": n(Q(outcome__in=other)),
        "n_s401": n(Q(status=401)),
        "n_s403": n(Q(status=403)),
        "n_s429": n(Q(status=429)),
        "n_deprecated": n(Q(deprecated=True)),
        "n_latency_sum": Sum("latency_ms"),
        "n_calls": n(~Q(source="probe")),
    }

    class Exact:
        """Nearest-rank percentiles of the raw latencies (what the histogram approximates)."""

        def __init__(self, values: list[float]) -> None:
            self.values = sorted(values)

        def percentile(self, q, lo=None, hi=None):
            if not self.values:
                return None
            rank = max(1, -(-q * len(self.values) // 100))
            return self.values[int(rank) - 1]

    class RawData(snapshot.BucketData):
        def _raw(self, minutes):
            grain, since = self.bounds(minutes)
            # The same calls the buckets hold: whole minutes (or hours) from `since`.
            if grain == Grain.MINUTE:
                end = self.minute + dt.timedelta(minutes=1)
            else:
                end = self.hour + dt.timedelta(hours=1)
            rows = RequestLog.objects.filter(created__gte=since, created__lt=end).order_by()
            return rows.filter(integration_id__in=list(self.integrations))

        def window(self, minutes):
            if minutes not in self._windows:
                rows = self._raw(minutes).values("integration_id").annotate(**sums)
                self._windows[minutes] = {r["integration_id"]: snapshot.counts_of(r) for r in rows}
            return self._windows[minutes]

        def endpoints(self, minutes, integration_id):
            key = (minutes, integration_id)
            if key not in self._endpoints:
                rows = (
                    self._raw(minutes)
                    .filter(integration_id=integration_id)
                    .values("method", "path")
                    .annotate(**sums)
                )
                self._endpoints[key] = {
                    endpoint_of(r["method"], r["path"]): snapshot.counts_of(r) for r in rows
                }
            return self._endpoints[key]

        def latency(self, minutes, integration_id):
            if minutes not in self._latency:
                values: dict[int, list[float]] = {}
                rows = self._raw(minutes).values_list("integration_id", "latency_ms")
                for iid, ms in rows.iterator(chunk_size=20_000):
                    values.setdefault(iid, []).append(ms)
                self._latency[minutes] = {
                    iid: (Exact(v), min(v), max(v)) for iid, v in values.items()
                }
            return self._latency[minutes].get(integration_id, (Exact([]), None, None))

        def ratelimit(self, minutes):
            if minutes not in self._ratelimit:
                rows = (
                    self._raw(minutes)
                    .filter(ratelimit_limit__gt=0, ratelimit_remaining__isnull=False)
                    .values_list(
                        "integration_id", "created", "ratelimit_remaining", "ratelimit_limit"
                    )
                )
                self._ratelimit[minutes] = snapshot.tightest(
                    (iid, created.replace(second=0, microsecond=0), rem, lim)
                    for iid, created, rem, lim in rows
                )
            return self._ratelimit[minutes]

        def hourly(self):
            if self._hourly is None:
                spans = Q()
                for hour in self.baseline_hours():
                    spans |= Q(created__gte=hour, created__lt=hour + dt.timedelta(hours=1))
                rows = (
                    RequestLog.objects.filter(spans, integration_id__in=list(self.integrations))
                    .order_by()
                    .annotate(hour=TruncHour("created"))
                    .values("integration_id", "hour")
                    .annotate(auth=n(Q(status__in=[401, 403])), calls=n(~Q(source="probe")))
                )
                result: dict = {}
                for r in rows:
                    result.setdefault(r["integration_id"], {})[r["hour"]] = (r["auth"], r["calls"])
                self._hourly = result
            return self._hourly

    return RawData


def timed(fn, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="benchmark DB size")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5, help="timed bucket cycles")
    parser.add_argument("--raw-cycles", type=int, default=2, help="timed raw finds")
    parser.add_argument(
        "--database-url", help="run on PostgreSQL (a scratch database it fills and reuses)"
    )
    args = parser.parse_args()
    if args.rules < 1 or args.cycles < 1 or args.raw_cycles < 1:
        parser.error("--rules, --cycles and --raw-cycles must be at least 1")

    if args.database_url:
        db = _benchdb.open_pg(args.database_url, rows=args.rows)
    else:
        db = _benchdb.open_db(rows=args.rows)

    from django.conf import settings
    from django.db import connection

    from monitoring.alerts import lifecycle
    from monitoring.models import AlertRule, JobState, MetricBucket

    # Alerts are recorded, their e-mails suppressed: nothing may be queued in the shared DB.
    settings.ALERT_EMAILS_ENABLED = False
    hour = (db.end - dt.timedelta(hours=25)).replace(minute=0, second=0, microsecond=0)
    now = hour + dt.timedelta(hours=1) - dt.timedelta(milliseconds=1)
    AlertRule.objects.filter(name__startswith="bench-").delete()
    rules = make_rules(db.integration_ids, args.rules)
    try:
        RawData = raw_data_class()
        lifecycle.find(now)  # warm the page cache for both sides alike
        lifecycle.find(now, data_class=RawData)
        find_ms, scan = timed(lambda: lifecycle.find(now), args.cycles)
        raw_ms, raw_scan = timed(lambda: lifecycle.find(now, data_class=RawData), args.raw_cycles)
        # Cycles a minute apart, as the schedule runs them: figures move, alerts get updated.
        minutes = iter(range(args.cycles))
        cycle_ms, report = timed(
            lambda: lifecycle.evaluate(now + dt.timedelta(minutes=next(minutes))), args.cycles
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM monitoring_requestlog")
            raw_rows = cursor.fetchone()[0]
        buckets = MetricBucket.objects.count()
    finally:
        AlertRule.objects.filter(pk__in=[r.pk for r in rules]).delete()
        JobState.objects.filter(name=lifecycle._LOCK_NAME).delete()

    ours, theirs = set(scan.findings), set(raw_scan.findings)
    differ = sorted(ours ^ theirs)
    only_latency = all(scan_rule_kind(f, scan, raw_scan) == "latency" for f in differ)
    find_med, raw_med, cycle_med = (statistics.median(t) for t in (find_ms, raw_ms, cycle_ms))
    speedup = raw_med / find_med
    print(
        f"alerts: {args.rules} rules over {len(db.integration_ids)} integrations; "
        f"{raw_rows:,} raw rows, {buckets:,} buckets; now = {now:%Y-%m-%d %H:%M:%S} UTC"
    )
    print(
        f"buckets: find {find_med:.0f} ms (min {min(find_ms):.0f}), full cycle {cycle_med:.0f} ms "
        f"(first {cycle_ms[0]:.0f}); {scan.checks} checks, {len(ours)} firing"
    )
    print(f"raw:     find {raw_med:.0f} ms (min {min(raw_ms):.0f}); {len(theirs)} firing")
    print(
        f"speed-up {speedup:.1f}× (goal ≥ {GOAL_SPEEDUP}×); cycle {cycle_med:.0f} ms "
        f"(goal ≤ {GOAL_CYCLE_MS} ms); findings agree: {not differ}"
        + (f" ({len(differ)} differ, all latency: {only_latency})" if differ else "")
    )
    print(
        json.dumps(
            {
                "bench": "alerts",
                "database": connection.vendor,
                "rules": args.rules,
                "integrations": len(db.integration_ids),
                "raw_rows": raw_rows,
                "buckets": buckets,
                "find_ms": round(find_med, 1),
                "cycle_ms": round(cycle_med, 1),
                "raw_find_ms": round(raw_med, 1),
                "speedup": round(speedup, 1),
                "firing": len(ours),
                "firing_in_cycle": report.firing,
                "findings_agree": not differ,
                "goal_cycle_ms": GOAL_CYCLE_MS,
                "goal_speedup": GOAL_SPEEDUP,
                "met": cycle_med <= GOAL_CYCLE_MS and speedup >= GOAL_SPEEDUP,
            }
        )
    )


def scan_rule_kind(fp: str, *scans) -> str:
    for scan in scans:
        if fp in scan.findings:
            return scan.findings[fp].rule.kind
    return ""


if __name__ == "__main__":
    main()
