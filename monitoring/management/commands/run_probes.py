"""Run probes by hand: everything due now (--once), a standalone dispatcher (--loop), or some."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from monitoring.models import Probe
from monitoring.probes.schedule import Dispatcher, run_now


class Command(BaseCommand):
    help = (
        "Run probes: --once runs every probe that is due and exits; --loop dispatches until "
        "SIGTERM/Ctrl-C (a dedicated dispatcher process); --probe ID runs those probes now."
    )

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--once", action="store_true", help="Run everything due now, then exit")
        mode.add_argument("--loop", action="store_true", help="Dispatch until stopped")
        mode.add_argument(
            "--probe", type=int, action="append", metavar="ID", help="Run this probe now"
        )

    def handle(self, *args, once: bool, loop: bool, probe: list[int] | None, **options):
        if probe:
            self._run_some(probe)
            return
        stop = threading.Event()
        if loop:
            # Finish the runs in hand and save them, then exit.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            self.stdout.write("Dispatching probes; Ctrl-C or SIGTERM stops after the runs in hand.")
        stats = Dispatcher().run(once=once, stop=stop)
        self.stdout.write(f"Probes: {stats}.")

    def _run_some(self, ids: list[int]) -> None:
        probes = list(Probe.objects.filter(pk__in=ids).select_related("integration"))
        missing = sorted(set(ids) - {p.pk for p in probes})
        if missing:
            raise CommandError(f"No probe with id {', '.join(map(str, missing))}.")
        results, busy = run_now(probes)
        by_pk = {p.pk: p for p in probes}
        for result in results:
            verdict = "ok" if result.ok else f"FAILED ({result.reason})"
            self.stdout.write(f"{by_pk[result.probe_id]}: {verdict} — {result.message}")
        for p in busy:
            self.stdout.write(f"{p}: already running elsewhere; skipped.")
