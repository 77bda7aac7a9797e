"""Time the scorecard of the busiest integration against the same checks over the raw table.

Runs on the benchmark database (bench/_benchdb.py; default 2 M rows, `--rows 10000000` is
the issue's size). The scorecard reads metric buckets plus a bounded sample of recent
attempts (``monitoring.scorecard.SAMPLE_ROWS``); its peer runs the very same check classes
over evidence computed from every raw row of the 7-day window (totals and endpoints by SQL
aggregates over RequestLog, the per-attempt checks over all the window's rows). Reports the
best of --repeat for the scorecard, one run of the peer, the ratio, and how many grades agree
(the sample sees the newest attempts, the peer all of them, so grades may differ where old
traffic differs from new).

Goal (issue 18): >= 20x faster than the raw peer and <= 200 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _benchdb

GOAL_MS = 200
GOAL_SPEEDUP = 20


def raw_evidence_class():
    from django.db.models import Count, Max, Min, Q

    from monitoring import metrics, scorecard
    from monitoring.models import RequestLog

    class RawEvidence(scorecard.Evidence):
        """The same evidence, read from every raw row of the window."""

        def _rows(self):
            return RequestLog.objects.filter(
                integration_id=self.integration.pk,
                created__gte=self.start,
                created__lt=self.now,
            )

        @property
        def summary(self) -> metrics.Summary:
            def read():
                agg = self._rows().aggregate(
                    total=Count("id"),
                    s401=Count("id", filter=Q(status=401)),
                    s403=Count("id", filter=Q(status=403)),
                    s429=Count("id", filter=Q(status=429)),
                    remaining=Min("ratelimit_remaining"),
                    limit=Max("ratelimit_limit"),
                )
                return metrics.Summary(
                    total=agg["total"],
                    s401=agg["s401"],
                    s403=agg["s403"],
                    s429=agg["s429"],
                    ratelimit_remaining_min=agg["remaining"],
                    ratelimit_limit=agg["limit"],
                )

            return self._once("summary", read)

        @property
        def endpoints(self) -> list[metrics.EndpointStat]:
            def read():
                grouped = (
                    self._rows()
                    .values("method", "path")
                    .annotate(
                        total=Count("id"),
                        errors=Count("id", filter=Q(status__gte=400) | Q(status__isnull=True)),
                        s401=Count("id", filter=Q(status=401)),
                        s403=Count("id", filter=Q(status=403)),
                        s429=Count("id", filter=Q(status=429)),
                    )
                    .order_by("-total")[:50]
                )
                return [
                    metrics.EndpointStat(
                        endpoint=f"{g['method']} {g['path']}",
                        total=g["total"],
                        errors=g["errors"],
                        error_rate=g["errors"] / g["total"] if g["total"] else None,
                        p95=None,
                        s401=g["s401"],
                        s403=g["s403"],
                        s429=g["s429"],
                    )
                    for g in grouped
                ]

            return self._once("endpoints", read)

        @property
        def sample(self) -> list[scorecard.Sampled]:
            def read():
                rows = self._rows().order_by("created", "id").values_list(*scorecard._SAMPLED)
                return [scorecard.Sampled(*row) for row in rows.iterator(chunk_size=20_000)]

            return self._once("sample", read)

    return RawEvidence


def run_checks(evidence) -> list:
    from monitoring import scorecard

    return [check.run(evidence) for check in scorecard.CHECKS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="raw rows (default 2 M)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the scorecard")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the benchmark database")
    args = parser.parse_args()

    db = _benchdb.open_db(rows=args.rows, rebuild=args.rebuild)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # columns added since the data set was built
    from monitoring import scorecard
    from monitoring.models import Integration

    integration = Integration.objects.get(pk=db.busiest)
    now = db.end
    print(
        f"{db.rows:,} raw rows, {len(db.integration_ids)} integrations; scorecard of "
        f"{integration.slug} over the 7 days to {now:%Y-%m-%d %H:%M} UTC"
    )
    best = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        ours = run_checks(scorecard.Evidence(integration, now))
        elapsed = (time.perf_counter() - started) * 1000
        best = elapsed if best is None else min(best, elapsed)
    started = time.perf_counter()
    raw = run_checks(raw_evidence_class()(integration, now))
    raw_ms = (time.perf_counter() - started) * 1000
    agree = sum(a.grade == b.grade for a, b in zip(ours, raw, strict=True))
    for a, b in zip(ours, raw, strict=True):
        mark = "" if a.grade == b.grade else f"   (raw: {b.grade})"
        print(f"  {a.title:<34} {a.grade:<8}{mark}")
    speedup = raw_ms / best if best else None
    met = best <= GOAL_MS and speedup is not None and speedup >= GOAL_SPEEDUP
    print(
        f"scorecard {best:.1f} ms (best of {args.repeat}), raw peer {raw_ms:.1f} ms: "
        f"{speedup:.1f}x faster; {agree}/{len(ours)} grades agree"
        + ("" if met else "  (goal missed)")
    )
    print(
        json.dumps(
            {
                "rows": db.rows,
                "scorecard_ms": round(best, 1),
                "raw_ms": round(raw_ms, 1),
                "speedup": round(speedup, 1) if speedup else None,
                "grades_agree": agree,
                "checks": len(ours),
                "goal_ms": GOAL_MS,
                "goal_speedup": GOAL_SPEEDUP,
                "goals_met": met,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
