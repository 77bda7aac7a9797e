"""Server time of the overview and integration pages on the shared benchmark database.

Each page is requested through Django's test client (the whole middleware stack, a signed-in
Viewer, templates rendered) at every time range, with the clock set to the data set's end so
the windows are full. Printed per page and range: median and p95 milliseconds over --n
requests, and the number of SQL queries.

Peer, timed in the same run: the cheapest raw-row question about the same window —
``COUNT(*)`` and ``AVG(latency_ms)`` over RequestLog (all integrations for the overview, the
busiest one for its page), on the same indexes. The ratio page / raw shows the pages cost
less than merely counting the calls they summarise, and stay flat as the window grows.

Goal: ≤ 100 ms median for both pages at 24 h (the default range). The default database is
the 2 M-row one (built once by bench/_benchdb.py, reused); --rows 10000000 for full size.

With --integrations N (other than 50) the same rows are spread over N integrations, and the
run also measures the overview on a 50-integration database of the same size (in a child
process, since Django points at one database per process): the goals are then ≤ 100 ms
median and ≤ 200 KB of HTML for the overview at every range, and ≤ 2× the 50-integration
page's time. The last line is JSON.

    python bench/dashboard_pages.py [--rows 2000000] [--n 15] [--integrations 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _benchdb

GOAL_MS = 100
GOAL_BYTES = 200_000
GOAL_PEER_RATIO = 2.0
PEER_INTEGRATIONS = 50
RANGES = ("1h", "24h", "7d", "30d")
SPANS_H = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}


def viewer():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from monitoring.roles import Role

    user, created = get_user_model().objects.get_or_create(username="bench-viewer")
    if created:
        user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=Role.VIEWER))
    return user


def time_page(client, url: str, n: int) -> tuple[list[float], int, int]:
    """(samples in ms, queries, bytes of HTML) for n requests of the page."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):  # warm the page cache and the session
        assert client.get(url, secure=True).status_code == 200, url
    with CaptureQueriesContext(connection) as ctx:
        size = len(client.get(url, secure=True).content)
    queries = len(ctx.captured_queries)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url, secure=True)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
    return samples, queries, size


def time_raw(end, hours: int, integration_id: int | None, n: int) -> list[float]:
    import datetime as dt

    from django.db import connection

    sql = (
        "SELECT COUNT(*), AVG(latency_ms) FROM monitoring_requestlog "
        "WHERE created >= %s AND created < %s"
    )
    params = [end - dt.timedelta(hours=hours), end]
    if integration_id is not None:
        sql += " AND integration_id = %s"
        params.append(integration_id)
    params = [connection.ops.adapt_datetimefield_value(p) for p in params[:2]] + params[2:]
    samples = []
    with connection.cursor() as cursor:
        for i in range(n + 1):
            started = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchone()
            if i:  # the first run warms the page cache
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="benchmark DB size")
    parser.add_argument("--n", type=int, default=15, help="timed requests per page and range")
    parser.add_argument("--integrations", type=int, default=PEER_INTEGRATIONS)
    parser.add_argument(
        "--overview-only", action="store_true", help="time only the overview (the peer run)"
    )
    args = parser.parse_args()

    db = _benchdb.open_db(rows=args.rows, integrations=args.integrations)
    import time_machine
    from django.test import Client, override_settings

    # The bench DB runs with DEBUG=0; serve static URLs without a collectstatic manifest.
    plain_static = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    results = {}
    with override_settings(STORAGES=plain_static), time_machine.travel(db.end, tick=True):
        client = Client(SERVER_NAME="localhost")
        client.force_login(viewer())
        pages = {"overview": ("/", None)}
        if not args.overview_only:
            pages["integration"] = (f"/integrations/{db.busiest}/", db.busiest)
        print(f"bench db: {db.rows:,} rows, {len(db.integration_ids)} integrations, {db.days} days")
        for page, (path, iid) in pages.items():
            for key in RANGES:
                samples, queries, size = time_page(client, f"{path}?range={key}", args.n)
                raw = time_raw(db.end, SPANS_H[key], iid, max(3, args.n // 3))
                med, raw_med = statistics.median(samples), statistics.median(raw)
                results[f"{page}_{key}"] = {
                    "median_ms": round(med, 1),
                    "p95_ms": round(p95(samples), 1),
                    "queries": queries,
                    "html_bytes": size,
                    "raw_count_ms": round(raw_med, 1),
                    "ratio_page_to_raw": round(med / raw_med, 3) if raw_med else None,
                }
                print(
                    f"{page:<11} {key:>3}: median {med:6.1f} ms, p95 {p95(samples):6.1f} ms, "
                    f"{queries} queries, {size / 1000:5.1f} KB | raw COUNT+AVG over the window "
                    f"{raw_med:7.1f} ms | page/raw {med / raw_med:.2f}"
                )
    summary = {"rows": db.rows, "integrations": len(db.integration_ids), "goal_ms": GOAL_MS}
    if args.overview_only:
        print(json.dumps({**summary, **results}))
        return
    goal_met = True
    if args.integrations == PEER_INTEGRATIONS:
        worst = max(results["overview_24h"]["median_ms"], results["integration_24h"]["median_ms"])
        goal_met = worst <= GOAL_MS
        print(f"goal ≤ {GOAL_MS} ms at 24 h: {'met' if goal_met else 'MISSED'} (worst {worst:.1f})")
    else:
        peer = _peer(args.rows, args.n)
        for key in RANGES:
            mine, theirs = results[f"overview_{key}"], peer[f"overview_{key}"]
            ratio = mine["median_ms"] / theirs["median_ms"]
            mine["peer_50_median_ms"] = theirs["median_ms"]
            mine["ratio_to_peer_50"] = round(ratio, 2)
            ok = (
                mine["median_ms"] <= GOAL_MS
                and mine["html_bytes"] <= GOAL_BYTES
                and ratio <= GOAL_PEER_RATIO
            )
            goal_met = goal_met and ok
            print(
                f"overview {key:>3} at {args.integrations} integrations: "
                f"{mine['median_ms']:.1f} ms, {mine['html_bytes'] / 1000:.1f} KB vs "
                f"{theirs['median_ms']:.1f} ms at {PEER_INTEGRATIONS}: ×{ratio:.2f} "
                f"(goal ≤ {GOAL_MS} ms, ≤ {GOAL_BYTES // 1000} KB, ≤ ×{GOAL_PEER_RATIO}): "
                f"{'met' if ok else 'MISSED'}"
            )
    print(json.dumps({**summary, "goal_met": goal_met, **results}))


def _peer(rows: int, n: int) -> dict:
    """The overview on a 50-integration database of the same size, timed in a child."""
    out = subprocess.run(
        [sys.executable, __file__, "--rows", str(rows), "--n", str(n), "--overview-only"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
