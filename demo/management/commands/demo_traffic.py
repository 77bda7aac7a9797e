"""Call the sandbox provider through MonitoredClient at a gentle rate until SIGTERM/Ctrl-C."""

from __future__ import annotations

import logging
import signal
import ssl
import threading

from django.core.management.base import BaseCommand, CommandError

from demo import scenario
from demo.sandbox import tls
from monitoring import recorder


class Command(BaseCommand):
    help = "Demo traffic: call the sandbox through the instrumented client until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--sandbox-url", default=scenario.SANDBOX_URL)
        parser.add_argument(
            "--tls-url",
            default=scenario.SANDBOX_TLS_URL,
            help='the sandbox\'s TLS port, where most integrations call ("" for none)',
        )
        parser.add_argument(
            "--ca-file",
            default=None,
            help="the sandbox's CA certificate (default: var/demo-sandbox-ca.pem)",
        )
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
        self.tls_url = opts["tls_url"] or None
        self.ca_file = opts["ca_file"] or str(scenario.demo_ca_file())
        if self.tls_url and not self.tls_url.startswith("https://"):
            raise CommandError("--tls-url must be an https:// URL (or empty for none)")
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
        verify = None
        if self.tls_url:
            # Read once the sandbox answers: it writes its new CA before it listens.
            try:
                verify = tls.client_context(self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CommandError(
                    f"cannot read the sandbox's CA certificate {self.ca_file} ({exc}); start "
                    "the sandbox with --tls-port and --ca-file, or pass --tls-url ''"
                ) from None
        shown = f" and {self.tls_url}" if self.tls_url else ""
        self.stdout.write(f"Demo traffic to {sandbox_url}{shown}, about {rate:g} calls/s.")
        calls = scenario.run_traffic(
            sandbox_url, tls_url=self.tls_url, verify=verify, rate=rate, stop=stop
        )
        try:
            recorder.flush(timeout=10)
        except TimeoutError:
            self.stderr.write("Some rows are still queued; they are spilled to disk at exit.")
        self.stdout.write(f"Demo traffic stopped after {calls} calls.")
