"""Verified webhook deliveries per second through POST /hooks/<token>/ (a real WSGI server on
loopback), against a bare Django view answering 200 to the same requests, in the same run.

    .venv/bin/python bench/webhooks.py [--deliveries 3000] [--clients 4] [--rounds 6]
                                       [--server gunicorn|wsgiref] [--workers 1]

SQLite in a scratch directory, settings as deployed (DEBUG=0), one Standard Webhooks
endpoint with its secret encrypted. Every delivery is signed by the ``standardwebhooks``
library with its own message id (so none is a duplicate) and sent by ``--clients``
keep-alive connections at once. The bare view is mounted in the same server process, behind
the same middleware, and reads the same bodies: the ratio is what verification, dedupe and
queueing the attempt cost. Server time is measured in the server process, around the
WSGI application (the round trip adds the client's queueing behind the other connections).
Goal: ≥ 50 % of the bare view's rate, p99 ≤ 50 ms, 0 deliveries lost. Prints the figures,
then one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BARE_PREFIX = "bench/bare/"
TYPES = ("invoice.paid", "invoice.created", "customer.updated")


def _bare_view(request, token):
    """The peer: the same request, read and answered 200, nothing verified or recorded."""
    from django.http import HttpResponse

    request.read()
    return HttpResponse(b'{"status": "ok"}', content_type="application/json")


def _mount_bare_view() -> None:
    """Add the bare view to the project's URL map, in the serving process only."""
    from django.urls import clear_url_caches, re_path
    from django.views.decorators.csrf import csrf_exempt

    from dashboard import urls

    urls.urlpatterns.insert(
        0, re_path(rf"^{BARE_PREFIX}(?P<token>[^/]+)/$", csrf_exempt(_bare_view))
    )
    clear_url_caches()


SERVER_TIME_HEADER = "X-Bench-Server-Ms"


def _application():
    """The WSGI app gunicorn serves: the project's plus the bare view, each response carrying
    how long the application took (from the call to the response in hand, in ms)."""
    from django.core.wsgi import get_wsgi_application

    django_app = get_wsgi_application()
    _mount_bare_view()

    def timed(environ, start_response):
        started = time.perf_counter()
        held = []
        body = django_app(environ, lambda status, headers, exc=None: held.append((status, headers)))
        status, headers = held[0]
        elapsed = (time.perf_counter() - started) * 1000
        start_response(status, [*headers, (SERVER_TIME_HEADER, f"{elapsed:.3f}")])
        return body

    return timed


if os.environ.get("UPSTREAM_BENCH_WEBHOOKS_SERVE") == "1":  # imported by gunicorn
    application = _application()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gunicorn(workers: int) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = os.environ | {"UPSTREAM_BENCH_WEBHOOKS_SERVE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning", "bench.webhooks:application"],
        cwd=ROOT,
        env=env,
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


def _deliveries(secret: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
    import standardwebhooks

    signer = standardwebhooks.Webhook(secret)
    out = []
    for i in range(n):
        msg_id = f"msg_{secrets.token_hex(10)}"
        lines = [{"id": f"il_{i}_{j}", "amount": 999} for j in range(4)]
        invoice = {"id": f"in_{i}", "amount_due": 1999, "currency": "usd", "lines": lines}
        body = json.dumps({"id": f"evt_{i}", "type": TYPES[i % 3], "data": {"object": invoice}})
        now = datetime.now(tz=UTC)
        out.append(
            (
                body.encode(),
                {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(msg_id, now, body),
                    "Content-Type": "application/json",
                },
            )
        )
    return out


def _send(port: int, path: str, items: list, clients: int) -> tuple[float, list, dict, list]:
    """Send ``items`` over ``clients`` keep-alive connections: (seconds, server times,
    statuses, round trips)."""
    latencies: list[float] = []
    trips: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    shares = [items[i::clients] for i in range(clients)]

    def run(share):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, seen, my_trips = [], {}, []
        for body, headers in share:
            start = time.perf_counter()
            conn.request("POST", path, body, headers)
            answer = conn.getresponse()
            answer.read()
            mine.append(float(answer.getheader(SERVER_TIME_HEADER) or "nan") / 1000)
            my_trips.append(time.perf_counter() - start)
            seen[answer.status] = seen.get(answer.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            trips.extend(my_trips)
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, statuses, trips


def _add(total: dict[int, int], more: dict[int, int]) -> None:
    for status, count in more.items():
        total[status] = total.get(status, 0) + count


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--server", choices=("gunicorn", "wsgiref"), default="gunicorn")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="upstream-bench-hooks-"))
    key = base64.urlsafe_b64encode(os.urandom(24)).decode()
    os.environ.update(
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 60,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        UPSTREAM_SECRETS_KEY=key,
    )
    os.environ.pop("REDIS_URL", None)  # the database dedupe table: the default deployment
    from bench import _benchdb

    _benchdb.setup_scratch_django(str(scratch / "db.sqlite3"), str(scratch / "spool"))

    from monitoring.models import Integration, RequestLog, WebhookEndpoint
    from monitoring.webhooks import secrets as hook_secrets

    integration = Integration.objects.create(
        name="Bench", slug="bench", environment="production", base_url="https://api.bench.test"
    )
    endpoint = WebhookEndpoint.objects.create(integration=integration, scheme="standard")
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    hook_secrets.create(endpoint, value=secret)

    if args.server == "gunicorn":
        child, port = _gunicorn(args.workers)
    else:
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, *a):
                pass

        class Threaded(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        server = make_server("127.0.0.1", 0, _application(), Threaded, Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_port

    warm = _deliveries(secret, 200)
    _send(port, endpoint.path, warm[:100], args.clients)
    _send(port, f"/{BARE_PREFIX}{endpoint.token}/", warm[100:], args.clients)

    # Signed just before sending: well inside the 300 s replay window. The two peers take
    # turns in rounds (alternating who goes first), so a load swing on a shared machine hits
    # both alike.
    items = _deliveries(secret, args.deliveries)
    bare_path, rounds = f"/{BARE_PREFIX}{endpoint.token}/", max(1, args.rounds)
    bare_s = hook_s = 0.0
    bare_lat, hook_lat, bare_trips, hook_trips = [], [], [], []
    bare_status: dict[int, int] = {}
    hook_status: dict[int, int] = {}
    for n in range(rounds):
        chunk = items[n::rounds]
        order = ("bare", "hook") if n % 2 == 0 else ("hook", "bare")
        for peer in order:
            path = bare_path if peer == "bare" else endpoint.path
            took, lat, status, trips = _send(port, path, chunk, args.clients)
            if peer == "bare":
                bare_s += took
                bare_lat += lat
                bare_trips += trips
                _add(bare_status, status)
            else:
                hook_s += took
                hook_lat += lat
                hook_trips += trips
                _add(hook_status, status)

    if args.server == "gunicorn":
        child.send_signal(signal.SIGTERM)  # the recorder flushes its queue on the way out
        child.wait(60)
    else:
        from monitoring import recorder

        server.shutdown()
        recorder.flush(timeout=60)
    accepted = hook_status.get(202, 0) + 100  # the warm-up's verified deliveries count too
    stored = RequestLog.objects.filter(source="webhook", status=202).count()
    lost = accepted - stored
    bare_rate, hook_rate = len(items) / bare_s, len(items) / hook_s
    ratio = hook_rate / bare_rate
    hook_p99, bare_p99 = _p99(hook_lat), _p99(bare_lat)
    name = f"gunicorn ×{args.workers}" if args.server == "gunicorn" else "wsgiref"
    print(f"server: {name}, {args.clients} client connections, {len(items):,} deliveries")
    hook_trip, bare_trip = _p99(hook_trips), _p99(bare_trips)
    print(
        f"verified deliveries: {hook_rate:,.0f}/s  server p99 {hook_p99:.1f} ms  "
        f"(round trip p99 {hook_trip:.1f} ms)  {hook_status}"
    )
    print(
        f"bare Django view:    {bare_rate:,.0f}/s  server p99 {bare_p99:.1f} ms  "
        f"(round trip p99 {bare_trip:.1f} ms)  {bare_status}"
    )
    print(f"verified / bare:     {ratio:.0%} (goal ≥ 50 %)")
    print(f"lost: {lost} (accepted {accepted:,}, stored {stored:,})")
    print(
        json.dumps(
            {
                "bench": "webhooks",
                "server": args.server,
                "workers": args.workers if args.server == "gunicorn" else 1,
                "clients": args.clients,
                "deliveries": len(items),
                "verified_per_s": round(hook_rate),
                "bare_per_s": round(bare_rate),
                "vs_bare": round(ratio, 3),
                "p99_ms": round(hook_p99, 1),
                "bare_p99_ms": round(bare_p99, 1),
                "round_trip_p99_ms": round(hook_trip, 1),
                "lost": lost,
                "ok": ratio >= 0.5
                and hook_p99 <= 50
                and lost == 0
                and hook_status == {202: len(items)},
            }
        )
    )


if __name__ == "__main__":
    main()
