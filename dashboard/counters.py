"""Counter-only series for charts that draw counts (sparklines, 401/403, probe runs, verdicts).

monitoring.metrics merges every point's latency histograms to give percentiles; a chart of
counts does not need them, and on the overview (one sparkline per integration) those merges
were most of the page's time. This reads the same "" (all endpoints) bucket rows the metrics
API reads, summed per step in SQL, as a metrics.Series of Count points (the counter fields of
metrics.Point). One query, bounded by integrations × buckets in the window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection

from monitoring import metrics
from monitoring.models import Grain, MetricBucket
from monitoring.rollup import ALL_ENDPOINTS

FIELDS = ("total", "ok", "client_errors", "server_errors", "s401", "s403", "s429")
_TABLE = MetricBucket._meta.db_table


@dataclass(slots=True)
class Count:
    """One step of a counter series: the counter fields of metrics.Point, nothing else.

    (metrics.Point is frozen with thirty fields; thousands of them cost more than the query.)
    """

    start: dt.datetime
    total: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    s401: int = 0
    s403: int = 0
    s429: int = 0


def _epoch_sql() -> str:
    if connection.vendor == "postgresql":
        return "CAST(EXTRACT(EPOCH FROM start) AS BIGINT)"
    return "CAST(strftime('%%s', start) AS INTEGER)"


def series_by_integration(
    ids: Sequence[int],
    start: dt.datetime,
    end: dt.datetime,
    *,
    source: str,
    grain: str,
    step: dt.timedelta,
) -> dict[int, metrics.Series]:
    """Per integration, one Count per step (steps aligned like metrics.series)."""
    step_s = int(step.total_seconds())
    first = int(start.timestamp()) // step_s * step_s
    last = -(-int(end.timestamp()) // step_s) * step_s
    starts = range(first, last, step_s)
    found: dict[tuple[int, int], tuple] = {}
    if ids:
        adapt = connection.ops.adapt_datetimefield_value
        sums = ", ".join(f"SUM({f})" for f in FIELDS)
        slot = f"({_epoch_sql()} - %s) / %s"
        # Only constants are formatted in; every value is a parameter.
        sql = (
            f"SELECT integration_id, {slot} AS slot, {sums} FROM {_TABLE} "  # noqa: S608
            f"WHERE integration_id IN ({', '.join(['%s'] * len(ids))}) AND grain = %s "
            "AND start >= %s AND start < %s AND source = %s AND endpoint = %s "
            "GROUP BY integration_id, slot"
        )
        params = [
            first,
            step_s,
            *ids,
            grain,
            adapt(dt.datetime.fromtimestamp(first, dt.UTC)),
            adapt(end),
            source,
            ALL_ENDPOINTS,
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for iid, n, *values in cursor.fetchall():
                found[(iid, first + int(n) * step_s)] = values
    stamps = [dt.datetime.fromtimestamp(t, dt.UTC) for t in starts]
    out = {}
    for iid in ids:
        points = []
        for t, when in zip(starts, stamps, strict=True):
            values = found.get((iid, t))
            points.append(Count(when, *values) if values else Count(when))
        out[iid] = metrics.Series(grain, step, points)
    return out


def window_totals(
    ids: Sequence[int], start: dt.datetime, end: dt.datetime, *, source: str
) -> dict[int, tuple[int, float]]:
    """(calls, error rate) per integration from the minute buckets starting in [start, end)."""
    out = dict.fromkeys(ids, (0, 0.0))
    if not ids:
        return out
    adapt = connection.ops.adapt_datetimefield_value
    sql = (
        f"SELECT integration_id, SUM(total), SUM(ok) FROM {_TABLE} "  # noqa: S608
        f"WHERE integration_id IN ({', '.join(['%s'] * len(ids))}) AND grain = %s "
        "AND start >= %s AND start < %s AND source = %s AND endpoint = %s "
        "GROUP BY integration_id"
    )
    params = [*ids, Grain.MINUTE, adapt(start), adapt(end), source, ALL_ENDPOINTS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for iid, total, ok in cursor.fetchall():
            out[iid] = (total, (total - ok) / total if total else 0.0)
    return out
