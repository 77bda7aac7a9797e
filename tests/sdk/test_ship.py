"""The shipper against a loopback ingest server: batches, backoff, spool, replay, drops, fork."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from upstream_client import sink
from upstream_client.ship import Shipper, retry_after_s

KEY = "up_Test1234_s3cr3t-never-in-a-file-or-log"
ROOT = Path(__file__).resolve().parents[2]


def event(n: int, **extra) -> dict:
    return {
        "integration": "stripe",
        "environment": "production",
        "time": "2026-12-01T10:00:00Z",
        "method": "GET",
        "url": f"https://api.stripe.com/v1/charges/ch_{n:08d}",
        "status": 200,
        "latency_ms": 12.5,
        "call_id": f"c{n}",
        "attempt": 1,
        **extra,
    }


class Ingest:
    """A loopback stand-in for Upstream's POST /api/v1/events: gunzips, dedupes batch ids
    per key like the real one, and answers what the test scripts (``answers``)."""

    def __init__(self, port: int = 0) -> None:
        self.batches: list[dict] = []  # every request received, in order
        self.requests: list[dict] = []  # headers and time of each
        self.stored: dict[str, dict] = {}
        self.answers: list[tuple[int, dict]] = []  # scripted (status, headers), then 202
        self.max_events: int | None = None  # more → 413
        self.delay = 0.0  # seconds each request takes (a busy Upstream)
        self.active = self.peak = 0  # requests being served now, and the most at once
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as behind any real server

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                owner.connections.append(self.connection)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") else raw
                payload = json.loads(body)
                with owner.lock:
                    owner.active += 1
                    owner.peak = max(owner.peak, owner.active)
                try:
                    time.sleep(owner.delay)
                    self._serve(payload)
                finally:
                    with owner.lock:
                        owner.active -= 1

            def _serve(self, payload):
                with owner.lock:
                    owner.batches.append(payload)
                    owner.requests.append({"headers": dict(self.headers), "at": time.monotonic()})
                    scripted = owner.answers.pop(0) if owner.answers else None
                if scripted is not None:
                    status, headers = scripted
                    return self._answer(status, {"title": "scripted"}, headers)
                if owner.max_events is not None and len(payload["events"]) > owner.max_events:
                    return self._answer(413, {"title": "too many"})
                with owner.lock:
                    duplicate = payload["batch_id"] in owner.stored
                    if not duplicate:
                        owner.stored[payload["batch_id"]] = payload
                accepted = len(payload["events"])
                self._answer(
                    202,
                    {"accepted": accepted, "rejected": 0, "duplicate": duplicate, "errors": []},
                )

            def _answer(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: connections are refused, as from a stopped Upstream."""
        self.server.shutdown()
        self.server.server_close()
        for connection in self.connections:  # kept-alive ones too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def events(self) -> list[dict]:
        """Events stored once per batch id (what Upstream's rows would be)."""
        return [e for p in self.stored.values() for e in p["events"]]


@pytest.fixture
def ingest():
    server = Ingest()
    yield server
    server.stop()


@pytest.fixture
def make(tmp_path):
    made = []

    def make(url: str, **options) -> Shipper:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("max_backoff", 0.2)
        options.setdefault("flush_interval", 0.05)
        shipper = Shipper(url, KEY, **options)
        made.append(shipper)
        return shipper

    yield make
    for shipper in made:
        shipper.close(timeout=1)


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("client-*/*.batch"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_it_ships_gzip_json_batches_with_the_bearer_key(ingest, make):
    shipper = make(ingest.url)
    for n in range(3):
        shipper.submit(event(n))
    assert shipper.flush(timeout=10)
    assert [e["call_id"] for e in ingest.events()] == ["c0", "c1", "c2"]
    headers = ingest.requests[0]["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert len(ingest.batches[0]["batch_id"]) == 32
    assert "dropped" not in ingest.batches[0]
    assert shipper.stats()["sent_events"] == 3


def test_construction_and_submit_touch_neither_disk_nor_network(tmp_path):
    spool = tmp_path / "not-yet"
    shipper = Shipper(f"http://127.0.0.1:{free_port()}", KEY, spool_dir=spool)
    assert shipper._thread is None and shipper._client is None
    assert not spool.exists()
    shipper.submit(event(1))  # only queues and starts the sender thread
    assert shipper._thread is not None
    shipper.close(timeout=0.5)


def test_without_url_and_key_it_discards_quietly(monkeypatch, caplog):
    monkeypatch.delenv("UPSTREAM_URL", raising=False)
    monkeypatch.delenv("UPSTREAM_API_KEY", raising=False)
    shipper = Shipper()
    with caplog.at_level(logging.WARNING, "upstream_client"):
        shipper.submit(event(1))
        shipper.submit(event(2))
    assert not shipper.enabled and shipper._thread is None
    assert len(caplog.records) == 1
    assert shipper.flush(timeout=1)


def test_large_queues_go_in_batches_of_at_most_batch_size_and_bytes(ingest, make):
    shipper = make(ingest.url, batch_size=100, max_batch_bytes=20_000)
    for n in range(450):
        shipper.submit(event(n, error_body="x" * 100))
    assert shipper.flush(timeout=10)
    assert sorted(e["call_id"] for e in ingest.events()) == sorted(f"c{n}" for n in range(450))
    for payload in ingest.batches:
        assert len(payload["events"]) <= 100
        assert len(json.dumps(payload, separators=(",", ":"))) <= 20_000


def test_a_413_splits_the_batch_and_keeps_every_event(ingest, make):
    ingest.max_events = 30
    shipper = make(ingest.url, batch_size=1000)
    for n in range(100):
        shipper.submit(event(n))
    assert shipper.flush(timeout=10)
    assert len(ingest.events()) == 100
    assert all(len(p["events"]) <= 30 for p in ingest.stored.values())


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_new_batches_go_max_in_flight_at_a_time_each_stored_once(ingest, make, lanes):
    ingest.delay = 0.1
    shipper = make(ingest.url, batch_size=10, max_in_flight=lanes, flush_interval=30)
    for n in range(60):
        shipper.submit(event(n))
    assert shipper.flush(timeout=20)
    assert ingest.peak == lanes
    assert sorted(e["call_id"] for e in ingest.events()) == sorted(f"c{n}" for n in range(60))
    assert len(ingest.batches) == 6 == shipper.stats()["sent_batches"]
    assert shipper.stats()["sent_events"] == 60


def test_a_batch_failing_beside_one_in_flight_is_resent_and_nothing_is_lost(ingest, make):
    ingest.delay = 0.05
    ingest.answers = [(503, {})]  # the first request fails, the one beside it succeeds
    shipper = make(ingest.url, batch_size=10, max_in_flight=2, flush_interval=30)
    for n in range(40):
        shipper.submit(event(n))
    assert shipper.flush(timeout=20)
    assert sorted(e["call_id"] for e in ingest.events()) == sorted(f"c{n}" for n in range(40))
    assert len(ingest.batches) == 5  # four batches, one of them twice under the same id
    assert len({p["batch_id"] for p in ingest.batches}) == 4


def test_a_spooled_batch_older_than_the_spool_lifetime_is_dropped_and_counted(
    tmp_path, ingest, make
):
    from upstream_client.ship import MAX_SPOOL_AGE_S

    old = make(ingest.url)
    old._open_spool()
    week_ago = time.time() - MAX_SPOOL_AGE_S - 60
    for n, made in ((0, week_ago), (1, time.time() - 60)):
        for batch in old._build([event(n)], 0):
            old._to_spool(batch._replace(made=made))
    assert len(spool_files(tmp_path)) == 2
    live = make(ingest.url)
    live.submit(event(2))
    assert live.flush(timeout=10)
    # Upstream forgets batch ids after a while: one this old is never resent.
    assert sorted(e["call_id"] for e in ingest.events()) == ["c1", "c2"]
    assert spool_files(tmp_path) == []
    assert live.flush(timeout=10)
    assert sum(p.get("dropped", 0) for p in ingest.stored.values()) == 1


def test_unreachable_upstream_spools_then_replays_in_order_exactly_once(tmp_path, make):
    port = free_port()
    shipper = make(f"http://127.0.0.1:{port}", max_backoff=0.1)
    for n in range(5):
        shipper.submit(event(n))
        assert not shipper.flush(timeout=0.3)  # refused: each cycle's batch goes to the spool
    files = spool_files(tmp_path)
    assert len(files) == 5
    assert shipper.stats()["spooled_batches"] == 5

    ingest = Ingest(port)  # Upstream is back
    try:
        shipper.submit(event(5))
        assert shipper.flush(timeout=10)
        assert [e["call_id"] for e in ingest.events()] == [f"c{n}" for n in range(6)]
        assert [p["batch_id"] for p in ingest.batches] == [
            f.name.split("-", 1)[1].removesuffix(".batch") for f in files
        ] + [ingest.batches[-1]["batch_id"]]
        assert spool_files(tmp_path) == []
        # The sixth queued up behind the spool, to keep the order.
        assert shipper.stats()["replayed_batches"] == 6
    finally:
        ingest.stop()


def test_a_lost_answer_resends_the_same_batch_id_and_is_stored_once(ingest, make):
    # A 503 after the server stored the batch stands for a reply lost on the way back.
    ingest.answers = [(503, {})]
    shipper = make(ingest.url)
    shipper.submit(event(1))
    assert shipper.flush(timeout=10)
    # The scripted 503 did not store it; the resend carried the same id.
    assert len({p["batch_id"] for p in ingest.batches}) == 1
    assert len(ingest.batches) == 2
    assert len(ingest.events()) == 1


def test_it_honours_retry_after_on_429(ingest, make):
    ingest.answers = [(429, {"Retry-After": "2"})]
    shipper = make(ingest.url, max_backoff=0.05)
    shipper.submit(event(1))
    assert shipper.flush(timeout=10)
    first, second = ingest.requests
    assert second["at"] - first["at"] >= 1.9  # not before Upstream allowed it
    assert ingest.batches[0]["batch_id"] == ingest.batches[1]["batch_id"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("0", 0.0), ("-4", 0.0), ("99999", 600.0), ("soon", None), (None, None)],
)
def test_retry_after_values(value, seconds):
    assert retry_after_s(value) == seconds


def test_retry_after_as_an_http_date():
    from email.utils import formatdate

    assert 8 <= retry_after_s(formatdate(time.time() + 10, usegmt=True)) <= 10


def test_a_refused_batch_is_dropped_and_its_count_reported_with_the_next(ingest, make):
    ingest.answers = [(400, {})]
    shipper = make(ingest.url)
    shipper.submit(event(1))
    shipper.submit(event(2))
    assert shipper.flush(timeout=10)  # only done once the count has been reported
    shipper.submit(event(3))
    assert shipper.flush(timeout=10)
    assert [e["call_id"] for e in ingest.events()] == ["c3"]
    assert [p.get("dropped") for p in ingest.batches] == [None, 2, None]


class _Unbuildable:
    """A capture record whose event cannot be built; its error names a secret."""

    def event(self):
        raise ValueError(f"https://api.stripe.com/v1/charges?key={KEY}")


def test_a_record_that_cannot_be_built_is_counted_dropped_and_not_logged(ingest, make, caplog):
    shipper = make(ingest.url)
    caplog.set_level(logging.DEBUG)
    shipper.submit(event(1))
    shipper.submit(_Unbuildable())
    assert shipper.flush(timeout=10)
    shipper.submit(event(2))
    assert shipper.flush(timeout=10)
    assert [e["call_id"] for e in ingest.events()] == ["c1", "c2"]
    assert sum(p.get("dropped", 0) for p in ingest.batches) == 1
    assert shipper.stats()["dropped_events"] == 1
    assert "ValueError" in caplog.text and KEY not in caplog.text


def test_a_full_queue_drops_and_reports_the_count(ingest, make):
    shipper = make(ingest.url, max_queue=5, flush_interval=30, batch_size=1000)
    for n in range(12):
        shipper.submit(event(n))
    assert shipper.stats()["dropped_events"] == 7
    assert shipper.flush(timeout=10)
    assert len(ingest.events()) == 5
    assert ingest.batches[0]["dropped"] == 7
    assert shipper.stats()["reported_dropped"] == 7


def test_a_full_spool_drops_only_what_does_not_fit_and_says_so(tmp_path, make):
    port = free_port()
    shipper = make(f"http://127.0.0.1:{port}", max_spool_bytes=700, max_backoff=0.05, batch_size=1)
    for n in range(20):
        shipper.submit(event(n))
    assert not shipper.flush(timeout=0.5)
    spooled = [
        e
        for f in spool_files(tmp_path)
        for e in json.loads(gzip.decompress(f.read_bytes()))["events"]
    ]
    dropped = shipper.stats()["dropped_events"]
    assert spooled and dropped and len(spooled) + dropped == 20
    ingest = Ingest(port)
    try:
        assert shipper.flush(timeout=10)
        assert len(ingest.events()) == len(spooled)
        # The count rides on a batch of its own (no event was left to carry it).
        assert sum(p.get("dropped", 0) for p in ingest.stored.values()) == dropped
    finally:
        ingest.stop()


def test_a_dead_processes_spool_is_replayed_by_the_next_with_the_same_key(tmp_path, ingest, make):
    # A spool as a process that reported to this URL with this key would have left it.
    dead = make(ingest.url)
    dead._open_spool()
    for n in range(3):
        for batch in dead._build([event(n)], 0):
            dead._to_spool(batch)
    assert len(spool_files(tmp_path)) == 3
    ids = [f.name.split("-", 1)[1].removesuffix(".batch") for f in spool_files(tmp_path)]
    ingest.stored[ids[0]] = {"events": [event(0)]}  # the first had reached Upstream already
    # Another key never replays it (it would report the batches under the wrong key).
    other = Shipper(ingest.url, KEY + "x", spool_dir=tmp_path / "spool", flush_interval=0.05)
    other.submit(event(8))
    assert other.flush(timeout=10)
    other.close()
    assert len(spool_files(tmp_path)) == 3
    live = make(ingest.url)
    live.submit(event(9))
    assert live.flush(timeout=10)
    assert [e["call_id"] for e in ingest.events()] == ["c0", "c8", "c1", "c2", "c9"]
    assert [p["batch_id"] for p in ingest.batches][1:4] == ids
    assert spool_files(tmp_path) == []


def test_no_credential_in_the_spool_or_the_logs(tmp_path, make, caplog):
    with caplog.at_level(logging.DEBUG, "upstream_client"):
        shipper = make(f"http://127.0.0.1:{free_port()}")
        shipper.submit(event(1))
        shipper.flush(timeout=0.3)
    files = list((tmp_path / "spool").rglob("*"))
    assert files
    secret = KEY.split("_", 2)[2]
    for path in files:
        assert secret not in path.name
        if path.is_file():
            assert secret.encode() not in gzip.decompress(path.read_bytes())
    assert caplog.records
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_a_forked_child_gets_its_own_queue_and_sender(ingest, make):
    shipper = make(ingest.url, flush_interval=30, batch_size=1000)
    shipper.submit(event(1))  # queued in the parent, not yet sent
    pid = os.fork()
    if pid == 0:  # the child: a fresh queue and thread, its own batch ids
        ok = not shipper._queue and shipper._thread is None
        shipper.submit(event(2))
        ok = ok and shipper.flush(timeout=10)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shipper.flush(timeout=10)
    assert sorted(e["call_id"] for e in ingest.events()) == ["c1", "c2"]
    assert len(ingest.stored) == 2


def _run_script(code: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_normal_exit_flushes_what_is_queued(ingest, tmp_path):
    done = _run_script(
        """
        from upstream_client import sink
        s = sink.default()
        for n in range(250):
            s.submit({"integration": "stripe", "method": "GET", "status": 200,
                      "url": "https://api.stripe.com/v1/x", "latency_ms": 1, "call_id": str(n)})
        """,
        {"UPSTREAM_URL": ingest.url, "UPSTREAM_API_KEY": KEY, "UPSTREAM_SPOOL_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert len(ingest.events()) == 250


def test_an_exit_while_upstream_is_down_leaves_the_batch_in_the_spool(tmp_path):
    done = _run_script(
        """
        from upstream_client.ship import Shipper
        s = Shipper(exit_timeout=1)
        s.submit({"integration": "stripe", "method": "GET", "status": 200,
                  "url": "https://api.stripe.com/v1/x", "latency_ms": 1})
        """,
        {
            "UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
            "UPSTREAM_API_KEY": KEY,
            "UPSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
        },
    )
    assert done.returncode == 0, done.stderr
    assert len(spool_files(tmp_path)) == 1
    assert KEY not in done.stderr


def test_sink_default_is_one_lazy_shipper_and_set_default_replaces_it(monkeypatch, ingest):
    monkeypatch.setenv("UPSTREAM_URL", ingest.url)
    monkeypatch.setenv("UPSTREAM_API_KEY", KEY)
    previous = sink._default
    try:
        sink.set_default(None)
        first = sink.default()
        assert isinstance(first, Shipper) and first is sink.default()
        assert first.url == ingest.url and first._thread is None

        class Collect:
            def __init__(self):
                self.events = []

            def submit(self, event):
                self.events.append(event)

        mine = Collect()
        sink.set_default(mine)
        assert sink.default() is mine
        assert isinstance(mine, sink.Sink)
        first.close(timeout=0.5)
    finally:
        sink.set_default(previous)
