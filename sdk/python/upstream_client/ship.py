"""Ships captured events to Upstream: a bounded queue, a sender thread, a disk spool, replay.

The caller's thread only appends an event dict to a deque (``Shipper.submit``). A daemon
thread drains it every ``flush_interval`` seconds (sooner when a batch is full) into gzip
JSON batches for ``POST {url}/api/v1/events``, each with a random ``batch_id`` that it
keeps for life: Upstream stores a batch id once per API key, so a batch sent twice (a
lost answer, a replay after ``kill -9``) is stored exactly once. New batches go out
``max_in_flight`` at a time (lane threads post them while the sender encodes the next),
so Upstream's workers store them in parallel; two sent together may be stored in either
order, and one that fails queues behind the rest as below.

When Upstream cannot be reached (or answers 5xx, 429 or 401/403) the sender backs off
(exponentially, or as long as ``Retry-After`` says) and writes batches, byte for byte as
they would be sent, to a spool directory (fsynced, bounded by ``max_spool_bytes``); once
Upstream answers again the spool is replayed oldest first, before anything newer. Several
processes may share a spool directory: a file is sent by whoever holds its lock, and a
dead process's files are replayed by the next one to start with the same URL and key.

Events are dropped only when the memory queue is full (the sender cannot keep up) or the
spool is full (or unusable); the count travels as ``dropped`` with the next batch and
Upstream records it as a recorder-loss row naming the API key.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import hashlib
import json
import logging
import os
import queue
import random
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a shared spool may then send a batch
    fcntl = None  # twice, which Upstream's batch-id check still stores once.

logger = logging.getLogger("upstream_client")

EVENTS_PATH = "/api/v1/events"
SPOOL_SUFFIX = ".batch"
# A temp file this old is the remains of a process killed while writing it.
STALE_TEMP_S = 3600.0
# A batch is resent for at most this long (then dropped and counted): Upstream remembers
# batch ids a day longer (api.models.BATCH_ID_RETAIN_DAYS), so every resend is recognised.
MAX_SPOOL_AGE_S = 7 * 24 * 3600.0
# Longest wait honoured from a Retry-After header.
MAX_RETRY_AFTER_S = 600.0
# A key Upstream refuses is retried this rarely (an operator may still fix its scopes).
AUTH_BACKOFF_S = 60.0

_OK, _RETRY, _DROP, _SPLIT = "ok", "retry", "drop", "split"


class Batch(NamedTuple):
    """One request body as sent and as spooled: gzip JSON ``{batch_id, events, dropped}``."""

    batch_id: str
    body: bytes
    events: int
    dropped: int
    path: Path | None = None  # the spool file it was read from
    made: float = 0.0  # time.time() when it was built (0: unknown)


class Posted(NamedTuple):
    """What one POST gave: the response, or why there was none; the CPU it took."""

    response: httpx.Response | None
    error: str
    cpu_s: float


def encode_json(batch_id: str, events: list[dict[str, Any]], dropped: int = 0) -> bytes:
    """The JSON of one batch, before compression."""
    payload: dict[str, Any] = {"batch_id": batch_id, "events": events}
    if dropped:
        payload["dropped"] = dropped
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def encode(batch_id: str, events: list[dict[str, Any]], dropped: int = 0) -> bytes:
    """The gzip JSON body of one batch."""
    # Level 1: JSON events compress ~8× at a fraction of level 6's CPU.
    return gzip.compress(encode_json(batch_id, events, dropped), compresslevel=1)


def decode(body: bytes) -> dict[str, Any]:
    return json.loads(gzip.decompress(body))


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _default_spool_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "upstream-client"


class Shipper:
    """The default sink: ships events to Upstream in the background.

    ``url`` and ``api_key`` default to ``UPSTREAM_URL`` and ``UPSTREAM_API_KEY``; without
    both the shipper is disabled and ``submit`` discards events (with one warning).
    ``spool_dir`` defaults to ``UPSTREAM_SPOOL_DIR``, else ``~/.cache/upstream-client``;
    the spool lives in a subdirectory named by a hash of the URL and key, so processes
    reporting with different keys never replay each other's batches.

    Construction does no I/O; the sender thread starts on the first ``submit``.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        spool_dir: str | os.PathLike | None = None,
        max_queue: int = 100_000,
        batch_size: int = 1000,
        max_batch_bytes: int = 900_000,
        flush_interval: float = 0.5,
        max_spool_bytes: int = 64 * 1024 * 1024,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        exit_timeout: float = 5.0,
        max_in_flight: int = 2,
    ) -> None:
        url = url if url is not None else os.environ.get("UPSTREAM_URL", "")
        self.url = url.strip().rstrip("/")
        self._key = api_key if api_key is not None else os.environ.get("UPSTREAM_API_KEY", "")
        self._key = self._key.strip()
        self.enabled = bool(self.url and self._key)
        spool_dir = spool_dir if spool_dir is not None else os.environ.get("UPSTREAM_SPOOL_DIR")
        self._spool_root = Path(spool_dir) if spool_dir else None
        self.max_queue = max_queue
        self.batch_size = max(1, min(batch_size, 1000))
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.max_spool_bytes = max_spool_bytes
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.exit_timeout = exit_timeout
        # Two by default: with one request at a time, all but one of Upstream's workers
        # sat idle while the sender waited (bench/client_overhead.py measures both).
        self.max_in_flight = max(1, max_in_flight)
        self._warned_disabled = False
        self._fresh_state()
        _live.add(self)
        ref = weakref.ref(self)
        self._atexit = lambda: _close_ref(ref)
        atexit.register(self._atexit)

    def __repr__(self) -> str:
        return f"<Shipper {self.url or '(disabled)'}>"

    def _fresh_state(self) -> None:
        """Everything a forked child must not share with its parent."""
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()  # guards _dropped and the thread start
        self._cond = threading.Condition(threading.Lock())  # flush requests and answers
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._lanes: _Lanes | None = None  # started by the sender thread when first needed
        self._dropped = 0  # not yet reported to Upstream
        self._held: deque[Batch] = deque()  # failed batches kept in memory (no spool)
        self._closing = False
        self._closed = False
        self._deadline: float | None = None  # when closing: by then, spool instead of send
        self._cycles_started = 0
        self._cycles_done = 0
        self._idle = True  # after the last cycle: nothing in memory or spool
        self._next_send = 0.0  # monotonic time before which nothing is sent
        self._failures = 0
        self._spool: Path | None = None
        self._spool_ready = False
        self._spool_bytes = 0
        self._spool_files = 0
        self.sender_cpu_s = 0.0  # CPU time of the sender thread (encoding, HTTP, spool)
        self.counts = {
            "built_batches": 0,
            "sent_events": 0,
            "sent_batches": 0,
            "duplicate_batches": 0,
            "rejected_events": 0,
            "spooled_batches": 0,
            "replayed_batches": 0,
            "dropped_events": 0,
            "reported_dropped": 0,
        }

    # -- the caller's side -----------------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event. Never blocks and never raises."""
        queue = self._queue
        if len(queue) >= self.max_queue or not self.enabled or self._closed:
            self._refuse()
            return
        queue.append(event)
        if self._thread is None:
            self._start()
        if len(queue) >= self.batch_size:
            self._wake.set()

    #: Capture hands over its records (``upstream_client._capture.Meter``) as they are: the
    #: sender thread builds and redacts each one's event (``_drain``) before encoding it.
    submit_record = submit

    def _refuse(self) -> None:
        if not self.enabled:
            if not self._warned_disabled:
                self._warned_disabled = True
                logger.warning(
                    "upstream-client: UPSTREAM_URL and UPSTREAM_API_KEY are not both set; "
                    "captured calls are discarded"
                )
            return
        self._count_drop(1)

    def _count_drop(self, n: int) -> None:
        with self._lock:
            self._dropped += n
            self.counts["dropped_events"] += n

    def _take_dropped(self) -> int:
        with self._lock:
            n, self._dropped = self._dropped, 0
        return n

    def _start(self) -> bool:
        with self._lock:
            if self._thread is not None:
                return True
            thread = threading.Thread(target=self._run, name="upstream-client-shipper", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down
                return False
            self._thread = thread
            return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Send (or spool) everything queued so far and replay the spool; wait at most
        ``timeout`` seconds. True when nothing is left in memory or in the spool."""
        if not self.enabled or not self._start():
            return not self._queue
        deadline = time.monotonic() + timeout
        with self._cond:
            # The first cycle that starts after now sees everything submitted so far.
            target = self._cycles_started + 1
            self._wake.set()
            while True:
                while self._cycles_done < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                if self._idle and not self._queue:
                    return True
                # Something failed and waits for its backoff: wait for the next cycle.
                target = self._cycles_done + 1

    def close(self, timeout: float | None = None) -> None:
        """Stop: send what can be sent within ``timeout`` (default ``exit_timeout``), spool
        the rest for the next process. Called at exit."""
        if self._closed:
            return
        self._closed = True
        timeout = self.exit_timeout if timeout is None else timeout
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit)
        thread = self._thread
        if thread is None:
            if not self._queue and not self._dropped:
                return
            # Events but no thread (interpreter shutting down): spool them from here.
            self._spool_rest()
            return
        self._deadline = time.monotonic() + timeout
        self._closing = True
        self._wake.set()
        thread.join(timeout + 1.0)
        if thread.is_alive():
            # Stuck in a send: what it had not taken yet goes to disk from here.
            self._spool_rest()

    def stats(self) -> dict[str, Any]:
        """Counters since start (or fork), plus what is waiting."""
        return {
            **self.counts,
            "sender_cpu_s": round(self.sender_cpu_s, 6),
            "queued": len(self._queue),
            "held_batches": len(self._held),
            "spool_files": self._spool_files,
        }

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            blocked = self._next_send - time.monotonic()
            wait = self.flush_interval if blocked <= 0 else min(self.flush_interval, blocked)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
            closing = self._closing
            with self._cond:
                self._cycles_started += 1
                cycle = self._cycles_started
            cpu = time.thread_time()
            try:
                self._cycle(final=closing)
            except Exception:  # a bug here must not silence the process's reporting
                logger.exception("upstream-client: sender failed; retrying")
                self._backoff()
            self.sender_cpu_s += time.thread_time() - cpu
            with self._cond:
                self._cycles_done = cycle
                self._cond.notify_all()
            if closing:
                if self._lanes is not None:
                    self._lanes.stop()
                client = self._client
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                return

    def _cycle(self, final: bool) -> None:
        self._open_spool()
        deadline = self._deadline if final else None
        dropped = self._take_dropped()
        self._deliver_all(self._drain(dropped), deadline)
        self._replay(deadline)
        if final:
            while self._held:  # the process is ending: memory is no longer a place to wait
                self._to_spool(self._held.popleft())
        self._idle = not (self._queue or self._held or self._spool_files or self._dropped)

    def _drain(self, dropped: int) -> Iterator[Batch]:
        """Batches of what is queued now (what arrives meanwhile waits for the next cycle:
        a fast producer cannot keep one cycle going for ever)."""
        queue = self._queue
        left = len(queue)
        while left or dropped:
            take = min(left, self.batch_size)
            events = _events([queue.popleft() for _ in range(take)])
            if len(events) < take:
                self._count_drop(take - len(events))  # reported with the next batch
            left -= take
            yield from self._build(events, dropped)
            dropped = 0

    def _build(self, events: list[dict[str, Any]], dropped: int, batch_id: str = "") -> list[Batch]:
        batch_id = batch_id or uuid.uuid4().hex
        data = encode_json(batch_id, events, dropped)
        # Upstream caps the body once decompressed.
        if len(events) > 1 and len(data) > self.max_batch_bytes:
            half = len(events) // 2
            return self._build(events[:half], dropped, f"{batch_id}.1") + self._build(
                events[half:], 0, f"{batch_id}.2"
            )
        self.counts["built_batches"] += 1
        body = gzip.compress(data, compresslevel=1)
        return [Batch(batch_id, body, len(events), dropped, None, time.time())]

    def _blocked(self) -> bool:
        return time.monotonic() < self._next_send

    def _must_wait(self, deadline: float | None) -> bool:
        """Whether a new batch queues behind older ones (or a backoff) instead of going."""
        return bool(self._spool_files or self._held or self._blocked() or _expired(deadline))

    def _deliver_all(self, batches: Iterable[Batch], deadline: float | None) -> None:
        """Send new batches ``max_in_flight`` at a time, in order, on the lanes; the
        sender encodes the next batch meanwhile. Each answer is judged here, oldest first."""
        in_flight: deque[tuple[Batch, Future]] = deque()
        try:
            # The first batch is taken before any lane starts: what it holds is what was
            # queued when the cycle began, however long starting them takes.
            for batch in batches:
                lanes = self._lanes_or_none()
                if lanes is None:
                    self._deliver(batch, deadline)
                    continue
                while len(in_flight) >= lanes.size:
                    self._settle(*in_flight.popleft(), deadline)
                if self._must_wait(deadline):
                    self._park(batch)
                else:
                    in_flight.append((batch, lanes.submit(batch, deadline)))
        finally:
            while in_flight:
                self._settle(*in_flight.popleft(), deadline)

    def _settle(self, batch: Batch, future: Future, deadline: float | None) -> None:
        posted = future.result()
        self.sender_cpu_s += posted.cpu_s  # the lane's share of the sender's work
        result = self._judge(batch, posted)
        if result == _RETRY:
            self._park(batch)
        elif result == _SPLIT:
            for part in self._split(batch):
                self._deliver(part, deadline)

    def _lanes_or_none(self) -> _Lanes | None:
        if self._lanes is None and self.max_in_flight > 1:
            self._http()  # one client for every lane, made before they start
            lanes = _Lanes(self._post, self.max_in_flight)
            if not lanes.size:  # no thread could start (interpreter shutting down)
                return None
            self._lanes = lanes
        return self._lanes

    def _deliver(self, batch: Batch, deadline: float | None) -> None:
        """Send a new batch, unless older ones wait (then it queues behind them)."""
        if self._must_wait(deadline):
            self._park(batch)
            return
        result = self._send(batch, deadline)
        if result == _RETRY:
            self._park(batch)
        elif result == _SPLIT:
            for part in self._split(batch):
                self._deliver(part, deadline)

    def _park(self, batch: Batch) -> None:
        if self._spool is not None:
            self._to_spool(batch)
        elif sum(b.events for b in self._held) + batch.events <= self.max_queue:
            self._held.append(batch)
        else:
            self._lose(batch, "memory full")

    def _lose(self, batch: Batch, why: str) -> None:
        if batch.events:
            logger.warning("upstream-client: dropped %d events (%s)", batch.events, why)
        self._count_drop(batch.events)
        if batch.dropped:  # its count of earlier drops must still reach Upstream
            with self._lock:
                self._dropped += batch.dropped

    def _split(self, batch: Batch) -> list[Batch]:
        payload = decode(batch.body)
        events = payload.get("events") or []
        if len(events) <= 1:
            self._lose(batch, "refused by Upstream: too large")
            return []
        half = len(events) // 2
        # Derived ids stay stable, so a replay of a split half is still recognised; the
        # halves are as old as the batch.
        parts = self._build(events[:half], batch.dropped, f"{batch.batch_id}.1") + self._build(
            events[half:], 0, f"{batch.batch_id}.2"
        )
        return [part._replace(made=batch.made or part.made) for part in parts]

    # -- HTTP --------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            # A plain httpx client, never one of ours: shipping must not capture itself.
            # Shared by the lanes (httpx's pool is thread-safe); made before any starts.
            self._client = httpx.Client(
                headers={
                    "Authorization": f"Bearer {self._key}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "User-Agent": "upstream-client",
                },
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 3.0)),
            )
        return self._client

    def _send(self, batch: Batch, deadline: float | None) -> str:
        return self._judge(batch, self._post(batch, deadline))

    def _post(self, batch: Batch, deadline: float | None) -> Posted:
        """POST one batch (on the sender thread or a lane); never raises."""
        cpu = time.thread_time()
        timeout = self.timeout
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            response = self._http().post(
                self.url + EVENTS_PATH, content=batch.body, timeout=timeout
            )
        except httpx.HTTPError as exc:
            return Posted(None, f"{type(exc).__name__}: {exc}", time.thread_time() - cpu)
        except Exception as exc:  # a lane must answer whatever happens
            logger.exception("upstream-client: sending failed")
            return Posted(None, f"{type(exc).__name__}: {exc}", time.thread_time() - cpu)
        return Posted(response, "", time.thread_time() - cpu)

    def _judge(self, batch: Batch, posted: Posted) -> str:
        """What to do with a batch after its POST (the sender thread's bookkeeping)."""
        response = posted.response
        if response is None:
            self._failed(posted.error)
            return _RETRY
        status = response.status_code
        if status < 300:
            self._succeeded(batch, response)
            return _OK
        if status == 413:
            return _SPLIT
        if status == 429 or status >= 500 or status == 408:
            wait = retry_after_s(response.headers.get("Retry-After"))
            self._failed(f"HTTP {status}", wait)
            return _RETRY
        if status in (401, 403):
            self._failed(f"HTTP {status}: the API key was refused", AUTH_BACKOFF_S)
            return _RETRY
        # Anything else (400, 415, …) will never be accepted: resending cannot help.
        self._lose(batch, f"refused by Upstream: HTTP {status}: {response.text[:200]}")
        return _DROP

    def _succeeded(self, batch: Batch, response: httpx.Response) -> None:
        if self._failures:
            logger.warning("upstream-client: Upstream at %s answers again", self.url)
        self._failures = 0
        self._next_send = 0.0
        counts = self.counts
        counts["sent_batches"] += 1
        counts["reported_dropped"] += batch.dropped
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if isinstance(answer, dict) and answer.get("duplicate"):
            counts["duplicate_batches"] += 1
            return
        counts["sent_events"] += batch.events
        rejected = answer.get("rejected") if isinstance(answer, dict) else 0
        if isinstance(rejected, int) and rejected:
            counts["rejected_events"] += rejected
            first = (answer.get("errors") or [{}])[0]
            logger.warning(
                "upstream-client: Upstream rejected %d of %d events (first: %s %s)",
                rejected,
                batch.events,
                first.get("field"),
                first.get("message"),
            )

    def _failed(self, why: str, wait: float | None = None) -> None:
        if not self._failures:
            logger.warning(
                "upstream-client: cannot ship to %s (%s); spooling to %s",
                self.url,
                why,
                self._spool or "memory",
            )
        self._failures += 1
        self._backoff(wait)

    def _backoff(self, wait: float | None = None) -> None:
        if wait is None:
            step = min(self.max_backoff, 0.5 * 2 ** min(self._failures, 16))
            wait = step * random.uniform(0.5, 1.0)
        self._next_send = time.monotonic() + wait

    # -- the spool ---------------------------------------------------------------------------

    def _open_spool(self) -> None:
        if self._spool_ready:
            return
        self._spool_ready = True
        try:
            root = self._spool_root or _default_spool_root()
            name = hashlib.sha256(f"{self.url}\n{self._key}".encode()).hexdigest()[:16]
            spool = root / f"client-{name}"
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = spool / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            logger.warning("upstream-client: no spool (%s); failed batches wait in memory", exc)
            return
        self._spool = spool
        now = time.time()
        for entry in os.scandir(spool):
            if entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_TEMP_S:
                        os.unlink(entry.path)
        self._scan()

    def _scan(self) -> list[Path]:
        if self._spool is None:
            return []
        files, size = [], 0
        try:
            entries = list(os.scandir(self._spool))
        except OSError:
            entries = []
        for entry in entries:
            if entry.name.endswith(SPOOL_SUFFIX):
                try:
                    size += entry.stat().st_size
                except OSError:
                    continue
                files.append(Path(entry.path))
        files.sort(key=lambda p: p.name)
        self._spool_bytes, self._spool_files = size, len(files)
        return files

    def _to_spool(self, batch: Batch) -> None:
        spool = self._spool
        if spool is None:
            self._lose(batch, "memory full")
            return
        if self._spool_bytes + len(batch.body) > self.max_spool_bytes:
            self._scan()  # other processes may have replayed some
            if self._spool_bytes + len(batch.body) > self.max_spool_bytes:
                self._lose(batch, "spool full")
                return
        # Names sort by when the batch was built: replay goes oldest first, across
        # processes too, and the name says its age.
        made_ns = int(batch.made * 1e9) if batch.made else time.time_ns()
        name = f"{made_ns:020d}-{batch.batch_id}{SPOOL_SUFFIX}"
        temp = spool / f".tmp-{name}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, batch.body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, spool / name)
            _fsync_dir(spool)
        except OSError as exc:
            logger.warning("upstream-client: spool write failed (%s)", exc)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self._lose(batch, "spool unwritable")
            return
        self._spool_bytes += len(batch.body)
        self._spool_files += 1
        self.counts["spooled_batches"] += 1

    def _replay(self, deadline: float | None) -> None:
        """Send held and spooled batches, oldest first, until one fails."""
        while self._held and not self._blocked() and not _expired(deadline):
            batch = self._held[0]
            if _too_old(batch.made):
                self._lose(self._held.popleft(), "unsent for 7 days")
                continue
            result = self._send(batch, deadline)
            if result == _RETRY:
                return
            self._held.popleft()
            if result == _SPLIT:
                self._held.extendleft(reversed(self._split(batch)))
        if self._spool is None or not self._spool_files or self._blocked():
            return
        for path in self._scan():
            if self._blocked() or _expired(deadline):
                return
            if not self._replay_file(path, deadline):
                return
        self._scan()

    def _replay_file(self, path: Path, deadline: float | None) -> bool:
        try:
            handle = open(path, "rb")  # noqa: SIM115 -- held open for its lock
        except FileNotFoundError:  # another process sent it
            return True
        except OSError:
            return True
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # another process is sending it right now
                    return True
            if not path.exists():  # sent and removed while we waited to open it
                return True
            body = handle.read()
            try:
                payload = decode(body)
                batch = Batch(
                    str(payload["batch_id"]),
                    body,
                    len(payload.get("events") or []),
                    int(payload.get("dropped") or 0),
                    path,
                    _spooled_at(path),
                )
            except (OSError, EOFError, ValueError, KeyError, TypeError):
                logger.warning("upstream-client: unreadable spool file %s removed", path.name)
                _unlink(path)
                return True
            if _too_old(batch.made):
                self._lose(batch, "spooled for 7 days")
                _unlink(path)
                return True
            result = self._send(batch, deadline)
            if result == _RETRY:
                return False
            if result == _SPLIT:
                parts = self._split(batch)
                for part in parts:
                    self._to_spool(part)
            _unlink(path)
            self.counts["replayed_batches"] += 1
            return True

    def _spool_rest(self) -> None:
        """From the closing thread: put what is still queued on disk."""
        try:
            self._open_spool()
            dropped = self._take_dropped()
            for batch in self._drain(dropped):
                self._to_spool(batch)
        except Exception:
            logger.exception("upstream-client: could not spool at exit")

    def _after_fork(self) -> None:
        old = self._client
        if old is not None:
            # Its sockets are the parent's: closing them here would end the parent's
            # connections (a TLS close_notify), so the child only forgets them.
            _abandoned.append(old)
        self._fresh_state()
        mp = sys.modules.get("multiprocessing.util")
        if mp is not None:
            # multiprocessing's forked workers leave through os._exit, skipping atexit, and
            # clear inherited finalizers first: register one from its own after-fork hook.
            mp.register_after_fork(self, _mp_child)


class _Lanes:
    """Threads that post the batches handed to them, whichever is free first: the sender
    keeps at most ``size`` in flight and judges each answer itself, in order."""

    def __init__(self, post: Callable[[Batch, float | None], Posted], size: int) -> None:
        self._post = post
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.size = 0
        for n in range(size):
            thread = threading.Thread(
                target=self._run, name=f"upstream-client-lane-{n}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: fewer lanes
                break
            self.size += 1

    def submit(self, batch: Batch, deadline: float | None) -> Future:
        future: Future = Future()
        self._jobs.put((future, batch, deadline))
        return future

    def stop(self) -> None:
        for _ in range(self.size):
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, batch, deadline = job
            future.set_result(self._post(batch, deadline))


def _too_old(made: float) -> bool:
    return bool(made) and time.time() - made > MAX_SPOOL_AGE_S


def _spooled_at(path: Path) -> float:
    """When a spool file was written, from its name (``{time_ns}-{batch_id}.batch``)."""
    stamp = path.name.partition("-")[0]
    return int(stamp) / 1e9 if stamp.isdigit() else 0.0


def _events(items: list) -> list[dict[str, Any]]:
    """Queued items as event dicts: a capture record's event is built (and redacted) here,
    on the sender thread, so nothing unredacted is ever encoded or spooled."""
    events = []
    for item in items:
        if item.__class__ is not dict:
            try:
                item = item.event()
            except Exception as exc:
                # The type only: the message or a traceback could hold what was not redacted.
                logger.error(
                    "upstream-client: an event could not be built (%s)", type(exc).__name__
                )
                continue
        events.append(item)
    return events


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mp_child(shipper: Shipper) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(
        shipper, _close_ref, args=(weakref.ref(shipper),), exitpriority=10
    )


def _close_ref(ref: weakref.ref) -> None:
    shipper = ref()
    if shipper is not None:
        shipper.close()


_live: weakref.WeakSet[Shipper] = weakref.WeakSet()
_abandoned: list[httpx.Client] = []


def _reset_after_fork() -> None:
    for shipper in list(_live):
        shipper._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
