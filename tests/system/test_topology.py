"""Past one machine: two gunicorn web servers and two django-q2 clusters on PostgreSQL + Redis.

The processes are real (``gunicorn dashboard.wsgi``, ``manage.py qcluster``) and share the
test database and one Redis database (REDIS_URL's, default db 7, flushed before and after).
Checked together, as they run in production:

* ingest through both web servers at once: every event stored once, and the buckets count
  exactly the rows (concurrent writers, one rollup each);
* four probe dispatchers started at once on both clusters: every probe run recorded, and no
  probe slot run twice;
* the alert schedule claimed by one of the two clusters' schedulers: one evaluation, one
  alert for the failing integration;
* a web worker killed (SIGKILL) in the middle of writing a batch: the SDK's shipper resends
  it under the same batch id to the worker gunicorn starts in its place, and every event
  is stored, and counted in the buckets, exactly once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from django_q.models import Schedule, Task

from api.models import ApiKey, IngestBatch
from monitoring.models import Alert, Integration, MetricBucket, Probe, ProbeResult, RequestLog

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the multi-process topology runs on PostgreSQL + Redis (CI's PostgreSQL pass)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TOPOLOGY_REDIS_URL", "redis://127.0.0.1:6379/7")
WEB_BATCHES = 12  # per web server
EVENTS_PER_BATCH = 50
PROBES = 3
PROBE_INTERVAL_S = 4
DISPATCHERS = 4
DISPATCH_S = 20  # each loop; the last one started runs it all (the others hand over)
EVALUATE = "monitoring.tasks.evaluate_alerts"
DISPATCH = "monitoring.tasks.dispatch_probes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProbeTarget(http.server.ThreadingHTTPServer):
    """Answers every probe 200 and notes when each path was hit."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = defaultdict(list)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path].append(time.time())  # wall clock, as slots are
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def database_url() -> str:
    s = connection.settings_dict
    user = s["USER"] or ""
    password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()  # only this test's database number
    except redis.ConnectionError as exc:  # pragma: no cover - CI runs Redis
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()


class Topology:
    """The processes of one deployment; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, tmp: Path, probe_hosts: str) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": "topology-" + "k" * 50,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Plain HTTP on loopback: no TLS proxy in front here.
            "SECURE_SSL_REDIRECT": "0",
            "ALERT_EMAILS_ENABLED": "0",
            "LOG_LEVEL": "WARNING",
            "Q_WORKERS": "2",
            # Short task timeout: the dispatcher's loop length follows it.
            "Q_TIMEOUT": "30",
            "Q_RETRY": "45",
            "UPSTREAM_PROBE_ALLOW_HOSTS": probe_hosts,
        }
        self.env.pop("PG_TEST_NAME", None)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.web: list[str] = []

    def start(self, name: str, args: list[str], **env: str) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))

    def start_all(self) -> None:
        self.start_web(2)
        self.start_clusters(2)

    def start_clusters(self, clusters: int) -> None:
        for n in range(clusters):
            self.start(
                f"cluster{n}",
                [sys.executable, "manage.py", "qcluster"],
                UPSTREAM_SPOOL_DIR=str(self.tmp / f"spool-cluster{n}"),
            )

    def start_web(self, servers: int) -> None:
        for n in range(servers):
            port = free_port()
            self.start(
                f"web{n}",
                [sys.executable, "-m", "gunicorn", "dashboard.wsgi:application",
                 "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "30",
                 "--no-control-socket"],
                UPSTREAM_SPOOL_DIR=str(self.tmp / f"spool-web{n}"),
            )  # fmt: skip
            self.web.append(f"http://127.0.0.1:{port}")

    def wait_for_web(self, deadline: float) -> None:
        for url in self.web:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/v1/openapi.json", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"{url} did not come up\n{self.logs()}"
                time.sleep(0.2)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"

    def logs(self) -> str:
        out = []
        for name, _ in self.procs:
            text = (self.tmp / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name}\n{text[-3000:]}")
        return "\n".join(out)

    def manage(self, code: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        for _, proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def events(slug: str, n: int, seed: int) -> list[dict]:
    now = timezone.now()
    return [
        {
            "integration": slug,
            "environment": "production",
            "time": (now - dt.timedelta(seconds=i % 50)).isoformat(),
            "method": "POST",
            "url": f"https://api.topology.test/v1/charges/ch_{seed}_{i}",
            # Half fail: the default error-rate rule must fire for this integration.
            "status": 503 if i % 2 else 200,
            "latency_ms": 20.0 + (seed * 7 + i) % 300,
        }
        for i in range(n)
    ]


def ingest(url: str, key: str, slug: str, worker: int, sent: list[int], errors: list) -> None:
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for k in range(WEB_BATCHES):
                batch = events(slug, EVENTS_PER_BATCH, seed=worker * 1000 + k)
                response = client.post(
                    "/api/v1/events",
                    json={"batch_id": f"w{worker}-{k}", "events": batch},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 202, response.text
                assert response.json()["accepted"] == len(batch), response.text
                sent[worker] += len(batch)
    except Exception as exc:  # reported by the test thread
        errors.append(exc)


@pytest.mark.django_db(transaction=True)
def test_two_web_servers_and_two_clusters_share_one_database_without_duplicates(tmp_path):
    flush_redis()
    target = ProbeTarget()
    threading.Thread(target=target.serve_forever, daemon=True).start()
    integration = Integration.objects.create(name="Charges", slug="charges")
    _, key = ApiKey.issue(name="topology", scopes=["ingest"])
    # First slot a little ahead, when the dispatchers are up: a slot then runs at or after
    # its time and before the next one, so its runs fall into one interval-long bucket.
    first_slot = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=10)
    probes = [
        Probe.objects.create(
            integration=integration,
            name=f"ping {n}",
            url=f"http://{target.hostport}/ping/{n}",
            interval_s=PROBE_INTERVAL_S,  # below the form's minimum: a test of timing only
            timeout_s=3,
            next_run_at=first_slot,
        )
        for n in range(PROBES)
    ]
    # The schedules as every deployment has them (their first run is due at once), and the
    # default rules, among them the error-rate rule the failing ingest must trip.
    call_command("setup_upstream", stdout=open(os.devnull, "w"))  # noqa: SIM115
    # Dispatching is exercised by the dispatchers started below; the scheduled one would
    # only keep a worker looping past the end of the test.
    Schedule.objects.filter(func=DISPATCH).update(next_run=timezone.now() + dt.timedelta(hours=1))
    topology = Topology(tmp_path, target.hostport)
    try:
        topology.start_all()
        topology.wait_for_web(time.monotonic() + 30)

        # Several dispatchers at once, spread over both clusters' workers.
        topology.manage(
            "from django_q.tasks import async_task\n"
            f"for _ in range({DISPATCHERS}): async_task({DISPATCH!r}, {DISPATCH_S})"
        )
        sent, errors = [0, 0], []
        writers = [
            threading.Thread(target=ingest, args=(url, key, "charges", n, sent, errors))
            for n, url in enumerate(topology.web)
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=60)
        assert errors == [], errors

        # django-q2's scheduler first looks ~30 s after a cluster starts; both clusters look
        # then, and one of them claims each due schedule.
        deadline = time.monotonic() + 75

        def done() -> bool:
            return (
                Task.objects.filter(func=EVALUATE).exists()
                and Task.objects.filter(func=DISPATCH).count() >= DISPATCHERS
            )

        while not done():
            topology.check_alive()
            assert time.monotonic() < deadline, f"tasks did not finish\n{topology.logs()}"
            time.sleep(0.5)
        # The scheduled dispatcher (started with the evaluation) may still be looping.
        time.sleep(1)
    finally:
        topology.stop()
        target.shutdown()
        flush_redis()

    # Ingest: rows = sent, and the buckets count each row once at every grain.
    total = sum(sent)
    assert total == 2 * WEB_BATCHES * EVENTS_PER_BATCH
    assert RequestLog.objects.filter(integration=integration, source="ingest").count() == total
    ingest_buckets = MetricBucket.objects.filter(
        integration=integration, source="ingest", endpoint=""
    )
    for grain in ("minute", "15m", "hour", "day"):
        counted = ingest_buckets.filter(grain=grain).aggregate(n=Sum("total"))["n"]
        assert counted == total, grain

    # Probes: every run recorded once, and no slot run twice. A run starts at or after its
    # slot; a late one moves the next claim to the first slot still ahead, so two runs in
    # one interval-long bucket after the first slot mean one slot ran twice.
    runs = 0
    for n, probe in enumerate(probes):
        hits = target.hits[f"/ping/{n}"]
        assert hits, f"probe {n} never ran\n{topology.logs()}"
        slots = [int((hit - first_slot.timestamp()) // PROBE_INTERVAL_S) for hit in hits]
        assert min(slots) >= 0 and len(set(slots)) == len(slots), slots
        assert ProbeResult.objects.filter(probe=probe).count() == len(hits)
        runs += len(hits)
    assert runs >= PROBES * 2
    dispatchers = Task.objects.filter(func=DISPATCH)
    assert all(task.success for task in dispatchers), [t.result for t in dispatchers]

    # Alerts: the every-minute schedule ran once (one of two schedulers claimed it), and the
    # failing integration has exactly one open error-rate alert.
    evaluations = list(Task.objects.filter(func=EVALUATE))
    assert len(evaluations) == 1, [t.result for t in evaluations]
    assert evaluations[0].success, evaluations[0].result
    alerts = Alert.objects.filter(integration=integration, rule__kind="error_rate")
    assert alerts.count() == 1


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a gunicorn arbiter's workers; a qcluster's sentinel and
    its workers, monitor and pusher)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    kids = [int(k) for k in (task / "children").read_text().split()]
                    found += kids
                    stack += kids
    return found


def process_of_client_port(parent: int, port: int, *, remote: bool = False) -> int:
    """The process below `parent` whose TCP socket has local port `port` (with `remote`,
    the one whose socket is connected to a peer at port `port`)."""
    column = 2 if remote else 1
    owners = {}
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[column].rsplit(":", 1)[1], 16) == port:
                owners[fields[9]] = port
    for child in descendants(parent):
        with contextlib.suppress(OSError):
            if _socket_inodes(child) & owners.keys():
                return child
    side = "remote" if remote else "local"
    raise AssertionError(f"no process below {parent} holds {side} port {port}")


def session_blocked_by(cursor, holder: int, deadline: float) -> tuple[int, int]:
    """(backend pid, client port) of the session that waits for a lock `holder` holds."""
    while time.monotonic() < deadline:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT pid, client_port FROM pg_stat_activity "
            "WHERE %s = ANY(pg_blocking_pids(pid)) AND datname = current_database()",
            [holder],
        )
        found = cursor.fetchone()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no session started waiting for backend {holder}")


@pytest.mark.django_db(transaction=True)
def test_a_web_worker_killed_mid_batch_loses_nothing(tmp_path):
    import psycopg
    from upstream_client.ship import Shipper

    integration = Integration.objects.create(name="Kills", slug="kills")
    _, key = ApiKey.issue(name="topology-kill", scopes=["ingest"])
    # One moment for every event: each batch lands in the same buckets at every grain.
    when = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=5)

    def submit(shipper: Shipper, seed: int) -> None:
        for i in range(EVENTS_PER_BATCH):
            shipper.submit(
                {
                    "integration": "kills",
                    "environment": "production",
                    "time": when.isoformat(),
                    "method": "GET",
                    "url": f"https://api.topology.test/v1/kills/k_{seed}_{i}",
                    "status": 200,
                    "latency_ms": 10.0 + i,
                }
            )

    flush_redis()
    topology = Topology(tmp_path, "")
    holder = psycopg.connect(database_url(), autocommit=True)
    watcher = psycopg.connect(database_url(), autocommit=True)
    shipper = None
    try:
        topology.start_web(1)
        topology.wait_for_web(time.monotonic() + 30)
        shipper = Shipper(
            url=topology.web[0],
            api_key=key,
            spool_dir=tmp_path / "sdk-spool",
            batch_size=EVENTS_PER_BATCH,
            flush_interval=0.05,
            max_backoff=1.0,
        )
        submit(shipper, 0)
        assert shipper.flush(timeout=30), shipper.stats()
        assert RequestLog.objects.filter(integration=integration).count() == EVENTS_PER_BATCH

        # Hold the buckets the next batch must update: its worker copies the rows, then
        # waits inside its transaction, and is killed right there (the API's lock wait
        # is 2 s; the kill comes within milliseconds of the wait starting).
        with holder.transaction():
            holder.execute(
                "SELECT id FROM monitoring_metricbucket WHERE integration_id = %s FOR UPDATE",
                [integration.pk],
            )
            submit(shipper, 1)
            with watcher.cursor() as cursor:
                backend, port = session_blocked_by(
                    cursor, holder.info.backend_pid, time.monotonic() + 15
                )
            arbiter = topology.procs[0][1].pid
            worker = process_of_client_port(arbiter, port)
            os.kill(worker, signal.SIGKILL)
            # Nothing of the batch is committed while its worker is gone mid-transaction.
            assert RequestLog.objects.filter(integration=integration).count() == EVENTS_PER_BATCH
        # The buckets are free again: the dead worker's session, unable to answer, rolls
        # back; the shipper resends the batch to the worker gunicorn starts instead.
        assert shipper.flush(timeout=45), f"{shipper.stats()}\n{topology.logs()}"
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, 0)
            pytest.fail(f"worker {worker} survived SIGKILL")
        topology.check_alive()  # the arbiter lives on
    finally:
        holder.close()
        watcher.close()
        if shipper is not None:
            shipper.close(timeout=5)
        topology.stop()
        flush_redis()

    total = 2 * EVENTS_PER_BATCH
    assert shipper.counts["sent_events"] == total, shipper.counts
    assert shipper.counts["dropped_events"] == 0, shipper.counts
    assert RequestLog.objects.filter(integration=integration).count() == total
    # Every event once: each has its own path.
    paths = RequestLog.objects.filter(integration=integration).values("path").distinct()
    assert paths.count() == total
    assert IngestBatch.objects.filter(key__name="topology-kill").count() == 2
    buckets = MetricBucket.objects.filter(integration=integration, source="ingest", endpoint="")
    for grain in ("minute", "15m", "hour", "day"):
        assert buckets.filter(grain=grain).aggregate(n=Sum("total"))["n"] == total, grain
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend])
        assert cursor.fetchone()[0] == 0  # the killed worker's session is gone too


def wait_until(topology: Topology, ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        topology.check_alive()
        assert time.monotonic() < deadline, f"waited in vain for {what}\n{topology.logs()}"
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_a_cluster_worker_killed_while_saving_probe_runs_loses_nothing(tmp_path):
    import psycopg

    flush_redis()
    target = ProbeTarget()
    threading.Thread(target=target.serve_forever, daemon=True).start()
    integration = Integration.objects.create(name="Probed", slug="probed")
    probe = Probe.objects.create(
        integration=integration,
        name="ping",
        url=f"http://{target.hostport}/ping",
        interval_s=2,  # below the form's minimum: a test of timing only
        timeout_s=2,
        next_run_at=timezone.now(),
    )
    results = ProbeResult.objects.filter(probe=probe)
    rows = RequestLog.objects.filter(integration=integration, source="probe")
    topology = Topology(tmp_path, target.hostport)
    holder = psycopg.connect(database_url(), autocommit=True)
    watcher = psycopg.connect(database_url(), autocommit=True)
    enqueue = "from django_q.tasks import async_task\nasync_task({!r}, {})"
    try:
        topology.start_clusters(1)  # two workers: one is killed, one lives on
        topology.manage(enqueue.format(DISPATCH, 60))
        wait_until(topology, rows.exists, 45, f"the first probe run to be stored\n{results}")

        # Hold the integration every write of a probe run's request-log rows must share
        # (storage.insert_rows): the next run's writer waits inside its transaction, and
        # the worker it runs in is killed right there.
        with holder.transaction():
            holder.execute(
                "SELECT id FROM monitoring_integration WHERE id = %s FOR UPDATE", [integration.pk]
            )
            with watcher.cursor() as cursor:
                backend, port = session_blocked_by(
                    cursor, holder.info.backend_pid, time.monotonic() + 15
                )
            worker = process_of_client_port(topology.procs[0][1].pid, port)
            os.kill(worker, signal.SIGKILL)
            killed_at = timezone.now()
        # The killed dispatcher's task went with it (the Redis broker hands a task out once);
        # the next one, on the surviving worker or the one the cluster starts instead, must
        # find the probe free once the dead run's claim lapses, and run it again.
        topology.manage(enqueue.format(DISPATCH, 20))
        wait_until(
            topology,
            lambda: Task.objects.filter(func=DISPATCH).exists(),
            60,
            "the next dispatcher to finish",
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, 0)
            pytest.fail(f"worker {worker} survived SIGKILL")
    finally:
        holder.close()
        watcher.close()
        topology.stop()  # the recorder flushes at exit
        target.shutdown()
        flush_redis()

    dispatchers = list(Task.objects.filter(func=DISPATCH))
    assert all(task.success for task in dispatchers), [t.result for t in dispatchers]
    # Not stuck: the probe ran again after the kill.
    assert results.filter(created__gt=killed_at).exists(), list(results.values("created"))
    # Nothing half written: every stored run has its request-log row, and the buckets count
    # exactly those rows; no slot ran twice.
    assert rows.count() == results.count(), (rows.count(), results.count())
    slots = list(results.values_list("scheduled_for", flat=True))
    assert len(set(slots)) == len(slots), slots
    buckets = MetricBucket.objects.filter(integration=integration, source="probe", endpoint="")
    for grain in ("minute", "15m", "hour", "day"):
        assert buckets.filter(grain=grain).aggregate(n=Sum("total"))["n"] == rows.count(), grain
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend])
        assert cursor.fetchone()[0] == 0  # the killed worker's session is gone too
