"""Run the web server and a django-q2 worker together; Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand

from demo import webhooks as demo_webhooks
from demo.scenario import (
    OUTAGE_WINDOW,
    SANDBOX_TLS_URL,
    SANDBOX_URL,
    demo_ca_file,
    export_demo_secrets,
)

# Extra processes for `--demo`, each an argv after `python`. Later parts of the product
# (sandbox provider, traffic generator, probe dispatcher) add themselves here.
DEMO_PROCESSES: dict[str, list[str]] = {}
# The fake provider, and live traffic to it through MonitoredClient (waits for the sandbox).
# The sandbox's outage window is the demo timeline's (demo.scenario.OUTAGE_WINDOW). It
# serves TLS too, with a CA made at start-up whose certificate the traffic trusts.
DEMO_PROCESSES["sandbox"] = [
    "-m", "demo.sandbox", "--port", str(urlsplit(SANDBOX_URL).port),
    "--tls-port", str(urlsplit(SANDBOX_TLS_URL).port), "--ca-file", str(demo_ca_file()),
    "--outage", ":".join(f"{x:g}" for x in OUTAGE_WINDOW),
]  # fmt: skip
DEMO_PROCESSES["traffic"] = [
    "manage.py", "demo_traffic", "--sandbox-url", SANDBOX_URL,
    "--tls-url", SANDBOX_TLS_URL, "--ca-file", str(demo_ca_file()),
]  # fmt: skip
# The sandbox's signed webhooks to the demo's /hooks/<token>/ endpoints (UPSTREAM_DEMO_URL).
DEMO_PROCESSES["webhooks"] = ["-m", "demo.sandbox.webhooks"]

# One process (the recorder and the sign-in throttle stay in one place), threads for the
# dashboard's polling; the admin's "run now" may wait on probes for a while.
WEB_OPTIONS = ["--workers", "1", "--threads", "8", "--timeout", "120"]


class Command(BaseCommand):
    help = "Start the web server and a background worker together; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--demo", action="store_true", help="Also run the demo's helpers")

    def handle(self, *args, addr: str, demo: bool, **options):
        python = sys.executable
        manage = [python, "manage.py"]
        processes = {
            # gunicorn, not runserver: the dev server cannot read chunked request bodies,
            # which some OTLP exporters send (static files come from whitenoise).
            "web": [python, "-m", "gunicorn", "dashboard.wsgi", "--bind", addr, *WEB_OPTIONS],
            "worker": [*manage, "qcluster"],
        }
        if demo:
            processes.update({name: [python, *argv] for name, argv in DEMO_PROCESSES.items()})
            # The demo probes call the sandbox on loopback, which the SSRF guard refuses
            # unless allowlisted; the children inherit this.
            allow = [h for h in os.environ.get("UPSTREAM_PROBE_ALLOW_HOSTS", "").split(",") if h]
            if "127.0.0.1:8765" not in allow:
                os.environ["UPSTREAM_PROBE_ALLOW_HOSTS"] = ",".join([*allow, "127.0.0.1:8765"])
            # The presets' probes read the sandbox's demo logins (Paubox, OpenPanel) from here.
            export_demo_secrets()
            # The web process verifies the sandbox's webhooks with the demo secret.
            demo_webhooks.ensure_secret_in_environment()
            os.environ.setdefault("UPSTREAM_DEMO_URL", f"http://{addr}")

        children: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, argv in processes.items():
                # Own process group each: Ctrl-C reaches only us, and we stop them in order.
                children[name] = subprocess.Popen(argv, start_new_session=True)
                self.stdout.write(f"started {name} (pid {children[name].pid})")
            self.stdout.write(f"Upstream is running on http://{addr}/ — Ctrl-C stops everything.")
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with {child.returncode}; stopping.")
                        stopping = True
                        break
                time.sleep(0.3)
        finally:
            self._stop_all(children)

    def _stop_all(self, children: dict[str, subprocess.Popen]) -> None:
        for child in children.values():
            if child.poll() is None:
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        # django-q2's worker processes share its group; make sure none outlive us.
        for child in children.values():
            _signal_group(child, signal.SIGKILL)
        self.stdout.write("Stopped.")


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)
