"""Per-call cost of MonitoredClient vs plain httpx vs httpx with OpenTelemetry instrumentation.

A minimal keep-alive HTTP server runs in a separate process on loopback (so it does not
compete for this process's GIL). Three clients make sequential GETs: plain
``httpx.Client`` (the baseline), ``MonitoredClient`` with recording on (rows go to a
scratch SQLite database through the real recorder, whose writer thread runs meanwhile),
and ``httpx.Client`` instrumented by ``opentelemetry-instrumentation-httpx`` with an
in-memory span exporter. Calls are interleaved one by one (each round every client makes
one call, the order rotating per round): on a shared, noisy machine, interleaving whole
blocks of calls left a ~100 µs bias between two identical plain clients.

Printed: median and p99 µs added per call over plain httpx for ours and OTel's, the ratio
ours/OTel, and rows lost (calls made vs rows in the database after ``recorder.flush()``).
Goal: ≤ 15 µs added per call, ≤ ¼ of OTel's added cost, 0 lost. The last line is JSON.

    python bench/client_overhead.py [--n 2000] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def _setup_django(workdir: str) -> None:
    sys.path.insert(0, str(ROOT))
    from bench import _benchdb

    _benchdb.setup_scratch_django(
        os.path.join(workdir, "bench.sqlite3"), os.path.join(workdir, "spool")
    )


def _rounds(clients: dict, url: str, n: int) -> dict[str, list[float]]:
    """n rounds; in each, every client makes one call, in an order that rotates per round,
    so load drift on a shared machine hits all of them alike."""
    names = list(clients)
    gets = [clients[name].get for name in names]
    samples: dict[str, list[float]] = {name: [] for name in names}
    lists = [samples[name] for name in names]
    clock = time.perf_counter
    k = len(names)
    for i in range(n):
        for j in range(k):
            index = (i + j) % k
            start = clock()
            gets[index](url)
            lists[index].append(clock() - start)
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="rounds per repetition")
    parser.add_argument("--reps", type=int, default=7, help="repetitions")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="upstream-bench-") as workdir:
        _setup_django(workdir)
        import httpx
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from monitoring import recorder
        from monitoring.client import MonitoredClient
        from monitoring.models import RequestLog

        server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            base = f"http://127.0.0.1:{port}"
            url = f"{base}/v1/customers/42"

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            plain = httpx.Client()
            otel = httpx.Client()
            HTTPXClientInstrumentor.instrument_client(otel, tracer_provider=provider)
            ours = MonitoredClient(integration="bench", environment="sandbox", base_url=base)
            clients = {"plain": plain, "ours": ours, "otel": otel}

            _rounds(clients, url, 200)  # warm up connections and caches
            calls_ours = 200
            recorder.flush()
            samples: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.reps):
                for name, values in _rounds(clients, url, args.n).items():
                    samples[name] += values
                calls_ours += args.n
                exporter.clear()
            recorder.flush(timeout=120)
            stats = recorder.stats()
            rows = RequestLog.objects.filter(integration_id=ours.integration_ref.id).count()
            for client in clients.values():
                client.close()
        finally:
            server.kill()
            server.wait()

    us = 1e6
    median = {name: statistics.median(s) * us for name, s in samples.items()}
    p99 = {name: _p(s, 0.99) * us for name, s in samples.items()}
    added = {name: median[name] - median["plain"] for name in ("ours", "otel")}
    added_p99 = {name: p99[name] - p99["plain"] for name in ("ours", "otel")}
    ratio = added["ours"] / added["otel"] if added["otel"] > 0 else float("nan")
    lost = calls_ours - rows
    writer_us = stats["writer_cpu_s"] / max(1, stats["written"]) * us

    n_total = args.n * args.reps
    print(f"calls per client: {n_total} (interleaved call by call, {args.reps} × {args.n})")
    for name in clients:
        print(f"  {name:5s}  median {median[name]:8.1f} µs   p99 {p99[name]:8.1f} µs")
    print(
        f"added per call, median: ours {added['ours']:.1f} µs, OTel {added['otel']:.1f} µs; "
        f"p99: ours {added_p99['ours']:.1f} µs, OTel {added_p99['otel']:.1f} µs"
    )
    print(f"ratio ours/OTel (median added): {ratio:.3f}   (goal ≤ 0.25; ≤ 15 µs added)")
    print(
        f"rows: expected {calls_ours}, in database {rows}, lost {lost}; writer thread CPU "
        f"{writer_us:.1f} µs per row (off the caller's thread)"
    )
    print(
        json.dumps(
            {
                "bench": "client_overhead",
                "calls": n_total,
                "plain_median_us": round(median["plain"], 1),
                "ours_added_median_us": round(added["ours"], 1),
                "otel_added_median_us": round(added["otel"], 1),
                "ours_added_p99_us": round(added_p99["ours"], 1),
                "otel_added_p99_us": round(added_p99["otel"], 1),
                "ratio_ours_otel": round(ratio, 3),
                "rows_expected": calls_ours,
                "rows_in_db": rows,
                "rows_lost": lost,
                "writer_cpu_us_per_row": round(writer_us, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
