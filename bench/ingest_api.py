"""Events per second through POST /api/v1/events (a real WSGI server on loopback), against
the raw insert floor and one event per request, all measured in this run.

    .venv/bin/python bench/ingest_api.py [--events 20000] [--batch 500] [--single 1000]
                                         [--server gunicorn|wsgiref] [--workers 1]
                                         [--clients 1] [--repeat 3]

SQLite in a scratch directory, rollups on, settings as deployed (DEBUG=0). The server is
gunicorn in its own process (what production runs; ``--workers`` of them), or wsgiref in
this one (sharing the client's interpreter and GIL). Both measured figures go through the
same server. Goal: ≥ 10,000 events/s through HTTP, ≥ 20× the one-event-per-request peer,
0 lost. Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import _benchdb  # noqa: E402  (needs the project root on the path)


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(port: int, key: str, bodies: list[bytes], clients: int) -> int:
    """POST every body over ``clients`` connections at once; the events accepted."""
    shares = [bodies[i::clients] for i in range(clients)]
    accepted = [0] * clients

    def run(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        accepted[n] = sum(_post(conn, key, body)["accepted"] for body in shares[n])
        conn.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(accepted)


def _gunicorn(workers: int) -> tuple[subprocess.Popen, int]:
    """gunicorn serving the project on the scratch database (the environment set above)."""
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning", "dashboard.wsgi"],
        cwd=ROOT,
        env=os.environ.copy(),
    )  # fmt: skip
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child, port
        except OSError:
            if child.poll() is not None:
                raise SystemExit("gunicorn did not start") from None
            time.sleep(0.1)
    child.terminate()
    raise SystemExit("gunicorn did not listen within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--single", type=int, default=1_000)
    parser.add_argument("--server", choices=("gunicorn", "wsgiref"), default="gunicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="batched runs; the best counts")
    parser.add_argument("--clients", type=int, default=1, help="connections sending at once")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="upstream-bench-api-"))
    atexit.register(shutil.rmtree, scratch, True)
    os.environ["UPSTREAM_API_RATE_PER_S"] = os.environ["UPSTREAM_API_RATE_BURST"] = "1000000"
    # As deployed: DEBUG off (no query log on every cursor), TLS left to a proxy in front.
    os.environ.update(
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 60,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
    )
    _benchdb.setup_scratch_django(str(scratch / "db.sqlite3"), str(scratch / "spool"))

    from django.core.wsgi import get_wsgi_application

    from api.models import ApiKey
    from monitoring import attempts
    from monitoring.models import Integration, RequestLog

    integration = Integration.objects.create(name="Bench", slug="bench", environment="production")
    _, key = ApiKey.issue(name="bench", scopes=["ingest"])
    if args.server == "gunicorn":
        child, port = _gunicorn(args.workers)
        stop = child.terminate
        atexit.register(child.terminate)  # also when a request fails and the run stops

        def server_cpu() -> float:
            return sum(_cpu_seconds(pid) for pid in _children(child.pid))
    else:
        server = make_server("127.0.0.1", 0, get_wsgi_application(), _Threaded, _Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, stop = server.server_port, server.shutdown

        def server_cpu() -> float:  # the whole process: server and client threads
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime

    # Warm every worker up first (URL map, policies, prepared statements): steady state.
    warm = [
        json.dumps({"batch_id": f"warm{n}", "events": [_event(i) for i in range(50)]}).encode()
        for n in range(4 * args.workers)
    ]
    warmed = _send(port, key, warm, args.clients)

    # Batches of 500 through the whole HTTP path; the best of --repeat runs (other work on
    # the machine only ever slows a run down).
    accepted = 0
    batched_rate = cpu_us = 0.0
    for run in range(args.repeat):
        bodies = [
            json.dumps(
                {
                    "batch_id": f"r{run}b{n}",
                    "events": [_event(i) for i in range(n, min(n + args.batch, args.events))],
                }
            ).encode()
            for n in range(0, args.events, args.batch)
        ]
        cpu_before = server_cpu()
        start = time.perf_counter()
        sent = _send(port, key, bodies, args.clients)
        rate = sent / (time.perf_counter() - start)
        accepted += sent
        if rate > batched_rate:
            # What the server spent per event: steadier than the rate on a shared machine.
            batched_rate, cpu_us = rate, (server_cpu() - cpu_before) / sent * 1e6

    # Peer: one event per request (the shape of a ping endpoint), same server and clients.
    singles = [json.dumps({"events": [_event(i)]}).encode() for i in range(args.single)]
    start = time.perf_counter()
    single_accepted = _send(port, key, singles, args.clients)
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

    stop()
    if args.server == "gunicorn":
        child.wait(30)
    stored = RequestLog.objects.count()
    lost = warmed + accepted + single_accepted - stored
    server_name = f"gunicorn, {args.workers} workers" if args.server == "gunicorn" else "wsgiref"
    print(f"server: {server_name}; {args.clients} client connection(s)")
    print(
        f"HTTP batches of {args.batch}: {batched_rate:,.0f} events/s "
        f"(best of {args.repeat} runs of {args.events:,} events)"
    )
    cpu_of = "server" if args.server == "gunicorn" else "process (server and client)"
    print(f"{cpu_of} CPU per event: {cpu_us:.1f} µs ({1e6 / cpu_us:,.0f} events per CPU-second)")
    print(f"one event per request:      {single_rate:,.0f} events/s")
    print(f"raw executemany floor:      {floor_rate:,.0f} rows/s")
    print(f"batched / one-per-request:  {batched_rate / single_rate:.1f}×")
    print(f"batched / raw floor:        {batched_rate / floor_rate:.2f}×")
    print(f"lost: {lost}")
    print(
        json.dumps(
            {
                "bench": "ingest_api",
                "server": args.server,
                "workers": args.workers if args.server == "gunicorn" else 1,
                "clients": args.clients,
                "cpu_us_per_event": round(cpu_us, 1),
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
