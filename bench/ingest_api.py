"""Events per second through POST /api/v1/events (a real WSGI server on loopback), against
the raw insert floor and one event per request, all measured in this run.

    .venv/bin/python bench/ingest_api.py [--events 20000] [--batch 500] [--single 1000]

SQLite in a scratch directory, rollups on. Goal: ≥ 10,000 events/s through HTTP, ≥ 20× the
one-event-per-request peer, 0 lost. Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import _benchdb


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _event(i: int) -> dict:
    return {
        "integration": "bench",
        "environment": "production",
        "method": "POST",
        "url": f"https://api.example.com/v1/items/{i % 997}",
        "status": 200 if i % 20 else 503,
        "latency_ms": 20.0 + i % 300,
        "response_bytes": 512,
    }


def _post(conn: http.client.HTTPConnection, key: str, body: bytes) -> dict:
    conn.request(
        "POST",
        "/api/v1/events",
        body,
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 202:
        raise SystemExit(f"HTTP {answer.status}: {data[:300]!r}")
    return json.loads(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--single", type=int, default=1_000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="upstream-bench-api-"))
    os.environ["UPSTREAM_API_RATE_PER_S"] = os.environ["UPSTREAM_API_RATE_BURST"] = "1000000"
    _benchdb.setup_scratch_django(str(scratch / "db.sqlite3"), str(scratch / "spool"))

    from django.core.wsgi import get_wsgi_application

    from api.models import ApiKey
    from monitoring import attempts
    from monitoring.models import Integration, RequestLog

    integration = Integration.objects.create(name="Bench", slug="bench", environment="production")
    _, key = ApiKey.issue(name="bench", scopes=["ingest"])
    server = make_server("127.0.0.1", 0, get_wsgi_application(), _Threaded, _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)

    # Batches of 500 through the whole HTTP path.
    bodies = [
        json.dumps(
            {
                "batch_id": f"b{n}",
                "events": [_event(i) for i in range(n, min(n + args.batch, args.events))],
            }
        ).encode()
        for n in range(0, args.events, args.batch)
    ]
    start = time.perf_counter()
    accepted = sum(_post(conn, key, body)["accepted"] for body in bodies)
    batched_s = time.perf_counter() - start
    batched_rate = accepted / batched_s

    # Peer: one event per request (the shape of a ping endpoint).
    singles = [json.dumps({"events": [_event(i)]}).encode() for i in range(args.single)]
    start = time.perf_counter()
    single_accepted = sum(_post(conn, key, body)["accepted"] for body in singles)
    single_rate = single_accepted / (time.perf_counter() - start)

    # Peer: the raw insert floor, sqlite3 executemany of the same rows, no HTTP, no rollup.
    rows = [
        attempts.to_row(attempts.from_fields(integration=integration, **_fields(_event(i))))
        for i in range(args.events)
    ]
    from monitoring.storage import _adapter, insert_sql

    adapt = _adapter()
    params = [
        tuple(adapt(v) if hasattr(v, "tzinfo") else v for v in (row[c] for c in attempts.COLUMNS))
        for row in rows
    ]
    raw = sqlite3.connect(scratch / "floor.sqlite3")
    raw.executescript(_floor_schema())
    start = time.perf_counter()
    with raw:
        raw.executemany(insert_sql().replace("%s", "?"), params)
    floor_rate = len(params) / (time.perf_counter() - start)

    stored = RequestLog.objects.count()
    lost = accepted + single_accepted - stored
    server.shutdown()
    print(f"HTTP batches of {args.batch}: {batched_rate:,.0f} events/s ({accepted:,} events)")
    print(f"one event per request:      {single_rate:,.0f} events/s")
    print(f"raw executemany floor:      {floor_rate:,.0f} rows/s")
    print(f"batched / one-per-request:  {batched_rate / single_rate:.1f}×")
    print(f"batched / raw floor:        {batched_rate / floor_rate:.2f}×")
    print(f"lost: {lost}")
    print(
        json.dumps(
            {
                "bench": "ingest_api",
                "events_per_s": round(batched_rate),
                "single_per_s": round(single_rate),
                "floor_per_s": round(floor_rate),
                "vs_single": round(batched_rate / single_rate, 1),
                "vs_floor": round(batched_rate / floor_rate, 3),
                "lost": lost,
            }
        )
    )


def _fields(event: dict) -> dict:
    fields = {k: v for k, v in event.items() if k not in ("integration", "environment")}
    return {**fields, "source": "ingest"}


def _floor_schema() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name='monitoring_requestlog'"
        )
        (sql,) = cursor.fetchone()
    # The same table; sqlite3 leaves foreign keys unchecked by default: the insert alone.
    return sql + ";"


if __name__ == "__main__":
    main()
