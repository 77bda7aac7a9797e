"""Instructions per call of each client, counted by valgrind (callgrind): load-independent.

On a shared 2-core machine two identical clients timed side by side differ by ±10 µs per
call, about what upstream-client adds, so the wall-clock figures of
bench/client_overhead.py cannot settle a 15 µs goal alone. Instructions retired do not
depend on the load: each client makes GETs against an in-process canned response (no
network, no other thread), under callgrind, twice (``SHORT`` and ``LONG`` calls), and the
difference divided by the extra calls is its cost per call without start-up.

    python bench/_instructions.py CLIENT N     # the child: N calls of one client
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT, LONG = 100, 600
# Client names as bench/client_overhead.py gives them: plain/ours (httpx), plain2/ours2
# (httpx2), plain_r/ours_r (requests), and otel (httpx under OpenTelemetry).

BODY = b'{"id": 42, "object": "customer", "name": "Ada Lovelace"}'
HEADERS = {
    "Content-Type": "application/json",
    "Content-Length": str(len(BODY)),
    "X-RateLimit-Limit": "1000",
    "X-RateLimit-Remaining": "999",
    "X-RateLimit-Reset": "30",
    "X-Request-Id": "req_0123456789abcdef",
    "Date": "Thu, 01 Jan 2026 00:00:00 GMT",
}
URL = "http://127.0.0.1:5555/v1/customers/42"


class _Queue:
    """A sink that holds records as the Shipper's queue does, and lets them go in batches
    (on the sender thread, in the real thing)."""

    def __init__(self) -> None:
        self.items: list = []

    def submit(self, item) -> None:
        self.items.append(item)
        if len(self.items) >= 1000:
            self.items = []

    submit_record = submit


def _client(name: str):
    """One client whose every request is answered in-process with the same response."""
    if name.endswith("_r"):
        import requests
        import upstream_client.requests
        import urllib3
        from requests.adapters import HTTPAdapter

        class Canned(HTTPAdapter):
            def send(self, request, stream=False, **kwargs):
                raw = urllib3.HTTPResponse(
                    body=io.BytesIO(BODY), headers=HEADERS, status=200,
                    preload_content=False, decode_content=False,
                )  # fmt: skip
                return self.build_response(request, raw)

        session = requests.Session()
        session.mount("http://", Canned())
        if name == "ours_r":
            upstream_client.requests.mount(session, integration="bench", sink=_Queue())
        return session
    library = "httpx2" if name.endswith("2") else "httpx"
    module = __import__(library)
    raw_headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    class CannedTransport(module.BaseTransport):
        def handle_request(self, request):
            return module.Response(200, headers=raw_headers, stream=module.ByteStream(BODY))

    if name.startswith("ours"):
        import importlib

        ours = importlib.import_module(
            "upstream_client" if library == "httpx" else "upstream_client.httpx2"
        )
        return ours.Client(integration="bench", sink=_Queue(), transport=CannedTransport())
    client = module.Client(transport=CannedTransport())
    if name == "otel":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    return client


def _calls(name: str, n: int) -> None:
    get = _client(name).get
    for _ in range(n):
        get(URL)


def _count(name: str, n: int) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, name, str(n)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not found:
        raise SystemExit(f"callgrind failed for {name}: {result.stderr[-500:]}")
    return int(found[1])


def per_call(clients: Sequence[str]) -> dict[str, int]:
    """Instructions per call of each named client (two counts each, two at a time)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    jobs = [(name, n) for name in clients for n in (SHORT, LONG)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs), strict=True))
    return {name: (counts[name, LONG] - counts[name, SHORT]) // (LONG - SHORT) for name in clients}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _calls(sys.argv[1], int(sys.argv[2]))
