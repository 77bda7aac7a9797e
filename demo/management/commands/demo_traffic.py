"""Call the sandbox provider through MonitoredClient at a gentle rate until SIGTERM/Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from demo import scenario
from monitoring import recorder


class Command(BaseCommand):
    help = "Demo traffic: call the sandbox through the instrumented client until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--sandbox-url", default=scenario.SANDBOX_URL)
        parser.add_argument("--rate", type=float, default=3.0, help="average calls per second")
        parser.add_argument(
            "--duration", type=float, default=0, help="stop after this many seconds (0: never)"
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            help="give up if the sandbox has not answered "
            "after this many seconds (0: wait for ever)",
        )

    def handle(self, *args, sandbox_url: str, rate: float, duration: float, wait: float, **opts):
        if not sandbox_url.startswith(("http://", "https://")):
            raise CommandError("--sandbox-url must be an http:// or https:// URL")
        if not 0 < rate <= 50:
            raise CommandError("--rate must be between 0 and 50 calls per second")
        if duration < 0 or wait < 0:
            raise CommandError("--duration and --wait must not be negative")
        # httpx logs every request at INFO: a few lines a second would drown `make run`'s output.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        stop = threading.Event()
        # The handlers only set the event: the call in hand finishes and is recorded.
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._run(sandbox_url, rate, duration, wait, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, sandbox_url: str, rate: float, duration: float, wait: float, stop) -> None:
        if duration:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True
            timer.start()
        if not scenario.wait_for_sandbox(sandbox_url, stop, timeout=wait or None):
            if stop.is_set():
                return
            raise CommandError(f"the sandbox at {sandbox_url} did not answer within {wait:g} s")
        self.stdout.write(f"Demo traffic to {sandbox_url}, about {rate:g} calls/s.")
        calls = scenario.run_traffic(sandbox_url, rate=rate, stop=stop)
        try:
            recorder.flush(timeout=10)
        except TimeoutError:
            self.stderr.write("Some rows are still queued; they are spilled to disk at exit.")
        self.stdout.write(f"Demo traffic stopped after {calls} calls.")
