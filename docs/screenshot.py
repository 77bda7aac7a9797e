"""Make docs/overview.png, the README's picture: the overview over the demo's seeded history.

A scratch database gets the demo (seven days of calls with a failed-auth spike two days ago,
the sandbox provider's probes, the default alert rules evaluated through the spike); a
loopback server on a free port serves it, and Debian's Chromium takes the picture.

    .venv/bin/python docs/screenshot.py [--range 7d] [--dark]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Threaded(WSGIServer):
    # Chromium opens several connections at once; answer them in turn without blocking.
    def process_request(self, request, client_address):
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


def build(now: dt.datetime) -> None:
    from django.core.management import call_command

    from demo import scenario
    from demo.sandbox import Sandbox
    from monitoring import recorder
    from monitoring.alerts import lifecycle
    from monitoring.models import Probe
    from monitoring.probes.schedule import run_now

    call_command("migrate", verbosity=0)
    lifecycle.ensure_default_rules()
    scenario.seed_history(days=7, now=now)
    # The failed-auth spike two days ago, as the evaluator saw it minute by minute.
    spike = (now - dt.timedelta(days=2)).replace(hour=13, minute=5, second=0, microsecond=0)
    for minutes in (10, 20, 180, 190):
        lifecycle.evaluate(now=spike + dt.timedelta(minutes=minutes))
    sandbox = Sandbox().start()
    try:
        from django.conf import settings

        host = sandbox.url.split("//")[1].rstrip("/")
        settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [host]}
        scenario.setup_demo_probes(sandbox.url)
        for _ in range(3):
            run_now(Probe.objects.filter(name="Health"))
        recorder.flush(timeout=30)
    finally:
        sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", default="7d", choices=["1h", "24h", "7d", "30d"])
    parser.add_argument("--dark", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "overview.png"))
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="upstream-shot-")
    os.environ["SQLITE_PATH"] = f"{scratch}/demo.sqlite3"
    os.environ["UPSTREAM_SPOOL_DIR"] = f"{scratch}/spool"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ["DEBUG"] = "1"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.wsgi import get_wsgi_application
    from django.test import Client
    from django.utils import timezone

    from monitoring.roles import Role
    from tests.browser.conftest import LAUNCH_ARGS, chromium_path

    build(timezone.now())
    user = get_user_model().objects.create_user("demo")
    user.groups.add(Group.objects.get(name=Role.ADMIN))
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value

    server = make_server("127.0.0.1", 0, get_wsgi_application(), _Threaded, _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 640},
            color_scheme="dark" if args.dark else "light",
            device_scale_factor=1,
        )
        context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/?range={args.range}")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=args.out, full_page=True)  # just the content, no empty band
        browser.close()
    server.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
