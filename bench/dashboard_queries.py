"""Time the metrics query API over buckets against the same answers computed from raw rows.

Runs on the benchmark database (bench/_benchdb.py: N raw calls over 30 days × 50
integrations, built once and reused; the default 2 M rows builds in a few minutes on a
2-core box, `--rows 10000000` is the full size). For 24 h, 7 d and 30 d windows ending at
the data set's "now" it times, best of --repeat:

  series      metrics.series() for the busiest integration's client calls (a chart)
  summary     metrics.summary() for the same (the page's totals and percentiles)
  top         metrics.top_endpoints() for the same
  overview    what the overview page reads for all 50 integrations: summary_by_integration()
              (cards' totals and p95) + counts_by_integration() at the page's sparkline step
              (24 points for 24 h); also timed once cold, right after
              metrics.forget_merged() (the first render in a process, or after the hour
              or day turned: see metrics._blobs)

and, once each, the same figures computed from the RequestLog rows of that window (what a
dashboard without buckets would have to read). Answers are compared field by field: counts
exactly, percentiles exactly (both sides use the same histogram), latency averages to
float rounding. The overview's raw peer runs for 24 h only: for 30 d it would read every row.

Goals: 24 h <= 50 ms, 7 d and 30 d <= 150 ms per query, the 24 h series <= 20 ms (it
reads 96 quarter-hour buckets), the overview <= 50 ms at every range, >= 50x faster than
raw, answers equal. Wall-clock times on a shared machine vary; the best of several runs is reported.
With --database-url postgres://… the same runs on PostgreSQL, over a copy of the SQLite
benchmark database's data (bench/_benchdb.py, made once and reused).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _benchdb

WINDOWS = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
GOAL_MS = {"24h": 50, "7d": 150, "30d": 150}
# Tighter goals for some queries, at these windows (issue 19).
GOAL_QUERY_MS = {("24h", "series"): 20, **{(w, "overview"): 50 for w in WINDOWS}}
GOAL_SPEEDUP = 50
SOURCE = "client"
EXACT = (
    "total",
    "ok",
    "errors",
    "client_errors",
    "server_errors",
    "transport_errors",
    "s401",
    "s403",
    "s429",
    "retries",
    "deprecated",
    "p50",
    "p95",
    "p99",
    "latency_min",
    "latency_max",
    "ratelimit_remaining_min",
    "ratelimit_limit",
)


def best_ms(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000, result


def timed_ms(fn: Callable[[], object]) -> tuple[float, object]:
    return best_ms(1, fn)


# --- The raw peer --------------------------------------------------------------------------


class RawAgg:
    """Figures for a set of raw rows, computed the plain way."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.total = self.ok = self.client_errors = self.server_errors = 0
        self.transport_errors = self.s401 = self.s403 = self.s429 = 0
        self.retries = self.deprecated = 0
        self.rl: tuple | None = None

    def add(self, status, outcome, latency, attempt, deprecated, remaining, limit) -> None:
        self.total += 1
        self.latencies.append(latency)
        if outcome == "ok":
            self.ok += 1
        elif outcome == "client_error":
            self.client_errors += 1
        elif outcome == "server_error":
            self.server_errors += 1
        else:
            self.transport_errors += 1
        self.s401 += status == 401
        self.s403 += status == 403
        self.s429 += status == 429
        self.retries += attempt > 1
        self.deprecated += bool(deprecated)
        if remaining is not None:
            pair = (remaining, limit if limit is not None else math.inf)
            self.rl = pair if self.rl is None or pair < self.rl else self.rl

    def figures(self) -> dict:
        from monitoring.histogram import Histogram

        if not self.total:
            return {"total": 0}
        p = Histogram.from_values(self.latencies).percentiles((50, 95, 99))
        rl = self.rl or (None, None)
        return {
            "total": self.total,
            "ok": self.ok,
            "errors": self.total - self.ok,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "s401": self.s401,
            "s403": self.s403,
            "s429": self.s429,
            "retries": self.retries,
            "deprecated": self.deprecated,
            "p50": p[50],
            "p95": p[95],
            "p99": p[99],
            "latency_min": min(self.latencies),
            "latency_max": max(self.latencies),
            "latency_avg": sum(self.latencies) / self.total,
            "ratelimit_remaining_min": rl[0],
            "ratelimit_limit": None if rl[1] == math.inf else rl[1],
        }


def raw_rows(integration_ids: list[int] | None, lo: int, hi: int):
    """(integration, epoch s, endpoint, figures...) of client rows with lo <= created < hi."""
    from django.db import connection

    where = ["source = %s", "created >= %s", "created < %s"]
    if connection.vendor == "sqlite":
        epoch = "CAST(strftime('%%s', created) AS INTEGER)"
        params: list = [SOURCE, _text(lo), _text(hi)]
    else:
        epoch = "CAST(floor(extract(epoch FROM created)) AS bigint)"
        params = [SOURCE, datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)]
    if integration_ids is not None:
        where.append(f"integration_id IN ({', '.join(['%s'] * len(integration_ids))})")
        params += integration_ids
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT integration_id, {epoch}, "
            "method || ' ' || path, status, outcome, latency_ms, attempt, deprecated, "
            "ratelimit_remaining, ratelimit_limit FROM monitoring_requestlog "
            f"WHERE {' AND '.join(where)}",
            params,
        )
        yield from cursor


def _text(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def window_bounds(start: datetime, end: datetime, now: datetime) -> tuple[int, int]:
    """The raw-row range metrics' edge rules read for [start, end) (see metrics.cover)."""
    from monitoring import metrics

    pieces = metrics.cover(start, end, now)
    return min(p[1] for p in pieces), min(max(p[2] for p in pieces), _ceil_s(now) + 60)


def _ceil_s(when: datetime) -> int:
    return math.ceil(when.timestamp())


def raw_summary(iid: int, start, end, now) -> dict:
    agg = RawAgg()
    for row in raw_rows([iid], *window_bounds(start, end, now)):
        agg.add(*row[3:])
    return agg.figures()


def raw_top(iid: int, start, end, now) -> list[tuple]:
    per: dict[str, RawAgg] = {}
    for row in raw_rows([iid], *window_bounds(start, end, now)):
        per.setdefault(row[2], RawAgg()).add(*row[3:])
    ranked = sorted(((a.total, ep) for ep, a in per.items()), key=lambda x: (-x[0], x[1]))
    return [(ep, per[ep].figures()) for _, ep in ranked[:10]]


def raw_series(ids: list[int] | None, series, end, *, by_integration=False) -> dict:
    step = int(series.step.total_seconds())
    first = int(series.points[0].start.timestamp())
    aggs: dict = {}
    for row in raw_rows(ids, first, _ceil_s(end)):
        slot = first + (row[1] - first) // step * step
        key = (row[0], slot) if by_integration else slot
        agg = aggs.get(key)
        if agg is None:
            agg = aggs[key] = RawAgg()
        agg.add(*row[3:])
    return {k: a.figures() for k, a in aggs.items()}


def raw_overview(ids, start, end, now, lines) -> dict:
    per: dict[int, RawAgg] = {}
    for row in raw_rows(None, *window_bounds(start, end, now)):
        per.setdefault(row[0], RawAgg()).add(*row[3:])
    series = raw_series(None, next(iter(lines.values())), end, by_integration=True)
    return {"summaries": {i: per[i].figures() for i in per}, "series": series}


# --- Comparing -----------------------------------------------------------------------------


def same(bucket, raw: dict, counts_only: bool = False) -> bool:
    if not raw.get("total"):
        return bucket.total == 0
    for name in EXACT:
        if counts_only and name in ("p50", "p95", "p99"):
            continue  # series_by_integration leaves percentiles out unless asked
        if getattr(bucket, name) != raw[name]:
            print(f"  mismatch {name}: buckets {getattr(bucket, name)!r} raw {raw[name]!r}")
            return False
    return math.isclose(bucket.latency_avg, raw["latency_avg"], rel_tol=1e-9)


def same_series(series, raw: dict, iid: int | None = None) -> bool:
    for point in series.points:
        key = int(point.start.timestamp())
        if not same(point, raw.get((iid, key) if iid is not None else key, {}), iid is not None):
            print(f"  at {point.start:%Y-%m-%d %H:%M}")
            return False
    return True


def same_counts(series, raw: dict, iid: int) -> bool:
    """A counts_by_integration line against the raw rows, step by step."""
    from monitoring.metrics import COUNT_FIELDS

    for point in series.points:
        want = raw.get((iid, int(point.start.timestamp())), {})
        for name in COUNT_FIELDS:
            if getattr(point, name) != want.get(name, 0):
                print(f"  mismatch {name} at {point.start:%Y-%m-%d %H:%M} for {iid}")
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="raw rows (default 2 M)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per bucket query")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the benchmark database")
    parser.add_argument(
        "--database-url", help="run on PostgreSQL (a scratch database it fills and reuses)"
    )
    args = parser.parse_args()

    if args.database_url:
        db = _benchdb.open_pg(args.database_url, rows=args.rows, rebuild=args.rebuild)
    else:
        db = _benchdb.open_db(rows=args.rows, rebuild=args.rebuild)
    from django.db import connection

    from dashboard import charts
    from monitoring import metrics

    now, iid, ids = db.end, db.busiest, db.integration_ids
    print(
        f"{db.rows:,} raw rows, {len(ids)} integrations, {db.days} days to "
        f"{now:%Y-%m-%d %H:%M} UTC ({db.path.name}); busiest integration id {iid}"
    )
    results: dict[str, dict] = {}
    all_equal = goals_met = True
    for label, span in WINDOWS.items():
        start = now - span
        opts = {"source": SOURCE, "now": now}
        spark = charts.spark_step(start, now)
        queries = {
            "series": lambda: metrics.series([iid], start, now, **opts),  # noqa: B023
            "summary": lambda: metrics.summary([iid], start, now, **opts),  # noqa: B023
            "top": lambda: metrics.top_endpoints(iid, start, now, **opts),  # noqa: B023
            "overview": lambda s=start, sp=spark: (
                metrics.summary_by_integration(ids, s, now, **opts),  # noqa: B023
                # At the overview page's sparkline step (dashboard.charts.spark_step).
                metrics.counts_by_integration(ids, s, now, source=SOURCE, grain=sp[0], step=sp[1]),
            ),
        }
        figures: dict[str, dict] = {}
        for name, query in queries.items():
            cold_ms = None
            if name == "overview":
                metrics.forget_merged()
                cold_ms, _ = timed_ms(query)
            ms, answer = best_ms(args.repeat, query)
            entry = {"buckets_ms": round(ms, 2)}
            if cold_ms is not None:
                entry["cold_ms"] = round(cold_ms, 2)
            if name == "series":
                raw_ms, raw = timed_ms(lambda a=answer: raw_series([iid], a, now))
                equal = same_series(answer, raw)
                entry["points"] = len(answer.points)
                entry["grain"] = f"{answer.grain}/{answer.step}"
            elif name == "summary":
                raw_ms, raw = timed_ms(lambda: raw_summary(iid, start, now, now))  # noqa: B023
                equal = same(answer, raw)
            elif name == "top":
                raw_ms, raw = timed_ms(lambda: raw_top(iid, start, now, now))  # noqa: B023
                equal = [e.endpoint for e in answer] == [ep for ep, _ in raw] and all(
                    e.total == r["total"] and e.errors == r["errors"] and e.p95 == r["p95"]
                    for e, (_, r) in zip(answer, raw, strict=True)
                )
            elif label == "24h":
                summaries, lines = answer
                raw_ms, raw = timed_ms(lambda s=start, ln=lines: raw_overview(ids, s, now, now, ln))
                equal = all(same(summaries[i], raw["summaries"].get(i, {})) for i in ids) and all(
                    same_counts(lines[i], raw["series"], i) for i in ids
                )
            else:
                raw_ms, equal = None, None
            entry["equal"] = equal
            if raw_ms is not None:
                entry["raw_ms"] = round(raw_ms, 1)
                entry["speedup"] = round(raw_ms / ms, 1)
            goal = GOAL_QUERY_MS.get((label, name), GOAL_MS[label])
            entry["goal_ms"] = goal
            met = ms <= goal and (raw_ms is None or raw_ms / ms >= GOAL_SPEEDUP)
            entry["goal_met"] = met
            goals_met &= met
            all_equal &= equal is not False
            figures[name] = entry
            versus = (
                f"raw {raw_ms:9.1f} ms  {raw_ms / ms:7.0f}x" if raw_ms is not None else " " * 28
            )
            verdict = {True: "equal", False: "DIFFERENT", None: "(no raw peer)"}[equal]
            print(
                f"{label:>4} {name:<9} buckets {ms:7.1f} ms  {versus}  {verdict}"
                f"{'' if met else '  (goal missed)'}"
                + (f"  [{entry['points']} points, {entry['grain']}]" if "points" in entry else "")
                + (f"  [cold {cold_ms:.1f} ms]" if cold_ms is not None else "")
            )
        results[label] = figures
    summary = {
        "rows": db.rows,
        "database": connection.vendor,
        "integrations": len(ids),
        "results_equal": all_equal,
        "goals_met": goals_met,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": _loadavg(),
        "windows": results,
    }
    print(json.dumps(summary))
    return 0 if all_equal else 1


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: timings vary with it)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
