"""upstream-client installed on its own, shipping to a live Upstream: rows, outages, kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from api.models import ApiKey, IngestBatch
from monitoring.models import RecorderLoss, RequestLog, Source

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv holding only upstream-client and what it requires."""
    base = tmp_path_factory.mktemp("client-venv")
    source = base / "src"
    # A copy, so that the build leaves nothing in the checkout others are working in.
    shutil.copytree(
        ROOT / "sdk" / "python",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), str(source)],
        check=True,
        timeout=600,
    )  # fmt: skip
    return python


@pytest.fixture
def ingest_key(db) -> str:
    _, key = ApiKey.issue(name="billing", scopes=["ingest"], allow_create=True)
    return key


class Proxy:
    """Stands in front of the live Upstream on a fixed port: ``down()`` refuses connections
    like a stopped server; ``kill_after_store(pid)`` forwards the next request, lets
    Upstream store it, then kills the sender with SIGKILL before it hears the answer."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.kill_pid: int | None = None
        self.killed = threading.Event()
        self.forwarded = 0
        self.connections: list[socket.socket] = []
        self.http = httpx.Client(base_url=target, timeout=30)
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                proxy.connections.append(self.connection)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                skip = {"host", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = proxy.http.post(self.path, content=body, headers=headers)
                proxy.forwarded += 1
                if proxy.kill_pid is not None:
                    os.kill(proxy.kill_pid, signal.SIGKILL)
                    proxy.kill_pid = None
                    proxy.killed.set()
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.connections.clear()

    def close(self) -> None:
        self.down()
        self.http.close()


@pytest.fixture
def proxy(live_server):
    found = Proxy(live_server.url)
    yield found
    found.close()


def _script(code: str, events: bool = False) -> list[str]:
    return ["-c", (EVENT if events else "") + textwrap.dedent(code)]


EVENT = """
from datetime import datetime, timezone

def event(n):
    return {"integration": "stripe", "environment": "production", "method": "GET",
            "time": datetime.now(timezone.utc).isoformat(),
            "url": f"https://api.stripe.com/v1/charges/ch_{n}", "status": 200,
            "latency_ms": 3.5, "call_id": f"call{n:06d}", "attempt": 1}
"""


def _env(url: str, key: str, spool: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "UPSTREAM"))}
    return {**env, "UPSTREAM_URL": url, "UPSTREAM_API_KEY": key, "UPSTREAM_SPOOL_DIR": str(spool)}


def test_a_fresh_virtualenv_without_django_ships_captured_calls(
    client_venv, live_server, ingest_key, tmp_path
):
    code = """
    import json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Provider(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_GET(self):
            body = b'{"id": "ch_1", "object": "charge"}'
            status = 402 if self.path.endswith("declined") else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    import upstream_client
    from upstream_client import sink
    with upstream_client.Client(integration="stripe", base_url=base) as client:
        statuses = [client.get(f"/v1/charges/ch_{n}").status_code for n in range(20)]
        statuses.append(client.get("/v1/charges/declined").status_code)
    shipper = sink.default()
    print(json.dumps({"flushed": shipper.flush(30), "statuses": statuses,
                      "django": "django" in sys.modules, "stats": shipper.stats()}))
    """
    done = subprocess.run(
        [client_venv, *_script(code)],
        env=_env(live_server.url, ingest_key, tmp_path / "spool"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["flushed"] and not result["django"]
    assert result["statuses"] == [200] * 20 + [402]
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([client_venv, "-c", "import django"], check=True, capture_output=True)
    rows = RequestLog.objects.filter(integration__slug="stripe")
    assert rows.count() == 21
    assert set(rows.values_list("source", flat=True)) == {Source.INGEST}
    assert rows.filter(status=402).count() == 1
    assert rows.values("integration__environment").distinct().count() == 1
    assert rows.first().integration.environment == "production"
    assert ingest_key.split("_", 2)[2] not in done.stderr + done.stdout


def test_upstream_down_for_30_seconds_then_back_loses_nothing(proxy, ingest_key, tmp_path):
    # The sender keeps calling (50 events a second) through a 30 s outage.
    code = """
    import json, sys, time
    from upstream_client import sink
    from upstream_client.ship import Shipper
    shipper = Shipper(max_backoff=2)
    sink.set_default(shipper)
    n = 0
    for line in sys.stdin:  # the test says when to stop
        if line.strip() == "stop":
            break
        for _ in range(int(line)):
            sink.default().submit(event(n))
            n += 1
            time.sleep(0.02)
    print(json.dumps({"sent": n, "flushed": shipper.flush(120), "stats": shipper.stats()}))
    """
    sender = subprocess.Popen(
        [sys.executable, *_script(code, events=True)],
        env=_env(proxy.url, ingest_key, tmp_path / "spool"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sender.stdin.write("100\n")  # ~2 s with Upstream up
        sender.stdin.flush()
        time.sleep(2.5)
        proxy.down()
        sender.stdin.write("1500\n")  # ~30 s of calls while it is down
        sender.stdin.flush()
        time.sleep(30)
        proxy.up()
        sender.stdin.write("100\nstop\n")
        sender.stdin.flush()
        out, err = sender.communicate(timeout=180)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["flushed"] and result["sent"] == 1700
    assert result["stats"]["spooled_batches"] > 10
    assert result["stats"]["dropped_events"] == 0
    calls = list(RequestLog.objects.values_list("call_id", flat=True))
    assert len(calls) == 1700
    assert sorted(calls) == [f"call{n:06d}" for n in range(1700)]
    assert not list((tmp_path / "spool").rglob("*.batch"))


def test_kill_9_mid_batch_replays_the_spool_exactly_once(proxy, ingest_key, tmp_path):
    env = _env(proxy.url, ingest_key, tmp_path / "spool")
    proxy.down()
    code = """
    import sys, time
    from upstream_client import sink
    from upstream_client.ship import Shipper
    shipper = Shipper(max_backoff=0.5)
    for batch in range(5):
        for n in range(batch * 100, batch * 100 + 100):
            shipper.submit(event(n))
        shipper.flush(1)  # refused: the batch goes to the spool
    print("spooled", shipper.stats()["spool_files"], flush=True)
    time.sleep(300)  # retrying in the background until killed
    """
    sender = subprocess.Popen(
        [sys.executable, *_script(code, events=True)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout.readline().split() == ["spooled", "5"]
        proxy.kill_pid = sender.pid
        proxy.up()  # the next replay reaches Upstream; its answer never comes back
        assert proxy.killed.wait(60)
        assert sender.wait(30) == -signal.SIGKILL
    finally:
        if sender.poll() is None:
            sender.kill()
    assert RequestLog.objects.count() == 100  # Upstream stored the batch in flight
    assert len(list((tmp_path / "spool").rglob("*.batch"))) == 5  # and the sender kept it

    code = """
    import json
    from upstream_client import sink
    shipper = sink.default()
    print(json.dumps({"flushed": shipper.flush(60), "stats": shipper.stats()}))
    """
    done = subprocess.run(
        [sys.executable, *_script(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["flushed"]
    assert result["stats"]["replayed_batches"] == 5
    assert result["stats"]["duplicate_batches"] == 1
    calls = list(RequestLog.objects.values_list("call_id", flat=True))
    assert sorted(calls) == [f"call{n:06d}" for n in range(500)]
    assert IngestBatch.objects.count() == 5
    assert not list((tmp_path / "spool").rglob("*.batch"))


def test_drops_reach_upstream_as_a_recorder_loss_naming_the_key(live_server, tmp_path):
    key_row, key = ApiKey.issue(name="billing", scopes=["ingest"], allow_create=True)
    code = """
    from upstream_client.ship import Shipper
    shipper = Shipper(max_queue=10, flush_interval=30)
    for n in range(25):
        shipper.submit(event(n))
    assert shipper.flush(30)
    assert shipper.flush(30)  # nothing more: the count is reported once
    """
    done = subprocess.run(
        [sys.executable, *_script(code, events=True)],
        env=_env(live_server.url, key, tmp_path / "spool"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert RequestLog.objects.count() == 10
    loss = RecorderLoss.objects.get()
    assert loss.rows == 15
    assert key_row.prefix in loss.reason and "billing" in loss.reason
    assert key.split("_", 2)[2] not in loss.reason


def test_the_ingest_api_records_a_drop_count_once_and_refuses_a_bad_one(client):
    _, key = ApiKey.issue(name="web", scopes=["ingest"])

    def post(body: dict):
        return client.post(
            "/api/v1/events",
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )

    for _ in range(2):  # a resend of the same batch id
        assert post({"batch_id": "b-1", "events": [], "dropped": 7}).status_code == 202
    assert RecorderLoss.objects.get().rows == 7
    for bad in (-1, "7", True, 1.5):
        answer = post({"batch_id": "b-2", "events": [], "dropped": bad})
        assert answer.status_code == 400
        assert answer["Content-Type"] == "application/problem+json"
    assert RecorderLoss.objects.count() == 1
