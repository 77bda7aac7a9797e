"""How a recording process ends: normal exit, SIGTERM and kill -9 while the database is locked."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from monitoring import attempts, recorder
from monitoring.models import Integration, RequestLog
from monitoring.recorder import Recorder, RecorderConfig

ROOT = Path(__file__).resolve().parents[2]
RATE = 200  # calls per second, as in the finding
LOCKED_S = 2.5  # how long the child records against a locked database before it is stopped
DEPLOYED_BUSY_MS = 5000  # RecorderConfig's default: the kill lands in the writer's first wait
SHORT_BUSY_MS = 1000  # the writer gives up on the lock and is in an outage when killed

# The child records calls at RATE/s and prints how many it has recorded after each one, so
# the last line it printed says what it had recorded when it was stopped.
CHILD = """
import sys, time
import django; django.setup()
from monitoring import attempts, recorder
pk, rate, busy_ms = (int(arg) for arg in sys.argv[1:])
recorder.configure(busy_timeout_ms=busy_ms)

def call(n, path="/v1/kill"):
    recorder.record_attempt(
        integration_id=pk, method="GET", host="api.paybox.test", path=path, status=200,
        latency_ms=float(n),
    )

call(-1, "/v1/warm")
recorder.flush(timeout=30)  # a long-running writer already has its connection
print("ready", flush=True)
sys.stdin.readline()  # the database is locked now
start = time.monotonic()
n = 0
while True:
    call(n)
    n += 1
    print(n, flush=True)
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
"""


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def integration(transactional_db):
    attempts.clear_policies()
    return Integration.objects.create(name="Paybox", slug="paybox", environment="production")


def child_env(spool: Path, **extra: str) -> dict[str, str]:
    """Environment for a child process on this test's database and spool."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        database = {"SQLITE_PATH": str(db["NAME"])}
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        port = f":{db['PORT']}" if db["PORT"] else ""
        host = db["HOST"] or "localhost"
        database = {"DATABASE_URL": f"postgres://{auth}@{host}{port}/{db['NAME']}"}
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        **database,
        "UPSTREAM_SPOOL_DIR": str(spool),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def record_until_stopped(
    integration, spool, locked_database, stop: signal.Signals, busy_ms: int
) -> int:
    """Run the child against a locked database, stop it with ``stop``; calls it recorded."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(integration.pk), str(RATE), str(busy_ms)],
        env=child_env(spool),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"ready\n", child.stderr.read().decode()
        with locked_database:
            child.stdin.write(b"go\n")
            child.stdin.flush()
            time.sleep(LOCKED_S)
            child.send_signal(stop)
            child.wait(timeout=20)  # SIGTERM: the writer may be waiting out the busy timeout
            out = child.stdout.read().split()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -stop, child.stderr.read().decode()
    recorded = int(out[-1])
    assert recorded >= RATE * LOCKED_S * 0.8  # it kept recording at about the rate
    return recorded


def replayed_rows(spool: Path) -> list[float]:
    """What a fresh recorder finds in the database after replaying the spool."""
    fresh = Recorder(RecorderConfig(spool_dir=spool, flush_interval_s=0.02))
    try:
        fresh.flush(timeout=30)
    finally:
        fresh.stop(timeout=10)
    return list(RequestLog.objects.filter(path="/v1/kill").values_list("latency_ms", flat=True))


@pytest.mark.parametrize("busy_ms", [DEPLOYED_BUSY_MS, SHORT_BUSY_MS])
def test_kill_9_while_the_database_is_locked_loses_at_most_a_second_of_calls(
    integration, spool, locked_database, busy_ms
):
    recorded = record_until_stopped(integration, spool, locked_database, signal.SIGKILL, busy_ms)
    rows = replayed_rows(spool)
    assert len(rows) == len(set(rows))  # nothing replayed twice
    assert set(rows) <= {float(n) for n in range(recorded + 1)}
    assert recorded - len(rows) <= RATE  # one second's worth, at most
    assert list(spool.glob("*.jsonl")) == []


def test_sigterm_while_the_database_is_locked_loses_nothing(integration, spool, locked_database):
    # With the deployed busy timeout the writer still holds a batch in its database call:
    # the handler waits for the call to give up and the batch to reach the spool.
    recorded = record_until_stopped(
        integration, spool, locked_database, signal.SIGTERM, DEPLOYED_BUSY_MS
    )
    rows = replayed_rows(spool)
    # The last call may have been recorded just before the count was printed.
    assert sorted(rows)[:recorded] == [float(n) for n in range(recorded)]
    assert len(rows) in (recorded, recorded + 1)
    assert list(spool.glob("*.jsonl")) == []


def test_rows_still_queued_at_interpreter_exit_are_written(integration, spool):
    script = (
        "import django; django.setup()\n"
        "from monitoring import recorder\n"
        f"for n in range(50): recorder.record_attempt(integration_id={integration.pk}, "
        "method='GET', host='h', path='/v1/exit', status=200, latency_ms=1.0)\n"
    )
    env = child_env(
        spool,
        UPSTREAM_RECORDER_FLUSH_INTERVAL_MS="60000",  # only the exit flush can write them
        UPSTREAM_RECORDER_BATCH_SIZE="1000",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert RequestLog.objects.filter(path="/v1/exit").count() == 50
    assert list(spool.glob("*.jsonl")) == []


def _record_in_a_worker(pk: int) -> None:
    """A multiprocessing child, as django-q2's workers are: it ends with os._exit."""
    for n in range(5):
        recorder.record_attempt(
            integration_id=pk,
            method="GET",
            host="h",
            path="/v1/worker",
            status=200,
            latency_ms=float(n),
        )
    # Its parent ends it with SIGTERM when a task overruns; that must stay an instant kill.
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        sys.exit(3)


def test_a_multiprocessing_child_writes_its_queue_when_it_returns(integration, spool):
    recorder.configure(spool_dir=spool, flush_interval_s=30)  # only the exit flush writes
    try:
        worker = multiprocessing.get_context("fork").Process(
            target=_record_in_a_worker, args=(integration.pk,)
        )
        worker.start()
        worker.join(timeout=60)
        assert worker.exitcode == 0
    finally:
        recorder.configure()
    assert RequestLog.objects.filter(path="/v1/worker").count() == 5


@pytest.fixture
def sigterm():
    """The SIGTERM disposition before the test, restored after it."""
    saved = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, saved)


def test_the_handler_is_installed_from_the_main_thread_over_the_default(sigterm):
    done = []
    worker = threading.Thread(target=lambda: done.append(recorder._install_sigterm_handler()))
    worker.start()
    worker.join()
    assert done == [False] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert recorder._install_sigterm_handler() is True
    assert signal.getsignal(signal.SIGTERM) is recorder._on_sigterm


@pytest.mark.parametrize("own", [signal.SIG_IGN, lambda signum, frame: None])
def test_a_process_that_handles_sigterm_itself_keeps_its_handler(sigterm, own):
    # gunicorn's workers, qcluster's main process and our own commands set a handler and
    # leave through normal interpreter exit, where the atexit flush runs.
    signal.signal(signal.SIGTERM, own)
    assert recorder._install_sigterm_handler() is False
    assert signal.getsignal(signal.SIGTERM) is own
