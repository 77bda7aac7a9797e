"""Benchmark the probe dispatcher: N probes due in one second, two dispatchers, one slot each.

Two dispatcher processes (as two django-q2 workers would be) share a fresh SQLite database
and call a minimal asyncio HTTP server in a third process that answers after
``--server-ms`` (50 ms, a fast real API; 0 makes the run CPU-bound, showing the
dispatcher's own cost; ``--sandbox`` calls the threaded sandbox provider instead). All
probes fall due at the same whole second T. The parent watches the database until every
probe has a result for slot T, then runs the same probes one after another through the same
code, each stored before the next starts, as the peer. Figures:

- ``all_done_s``: from T until the last result is stored;
- ``lateness_p50_s`` / ``lateness_p99_s``: each run's start minus T;
- ``duplicates``: runs beyond one for the same probe and slot (must be 0);
- ``speedup``: sequential time divided by ``all_done_s``.

Goal: all done ≤ 10 s, lateness p99 ≤ 2 s, 0 duplicates. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ is run as a script, so the repository root is not on sys.path by itself.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_DONE_S = 10.0
GOAL_P99_S = 2.0


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()


def child(n: int, concurrency: int, limit_s: float) -> int:
    """One dispatcher process: dispatch until all N have a result (or the time limit)."""
    _setup_django()
    from monitoring.models import ProbeResult
    from monitoring.probes.schedule import Dispatcher

    checked = [0.0, True]

    def keep_going() -> bool:
        if time.monotonic() - checked[0] >= 0.25:
            checked[0] = time.monotonic()
            checked[1] = ProbeResult.objects.count() < n
        return checked[1]

    cpu_before = time.process_time()
    stats = Dispatcher(concurrency=concurrency).run(
        deadline=time.monotonic() + limit_s, keep_going=keep_going
    )
    # Includes ticks spent waiting for T and the recorder's writer thread.
    cpu_s = time.process_time() - cpu_before
    print(json.dumps({"runs": stats.runs, "ok": stats.ok, "cpu_s": cpu_s}), flush=True)
    return 0


_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
    b"Connection: close\r\n\r\n" + b'{"status":"ok"}'
)


def serve(delay_ms: float) -> int:
    """The provider: answer every request after ``delay_ms``; prints its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay_ms / 1000)
            writer.write(_REPLY)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def sequential_seconds(probes: list) -> float:
    """The peer: the naive runner. Each probe is run and its result stored before the next,
    through the same code (runner, state machine, request log), in this process."""
    from monitoring.probes.run import ProbeSpec, allow_hosts, execute
    from monitoring.probes.schedule import HttpThread, record_runs

    http = HttpThread(verify=True, concurrency=1)
    allowed = allow_hosts()
    try:
        started = time.perf_counter()
        for probe in probes:
            spec = ProbeSpec.from_probe(probe)
            run = http.call(execute(spec, http.client, allowed=allowed))
            assert run.ok, run.message
            record_runs([(spec, run)])
        return time.perf_counter() - started
    finally:
        http.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="probes due in the same second")
    parser.add_argument("--concurrency", type=int, default=50, help="per dispatcher")
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument(
        "--server-ms", type=float, default=50, help="the provider's response time (ms)"
    )
    parser.add_argument("--sandbox", action="store_true", help="call the sandbox provider")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=60.0, help="give up after (seconds)")
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.concurrency, args.limit)
    if args.serve:
        return serve(args.server_ms)

    tmp = Path(tempfile.mkdtemp(prefix="upstream-bench-probes-"))
    if args.sandbox:
        from demo.sandbox import Sandbox, SandboxConfig

        sandbox = Sandbox(SandboxConfig(seed=1, latency_scale=0.0, error_rate=0.0, quota=10**9))
        base, stop_server = sandbox.start().url, sandbox.stop
        path = "/v1/health"
    else:
        provider = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--server-ms", str(args.server_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        base, stop_server = f"http://127.0.0.1:{provider.stdout.readline().strip()}", provider.kill
        path = "/health"
    host = base.removeprefix("http://")
    os.environ.update(
        {
            "SQLITE_PATH": str(tmp / "bench.sqlite3"),
            "UPSTREAM_VAR_DIR": str(tmp),
            "UPSTREAM_SPOOL_DIR": str(tmp / "spool"),
            "UPSTREAM_PROBE_ALLOW_HOSTS": host,
            "UPSTREAM_PROBE_CONCURRENCY": str(args.concurrency),
            "LOG_LEVEL": "WARNING",
        }
    )
    _setup_django()
    from django.core.management import call_command
    from django.utils import timezone

    from monitoring.models import Integration, Probe, ProbeResult

    call_command("migrate", verbosity=0)
    integration = Integration.objects.create(name="Bench", slug="bench", base_url=base)
    lead_s = 4  # time for the dispatchers to start before T
    due = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=lead_s + 1)
    url = base + path
    Probe.objects.bulk_create(
        Probe(
            integration=integration,
            name=f"bench {i}",
            url=url,
            interval_s=30,
            timeout_s=10,
            assertions={"status": "200"},
            next_run_at=due,
        )
        for i in range(args.n)
    )
    print(f"{args.n} probes due at {due:%H:%M:%S}; {args.dispatchers} dispatcher processes")

    argv = [sys.executable, __file__, "--child", "--n", str(args.n)]
    argv += ["--concurrency", str(args.concurrency), "--limit", str(args.limit)]
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(args.dispatchers)
    ]
    # Wall-clock wait until T, then watch the database until every probe has a result.
    time.sleep(max(0.0, (due - timezone.now()).total_seconds()))
    started = time.monotonic()
    deadline = started + args.limit
    stored = 0
    while time.monotonic() < deadline:
        stored = ProbeResult.objects.filter(scheduled_for=due).values("probe").distinct().count()
        if stored >= args.n:
            break
        time.sleep(0.1)
    all_done_s = time.monotonic() - started
    outputs = [c.communicate(timeout=args.limit)[0].strip().splitlines() for c in children]
    reports = [json.loads(out[-1]) if out else {"runs": 0, "cpu_s": 0.0} for out in outputs]
    per_child = [r["runs"] for r in reports]
    cpu_ms_per_run = 1000 * sum(r["cpu_s"] for r in reports) / max(1, sum(per_child))

    rows = list(ProbeResult.objects.filter(scheduled_for=due).values("probe_id", "created", "ok"))
    lateness = [max(0.0, (r["created"] - due).total_seconds()) for r in rows]
    duplicates = len(rows) - len({r["probe_id"] for r in rows})
    sequential_s = sequential_seconds(list(Probe.objects.all()))
    stop_server()

    figures = {
        "provider": "sandbox" if args.sandbox else f"minimal, {args.server_ms:g} ms",
        "probes": args.n,
        "dispatchers": args.dispatchers,
        "concurrency": args.concurrency,
        "completed": stored,
        "all_ok": all(r["ok"] for r in rows),
        "all_done_s": round(all_done_s, 3),
        "lateness_p50_s": round(percentile(lateness, 50), 3) if lateness else None,
        "lateness_p99_s": round(percentile(lateness, 99), 3) if lateness else None,
        "duplicates": duplicates,
        "runs_per_dispatcher": per_child,
        "dispatcher_cpu_ms_per_run": round(cpu_ms_per_run, 2),
        "sequential_s": round(sequential_s, 3),
        "speedup": round(sequential_s / all_done_s, 2),
    }
    print(
        f"all {stored}/{args.n} done and stored {all_done_s:.2f} s after T "
        f"(goal ≤ {GOAL_DONE_S:g} s); runs per dispatcher {per_child}"
    )
    print(
        f"lateness p50 {figures['lateness_p50_s']} s, p99 {figures['lateness_p99_s']} s "
        f"(goal ≤ {GOAL_P99_S:g} s); duplicate runs: {duplicates}"
    )
    print(
        f"the same {args.n} probes run and stored one after another: {sequential_s:.2f} s, "
        f"{figures['speedup']}x the dispatchers' time"
    )
    ok = (
        stored == args.n
        and duplicates == 0
        and all_done_s <= GOAL_DONE_S
        and (figures["lateness_p99_s"] or 0) <= GOAL_P99_S
    )
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
