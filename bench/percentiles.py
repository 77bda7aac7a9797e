"""Benchmark histogram percentiles against exact sorted percentiles on latency-like data."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

# bench/ is run as a script, so the repository root is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.histogram import Histogram, merge_encoded

QUANTILES = (50, 95, 99)
MAX_REL_ERROR_GOAL = 0.02
MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 1440


def realistic(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(120), 0.6)


def bimodal(rng: random.Random) -> float:
    if rng.random() < 0.8:
        return rng.lognormvariate(math.log(5), 0.3)  # cache hit
    return rng.lognormvariate(math.log(300), 0.4)  # cache miss


def heavy_tailed(rng: random.Random) -> float:
    # alpha 1.16 is the "80/20" Pareto; a few values pass ten minutes into the overflow.
    return 20 * rng.paretovariate(1.16)


def timeouts_at_cap(rng: random.Random) -> float:
    if rng.random() < 0.04:
        return 30_000.0  # the client's timeout, reported as the cap itself
    return rng.lognormvariate(math.log(200), 0.8)


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "realistic (lognormal, median 120 ms)": realistic,
    "bimodal (5 ms hit / 300 ms miss)": bimodal,
    "heavy-tailed (Pareto 1.16, 20 ms)": heavy_tailed,
    "timeouts at cap (4 % at 30 000 ms)": timeouts_at_cap,
}


def exact_percentiles(values: list[float]) -> dict[int, float]:
    # Nearest-rank, the definition monitoring.histogram documents and matches.
    ordered = sorted(values)
    n = len(ordered)
    return {q: ordered[max(1, math.ceil(q * n / 100)) - 1] for q in QUANTILES}


def split(values: list[float], parts: int) -> list[list[float]]:
    size = math.ceil(len(values) / parts)
    return [values[i * size : (i + 1) * size] for i in range(parts)]


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_paths(values: list[float], day_blobs: list[bytes], repeats: int) -> tuple[float, ...]:
    """Seconds for: the histogram query, the sort peer, and building the histogram."""
    low, high = min(values), max(values)
    return (
        best_of(repeats, lambda: merge_encoded(day_blobs).percentiles(QUANTILES, lo=low, hi=high)),
        best_of(repeats, lambda: exact_percentiles(values)),
        best_of(1, lambda: Histogram.from_values(values)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="latencies per distribution")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timing runs, best kept")
    args = parser.parse_args()
    if args.n < MINUTES_PER_DAY:
        parser.error(f"--n must be at least {MINUTES_PER_DAY} (one value per minute of a day)")

    rng = random.Random(args.seed)
    max_rel_error = 0.0
    merged_equals_direct = True
    minute_sizes: list[int] = []
    hour_sizes: list[int] = []
    hist_seconds = sort_seconds = build_seconds = 0.0

    print(f"n={args.n} per distribution, seed={args.seed}; nearest-rank percentiles")
    print(f"{'distribution':<38} {'q':>4} {'exact ms':>12} {'hist ms':>12} {'rel err':>9}")
    for name, draw in DISTRIBUTIONS.items():
        values = [draw(rng) for _ in range(args.n)]
        low, high = min(values), max(values)

        # The dashboard's path: a day of minute blobs merged, clamped to the stored min/max.
        day_blobs = [Histogram.from_values(m).encode() for m in split(values, MINUTES_PER_DAY)]
        day = merge_encoded(day_blobs)
        approx = day.percentiles(QUANTILES, lo=low, hi=high)
        exact = exact_percentiles(values)
        for q in QUANTILES:
            rel = abs(approx[q] - exact[q]) / exact[q]
            max_rel_error = max(max_rel_error, rel)
            print(f"{name:<38} {q:>4} {exact[q]:>12.3f} {approx[q]:>12.3f} {rel:>9.4%}")

        # An hour's worth (1/24 of the values) in 60 minute histograms vs the hour directly.
        hour_values = values[: len(values) // 24]
        minutes = [Histogram.from_values(m) for m in split(hour_values, MINUTES_PER_HOUR)]
        minute_blobs = [m.encode() for m in minutes]
        direct_hour = Histogram.from_values(hour_values).encode()
        by_merge = Histogram()
        for minute in minutes:
            by_merge += minute
        merged_equals_direct = (
            merged_equals_direct
            and by_merge.encode() == direct_hour
            and merge_encoded(minute_blobs).encode() == direct_hour
            and day.encode() == Histogram.from_values(values).encode()
        )
        minute_sizes += [len(b) for b in minute_blobs]
        hour_sizes.append(len(direct_hour))

        hist_s, sort_s, build_s = time_paths(values, day_blobs, args.repeats)
        hist_seconds += hist_s
        sort_seconds += sort_s
        build_seconds += build_s

    minute_n = args.n // 24 // MINUTES_PER_HOUR
    figures = {
        "max_rel_error": round(max_rel_error, 6),
        "merged_equals_direct": merged_equals_direct,
        "encoded_bytes_avg": round(sum(minute_sizes) / len(minute_sizes), 1),
        "values_per_minute_bucket": minute_n,
        "encoded_hour_bytes_avg": round(sum(hour_sizes) / len(hour_sizes), 1),
        "speed_ratio": round(hist_seconds / sort_seconds, 4),
        "build_ratio": round(build_seconds / sort_seconds, 2),
    }
    print()
    print(f"60 merged minutes == hour built directly, 1440 == day: {merged_equals_direct}")
    print(
        f"encoded size: {figures['encoded_bytes_avg']} B per minute bucket of ~{minute_n} "
        f"values, {figures['encoded_hour_bytes_avg']} B per hour"
    )
    print(
        f"query: merge {MINUTES_PER_DAY} minute blobs + p50/p95/p99 took "
        f"{figures['speed_ratio']:.4f}x the time of sorting {args.n} raw values"
    )
    print(
        f"ingest: building the histogram from raw values took {figures['build_ratio']:.2f}x "
        "the time of that sort (paid once, by the rollup)"
    )
    ok = max_rel_error <= MAX_REL_ERROR_GOAL and merged_equals_direct
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
