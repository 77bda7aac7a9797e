"""Per-call cost of upstream-client (httpx, httpx2, requests) vs plain calls, OTel and Sentry.

A minimal keep-alive HTTP server runs in a separate process on loopback (so it does not
compete for this process's GIL), and a real Upstream (gunicorn on a scratch SQLite
database) in another. Clients make sequential GETs, interleaved one by one (each round
every client makes one call, in a shuffled order: on a shared, noisy machine, interleaving
whole blocks of calls left a ~100 µs bias between two identical clients):

Two phases, so that each comparison is made among clients measured together:

1. The libraries, with nothing else in the process, one library at a time: plain
   ``httpx.Client`` against ``upstream_client.Client``, plain ``httpx2.Client`` against
   ``upstream_client.httpx2.Client``, plain ``requests.Session`` against
   ``upstream_client.requests.Session``; ours ship to the local Upstream (their Shipper
   thread batches and posts meanwhile). This is the added cost per call an application
   sees.
2. The peers, beside plain ``httpx.Client``: ``upstream_client.Client`` again,
   ``MonitoredClient`` (inside Upstream: LocalSink → recorder → the scratch database), and
   ``httpx.Client`` instrumented by OpenTelemetry (in-memory span exporter) and by Sentry
   (tracing on, a transport that discards envelopes, one transaction per repetition). The
   ratios ours/OTel and ours/Sentry divide figures of this phase. The peers' own work in
   this process (the recorder's writer thread storing and rolling up, span export) slows
   every client here, ours included, which is why phase 1 runs without them.

Then shipping throughput: one process submits events as fast as it can to a Shipper and
flushes; events per second until Upstream has acknowledged them all, with two requests in
flight (the default) against one at a time, in ABBA runs of half the events each, after an
untimed warm-up shipment.

Printed: median and p99 µs added per call over each library's plain client, and the median
CPU time the calling thread spent (load-independent: on a busy shared machine the wall-time
medians drift by more than the figures measured), ours/OTel and ours/Sentry, rows lost
(calls made vs rows in Upstream); shipping events/s end to end and the sender thread's own
CPU per event (its capacity when Upstream is not the bottleneck). Goal: ≤ 15 µs added
(median) per library, ≤ 1/10 of OTel's added cost, 0 lost, ≥ 20,000 events/s shipped. The
last line is JSON with every figure.

With ``--instructions`` (needs valgrind) it also counts the instructions each client
retires per call (bench/_instructions.py), which no load on the machine changes.

    python bench/client_overhead.py [--n 1000] [--reps 7] [--events 100000] [--workers 2]
                                    [--instructions]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = r"""
import asyncio
BODY = b'{"id": 42, "object": "customer", "name": "Ada Lovelace"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"X-RateLimit-Limit: 1000\r\nX-RateLimit-Remaining: 999\r\nX-RateLimit-Reset: 30\r\n"
    b"X-Request-Id: req_0123456789abcdef\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n"
    % len(BODY)
) + BODY

class Protocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(RESPONSE)

async def main():
    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

# (library, ours, plain): each of ours is compared with the plain client of its library.
PAIRS = (
    ("httpx", "ours", "plain"),
    ("httpx2", "ours2", "plain2"),
    ("requests", "ours_r", "plain_r"),
)


def _setup(workdir: str) -> None:
    from bench import _benchdb

    # As deployed (DEBUG off), and no per-key rate limit in the way of the throughput run.
    os.environ.update(
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 60,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        UPSTREAM_API_RATE_PER_S="1000000",
        UPSTREAM_API_RATE_BURST="1000000",
    )
    _benchdb.setup_scratch_django(
        os.path.join(workdir, "bench.sqlite3"), os.path.join(workdir, "spool")
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _upstream(workers: int) -> tuple[subprocess.Popen, str]:
    """gunicorn serving Upstream on the scratch database (the environment set above)."""
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
            return child, f"http://127.0.0.1:{port}"
        except OSError:
            if child.poll() is not None:
                raise SystemExit("gunicorn did not start") from None
            time.sleep(0.1)
    child.terminate()
    raise SystemExit("gunicorn did not listen within 30 s")


def _sentry_client_class():
    """An httpx.Client subclass with Sentry's instrumentation, leaving httpx.Client itself
    (the plain clients and the Shipper's) as it was: Sentry patches the class."""
    import httpx
    import sentry_sdk
    from sentry_sdk.integrations.httpx import HttpxIntegration
    from sentry_sdk.transport import Transport

    class Discard(Transport):
        def capture_envelope(self, envelope):
            pass

    original = httpx.Client.send
    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",
        transport=Discard,
        traces_sample_rate=1.0,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[HttpxIntegration()],
    )
    patched = httpx.Client.send
    httpx.Client.send = original

    class SentryClient(httpx.Client):
        send = patched

    return SentryClient


def _rounds(clients: dict, url: str, n: int) -> dict[str, tuple[list[float], list[float]]]:
    """n rounds; in each, every client makes one call, in an order shuffled per round, so
    load drift on a shared machine hits all of them alike and no client always follows the
    same neighbour (a call right after one of its own library's finds its caches warm: a
    fixed rotation gave each plain client a cold start and ~40 µs extra). Each call's wall
    time and this thread's CPU time (the client's own work, whatever the scheduler does)."""
    names = list(clients)
    gets = [clients[name].get for name in names]
    samples = {name: ([], []) for name in names}
    lists = [samples[name] for name in names]
    clock, cpu = time.perf_counter, time.thread_time
    order = list(range(len(names)))
    shuffle = random.Random(42).shuffle
    for _ in range(n):
        shuffle(order)
        for index in order:
            start, start_cpu = clock(), cpu()
            gets[index](url)
            end_cpu, end = cpu(), clock()
            wall, spent = lists[index]
            wall.append(end - start)
            spent.append(end_cpu - start_cpu)
    return samples


WARM_UP = 200  # rounds before a phase's timed ones: connections and caches warm
SHIP_WARM_UP = 4000  # events shipped before the timed shipping runs
PEERS = ("ours", "monitored", "otel", "sentry")  # phase 2, each against plain httpx


def _phase(
    clients: dict, url: str, n: int, reps: int, transaction=None, after=None
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU samples of each client over ``reps`` × ``n`` rounds after a warm-up;
    each repetition inside ``transaction()`` if given (Sentry's), ``after()`` run after it."""
    scope = transaction or (lambda **_: contextlib.nullcontext())
    with scope(name="warm-up", op="bench"):
        _rounds(clients, url, WARM_UP)
    samples: dict[str, list[float]] = {name: [] for name in clients}
    cpu_samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(reps):
        with scope(name="bench", op="bench"):
            for name, (wall, spent) in _rounds(clients, url, n).items():
                samples[name] += wall
                cpu_samples[name] += spent
        if after is not None:
            after()
    return samples, cpu_samples


def _summary(samples: dict, cpu_samples: dict) -> tuple[dict, dict, dict]:
    """Per client in µs: median and p99 wall time, median CPU time."""
    us = 1e6
    median = {name: statistics.median(s) * us for name, s in samples.items()}
    p99 = {name: _p(s, 0.99) * us for name, s in samples.items()}
    cpu = {name: statistics.median(s) * us for name, s in cpu_samples.items()}
    return median, p99, cpu


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _event(i: int) -> dict:
    """An event as capture builds it for one call."""
    return {
        "integration": "bench-ship",
        "environment": "production",
        "time": "2026-12-01T10:00:00.000000+00:00",
        "method": "POST",
        "url": f"https://api.stripe.com/v1/customers/cus_{i:014d}",
        "status": 200 if i % 20 else 429,
        "latency_ms": 20.0 + i % 300,
        "request_bytes": 120,
        "response_bytes": 512,
        "response_headers": {"content-type": "application/json", "request-id": f"req_{i}"},
        "call_id": f"{i:016x}",
        "attempt": 1,
        "backoff_ms": 0.0,
        "first_byte_ms": 21.0,
        "duration_ms": 22.0,
    }


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _workers(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _ship(
    url: str, key: str, events: int, workdir: str, *, in_flight: int, offset: int, server: int
) -> tuple[float, dict]:
    """Submit ``events`` as fast as one thread can and flush: events/s until Upstream has
    acknowledged them all, with ``in_flight`` requests at a time."""
    from upstream_client.ship import Shipper

    shipper = Shipper(
        url,
        key,
        spool_dir=os.path.join(workdir, "ship-spool"),
        max_queue=events,
        max_in_flight=in_flight,
    )
    batch = [_event(offset + i) for i in range(events)]
    submit = shipper.submit
    workers = _workers(server)
    server_before = _cpu_s(workers)
    start = time.perf_counter()
    for event in batch:
        submit(event)
    submitted_s = time.perf_counter() - start
    if not shipper.flush(timeout=600):
        raise SystemExit(f"shipping did not finish: {shipper.stats()}")
    elapsed = time.perf_counter() - start
    stats = shipper.stats()
    shipper.close()
    stats["elapsed_s"] = elapsed
    stats["server_cpu_s"] = _cpu_s(workers) - server_before  # gunicorn's workers
    stats["submit_us"] = submitted_s / events * 1e6
    # What one sender thread could ship if Upstream answered at once: its own CPU per event.
    stats["capacity"] = events / stats["sender_cpu_s"] if stats["sender_cpu_s"] else 0.0
    return events / elapsed, stats


def _merge_runs(runs: list[dict]) -> dict:
    """The shipping runs of one kind as one: counts and times summed."""
    merged = {"events": sum(r["sent_events"] for r in runs)}
    for name in ("elapsed_s", "sender_cpu_s", "server_cpu_s", "sent_batches", "dropped_events"):
        merged[name] = sum(r[name] for r in runs)
    merged["submit_us"] = statistics.median(r["submit_us"] for r in runs)
    events = max(1, merged["events"])
    merged["sender_us"] = merged["sender_cpu_s"] / events * 1e6
    merged["server_us"] = merged["server_cpu_s"] / events * 1e6
    # What one sender could ship if Upstream answered at once: its own CPU per event.
    merged["capacity"] = events / merged["sender_cpu_s"] if merged["sender_cpu_s"] else 0.0
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="rounds per repetition")
    parser.add_argument("--reps", type=int, default=7, help="repetitions")
    parser.add_argument("--events", type=int, default=100_000, help="events shipped")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of Upstream")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per call under valgrind (bench/_instructions.py)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="upstream-bench-") as workdir:
        _setup(workdir)
        import httpx
        import httpx2
        import requests
        import sentry_sdk
        import upstream_client
        import upstream_client.httpx2
        import upstream_client.requests
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from upstream_client.ship import Shipper

        from api.models import ApiKey
        from monitoring import recorder
        from monitoring.client import MonitoredClient
        from monitoring.models import RequestLog

        _, key = ApiKey.issue(name="bench", scopes=["ingest"], allow_create=True)
        upstream, upstream_url = _upstream(args.workers)
        server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            base = f"http://127.0.0.1:{port}"
            url = f"{base}/v1/customers/42"

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            otel = httpx.Client()
            HTTPXClientInstrumentor.instrument_client(otel, tracer_provider=provider)
            shipper = Shipper(upstream_url, key, spool_dir=os.path.join(workdir, "ours-spool"))
            # Phase 1, the libraries: each plain client against ours, shipping to the local
            # Upstream, and nothing else in this process. Phase 2, the peers: plain httpx,
            # ours, MonitoredClient, OpenTelemetry and Sentry side by side, for the ratios.
            # Apart, because the peers' own work in this process (the recorder's writer
            # thread with its SQLite inserts and rollups, span export) slowed every client's
            # calls: ours added 12-18 µs of CPU without them, 27 µs with MonitoredClient
            # alone in the rotation (one run on the 2-core development machine).
            libraries = {
                "plain": httpx.Client(),
                "ours": upstream_client.Client(
                    integration="bench-httpx", environment="sandbox", sink=shipper
                ),
                "plain2": httpx2.Client(),
                "ours2": upstream_client.httpx2.Client(
                    integration="bench-httpx2", environment="sandbox", sink=shipper
                ),
                "plain_r": requests.Session(),
                "ours_r": upstream_client.requests.Session(
                    integration="bench-requests", environment="sandbox", sink=shipper
                ),
            }
            # One library at a time, its plain client and ours shuffled per round: in one
            # rotation of all six, each of our calls came after another library's and found
            # its caches cold (the same effect the shuffle keeps off the plain clients),
            # which an application calling one library does not see.
            samples, cpu_samples = {}, {}
            for _, ours_name, plain_name in PAIRS:
                pair = {name: libraries[name] for name in (plain_name, ours_name)}
                wall, cpu = _phase(pair, url, args.n, args.reps)
                samples.update(wall)
                cpu_samples.update(cpu)
            peers = {
                "plain": libraries["plain"],
                "ours": libraries["ours"],
                "monitored": MonitoredClient(
                    integration="bench", environment="sandbox", base_url=base
                ),
                "otel": otel,
                "sentry": _sentry_client_class()(),
            }
            with_peers, with_peers_cpu = _phase(
                peers, url, args.n, args.reps, sentry_sdk.start_transaction, exporter.clear
            )
            calls = WARM_UP + args.n * args.reps  # per client and phase
            recorder.flush(timeout=120)
            shipped_all = shipper.flush(timeout=120)
            for client in {*libraries.values(), *peers.values()}:
                client.close()
            shipper.close()
            rows = {
                slug: RequestLog.objects.filter(integration__slug=slug).count()
                for slug in ("bench", "bench-httpx", "bench-httpx2", "bench-requests")
            }
            expected = dict.fromkeys(rows, calls)
            expected["bench-httpx"] = 2 * calls  # ours runs in both phases

            # Two requests in flight (the default) against one at a time (the sender as it
            # was), ABBA so that load drift on a shared machine hits both alike.
            half = max(1, args.events // 2)
            # First, untimed: the integration's creation and each worker's first batches
            # (its policy, caches, a cold table) are not the sustained rate. Unwarmed, the
            # first run came out at half the rate of the three after it.
            _ship(
                upstream_url, key, SHIP_WARM_UP, workdir, in_flight=2, offset=4 * half,
                server=upstream.pid,
            )  # fmt: skip
            ship_runs: dict[int, list[dict]] = {2: [], 1: []}
            for n, lanes in enumerate((2, 1, 1, 2)):
                _, run = _ship(
                    upstream_url, key, half, workdir, in_flight=lanes, offset=n * half,
                    server=upstream.pid,
                )  # fmt: skip
                ship_runs[lanes].append(run)
            shipped_rows = RequestLog.objects.filter(integration__slug="bench-ship").count()
            ship_stats = _merge_runs(ship_runs[2])
            serial_stats = _merge_runs(ship_runs[1])
            rate = ship_stats["events"] / ship_stats["elapsed_s"]
            serial_rate = serial_stats["events"] / serial_stats["elapsed_s"]
        finally:
            server.kill()
            server.wait()
            upstream.terminate()
            upstream.wait()

    median, p99, cpu = _summary(samples, cpu_samples)
    added = {ours: median[ours] - median[plain] for _, ours, plain in PAIRS}
    added_p99 = {ours: p99[ours] - p99[plain] for _, ours, plain in PAIRS}
    added_cpu = {ours: cpu[ours] - cpu[plain] for _, ours, plain in PAIRS}
    # Phase 2: each peer and ours against plain httpx of the same phase; the ratios divide
    # figures of that one phase.
    p_median, p_p99, p_cpu = _summary(with_peers, with_peers_cpu)
    beside = {name: p_median[name] - p_median["plain"] for name in PEERS}
    beside_p99 = {name: p_p99[name] - p_p99["plain"] for name in PEERS}
    beside_cpu = {name: p_cpu[name] - p_cpu["plain"] for name in PEERS}

    def ratio(peer: str, figures: dict[str, float]) -> float:
        return figures["ours"] / figures[peer] if figures[peer] > 0 else float("nan")

    lost = {slug: expected[slug] - found for slug, found in rows.items()}
    lost["bench-ship"] = 4 * half + SHIP_WARM_UP - shipped_rows

    n_total = args.n * args.reps
    print(f"calls per client and phase: {n_total} (interleaved, {args.reps} × {args.n})")

    def table(title: str, medians: dict, p99s: dict, cpus: dict) -> None:
        print(title)
        for name in medians:
            print(
                f"  {name:9s}  median {medians[name]:8.1f} µs   p99 {p99s[name]:8.1f} µs   "
                f"CPU median {cpus[name]:7.1f} µs"
            )

    table("phase 1, the libraries (nothing else in the process):", median, p99, cpu)
    for label, name, _ in PAIRS:
        print(
            f"added per call, {label:9s}: median {added[name]:6.1f} µs, "
            f"p99 {added_p99[name]:7.1f} µs, CPU {added_cpu[name]:6.1f} µs (goal ≤ 15 µs)"
        )
    table("phase 2, the peers beside plain httpx:", p_median, p_p99, p_cpu)
    for name in PEERS:
        print(
            f"added per call, {name:9s}: median {beside[name]:6.1f} µs, "
            f"p99 {beside_p99[name]:7.1f} µs, CPU {beside_cpu[name]:6.1f} µs"
        )
    print(
        f"ratio ours/OTel {ratio('otel', beside):.3f}, ours/Sentry {ratio('sentry', beside):.3f} "
        f"(median added, httpx, phase 2); by CPU: ours/OTel {ratio('otel', beside_cpu):.3f}, "
        f"ours/Sentry {ratio('sentry', beside_cpu):.3f}  (goal ≤ 0.1)"
    )
    print(f"rows lost: {lost} (shipper flushed: {shipped_all})")
    print(
        f"shipping: {rate:,.0f} events/s from one process to a local Upstream ({args.workers} "
        f"gunicorn workers; goal ≥ 20,000), {rate / serial_rate:.2f}× one request at a time "
        f"({serial_rate:,.0f}/s, ABBA, {half:,} events a run); submit "
        f"{ship_stats['submit_us']:.2f} µs per event, {ship_stats['sent_batches']} batches, "
        f"{ship_stats['dropped_events'] + serial_stats['dropped_events']} dropped"
    )
    print(
        f"CPU per event: sender {ship_stats['sender_us']:.1f} µs (encode, gzip, HTTP: capacity "
        f"{ship_stats['capacity']:,.0f} events/s of one core), Upstream's workers "
        f"{ship_stats['server_us']:.1f} µs (parse, build, store, roll up)"
    )
    figures = {
        "bench": "client_overhead",
        "calls": n_total,
        "plain_median_us": round(median["plain"], 1),
        "plain2_median_us": round(median["plain2"], 1),
        "plain_r_median_us": round(median["plain_r"], 1),
        **{
            f"{label}_added_{kind}_us": round(figures[name], 1)
            for kind, figures in (("median", added), ("p99", added_p99), ("cpu", added_cpu))
            for label, name, _ in PAIRS
        },
        **{
            f"{name}_added_{kind}_us": round(figures[name], 1)
            for kind, figures in (("median", beside), ("p99", beside_p99), ("cpu", beside_cpu))
            for name in PEERS[1:]
        },
        "ratio_ours_otel": round(ratio("otel", beside), 3),
        "ratio_ours_sentry": round(ratio("sentry", beside), 3),
        "ratio_ours_otel_cpu": round(ratio("otel", beside_cpu), 3),
        "ratio_ours_sentry_cpu": round(ratio("sentry", beside_cpu), 3),
        "httpx_added_beside_peers_median_us": round(beside["ours"], 1),
        "httpx_added_beside_peers_cpu_us": round(beside_cpu["ours"], 1),
        "rows_expected": sum(expected.values()),
        "rows_lost": sum(lost.values()),
        "rows_lost_by_client": lost,
        "ship_events": 2 * half,
        "ship_events_per_s": round(rate),
        "ship_one_in_flight_per_s": round(serial_rate),
        "ship_vs_one_in_flight": round(rate / serial_rate, 2),
        "ship_submit_us": round(ship_stats["submit_us"], 2),
        "ship_sender_cpu_us_per_event": round(ship_stats["sender_us"], 2),
        "ship_sender_capacity_per_s": round(ship_stats["capacity"]),
        "ship_server_cpu_us_per_event": round(ship_stats["server_us"], 1),
        "ship_batches": ship_stats["sent_batches"],
        "ship_dropped": ship_stats["dropped_events"] + serial_stats["dropped_events"],
        "upstream_workers": args.workers,
    }
    if args.instructions:
        figures.update(_instruction_figures())
    print(json.dumps(figures))


def _instruction_figures() -> dict:
    """Instructions per call under callgrind (after the timed runs: it loads both cores)."""
    from bench import _instructions

    counts = _instructions.per_call(
        [*(n for _, ours, plain in PAIRS for n in (plain, ours)), "otel"]
    )
    added = {label: counts[ours] - counts[plain] for label, ours, plain in PAIRS}
    otel = counts["otel"] - counts["plain"]
    print("instructions per call (callgrind, canned in-process responses, no network):")
    for label, _, plain in PAIRS:
        print(
            f"  {label:9s}: plain {counts[plain]:9,}, ours +{added[label]:,} "
            f"({added[label] / counts[plain]:.1%} of a plain call)"
        )
    print(f"  OTel on httpx: +{otel:,}; ours/OTel {added['httpx'] / otel:.3f} (goal ≤ 0.1)")
    return {
        "instructions_per_call": counts,
        **{f"{label}_added_instructions": n for label, n in added.items()},
        "otel_added_instructions": otel,
        "ratio_ours_otel_instructions": round(added["httpx"] / otel, 3),
    }


if __name__ == "__main__":
    main()
