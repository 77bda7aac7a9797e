"""Loopback fakes of OpenAI, Anthropic and Stripe that copy their wire behaviour.

Each runs a real HTTP/1.1 server (keep-alive, chunked SSE) on 127.0.0.1 in a thread and
answers as the provider does: its authentication, its error bodies and headers (request
ids, rate-limit budgets, Retry-After, ``x-should-retry`` / ``Stripe-Should-Retry``), its
pagination, SSE streams (and streams cut or failing mid-way), and Stripe's idempotency
keys. ``script(...)`` makes the next requests fail with a provider-shaped error; every
request is kept in ``requests`` so a test can count what really went over the wire.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest

CREATED = 1764590400  # 2025-12-01T12:00:00Z: fixed, so two runs give equal results


class Seen(NamedTuple):
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


class Answer(NamedTuple):
    status: int
    body: Any  # JSON-able, or bytes
    headers: dict[str, str]


class Fake:
    """A provider on loopback. Subclasses route requests in ``answer``."""

    name: ClassVar[str] = "fake"

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.local = threading.local()  # the handler of this thread's request
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                fake.connections.append(self.connection)

            def do_GET(self):
                fake._handle(self)

            do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        """Forget requests, state and scripted failures (ids start again from 1)."""
        with self.lock:
            self.requests = []
            self.faults: list[tuple[int, dict[str, str]]] = []
            self.counter = 0
            self.request_counter = 0
            self.state: dict[str, Any] = {}
        self.stream_chunks = 12
        self.cut_after: int | None = None  # drop the connection after this many chunks
        self.error_after: int | None = None  # send the provider's SSE error event instead
        self.chunk_delay = 0.0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def script(self, *faults: int | tuple[int, dict[str, str]]) -> None:
        """The next requests (any path) fail with these statuses, in order."""
        with self.lock:
            self.faults.extend(f if isinstance(f, tuple) else (f, {}) for f in faults)

    def next_id(self, prefix: str) -> str:
        with self.lock:
            self.counter += 1
            return f"{prefix}{self.counter:014d}"

    def request_id(self) -> str:
        with self.lock:
            self.request_counter += 1
            return f"req_{self.request_counter:014d}"

    # -- what subclasses provide ------------------------------------------------------------

    def authorized(self, seen: Seen) -> bool:
        return seen.headers.get("authorization") == f"Bearer {self.api_key}"

    def error(self, status: int, extra: dict[str, str]) -> Answer:
        raise NotImplementedError

    def answer(self, seen: Seen) -> Answer | None:
        """The answer, or None after writing a stream itself (``self.stream``)."""
        raise NotImplementedError

    def common_headers(self) -> dict[str, str]:
        return {}

    # -- plumbing ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        seen = Seen(
            handler.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        with self.lock:
            self.requests.append(seen)
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            answer = self.error(*fault)
        elif not self.authorized(seen):
            answer = self.error(401, {})
        else:
            answer = self.answer_with(seen, handler)
            if answer is None:
                return
        self._write(handler, answer)

    def answer_with(self, seen: Seen, handler: BaseHTTPRequestHandler) -> Answer | None:
        self.local.handler = handler
        return self.answer(seen)

    def _write(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        headers = {**self.common_headers(), "Content-Type": "application/json", **answer.headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stream(self, events: list[bytes], error: bytes, headers: dict[str, str]) -> None:
        """Write an SSE response chunk by chunk; cut it or end it with ``error`` when told."""
        handler = self.local.handler
        handler.send_response(200)
        for name, value in {
            **self.common_headers(),
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
            **headers,
        }.items():
            handler.send_header(name, value)
        handler.end_headers()
        out = handler.wfile
        try:
            for index, event in enumerate(events):
                if self.cut_after is not None and index == self.cut_after:
                    out.flush()
                    # The provider's side drops the connection mid-body.
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    handler.close_connection = True
                    return
                if self.error_after is not None and index == self.error_after:
                    event = error
                out.write(b"%x\r\n%s\r\n" % (len(event), event))
                out.flush()
                if event is error:
                    break
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
            out.write(b"0\r\n\r\n")
            out.flush()
        except (BrokenPipeError, ConnectionResetError):  # the caller closed early
            handler.close_connection = True


def _bearer(seen: Seen) -> str | None:
    kind, _, token = seen.headers.get("authorization", "").partition(" ")
    return token if kind.lower() == "bearer" else None


def _json(seen: Seen) -> dict:
    try:
        return json.loads(seen.body or b"{}")
    except ValueError:
        return {}


def _page(items: list[dict], after: str | None, limit: int) -> tuple[list[dict], bool]:
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    chunk = items[start : start + limit]
    return chunk, start + limit < len(items)


class OpenAI(Fake):
    """``/v1/chat/completions`` (JSON or SSE), ``/v1/models``, ``/v1/files`` (cursor pages)."""

    name = "openai"
    FILES = 7

    def common_headers(self) -> dict[str, str]:
        return {
            "x-request-id": self.request_id(),
            "openai-version": "2020-10-01",
            "openai-organization": "org-fake",
            "openai-processing-ms": "12",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29950",
            "x-ratelimit-reset-tokens": "100ms",
        }

    def error(self, status: int, extra: dict[str, str]) -> Answer:
        kinds = {
            400: ("invalid_request_error", None, "Invalid request."),
            401: (
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided: sk-test****wxyz. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            ),
            404: ("invalid_request_error", None, "The model does not exist."),
            429: (
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for gpt-4o in organization org-fake on requests per min "
                "(RPM): Limit 500, Used 500, Requested 1. Please try again in 20ms.",
            ),
            500: (
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            ),
            503: (
                "server_error",
                None,
                "The engine is currently overloaded, please try again later",
            ),
        }
        kind, code, message = kinds.get(status, ("server_error", None, "Error."))
        headers: dict[str, str] = {}
        if status == 429:
            headers = {
                "x-ratelimit-remaining-requests": "0",
                "retry-after-ms": "20",
                "retry-after": "1",
            }
        elif status >= 500:
            headers = {"retry-after-ms": "20"}
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return Answer(status, body, {**headers, **extra})

    def files(self) -> list[dict]:
        return [
            {
                "id": f"file-{n:024d}",
                "object": "file",
                "bytes": 1000 + n,
                "created_at": CREATED,
                "filename": f"train-{n}.jsonl",
                "purpose": "fine-tune",
                "status": "processed",
            }
            for n in range(self.FILES)
        ]

    def answer(self, seen: Seen) -> Answer | None:
        if seen.method == "GET" and seen.path == "/v1/models":
            models = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "openai"}
                for m in ("gpt-4o", "gpt-4o-mini")
            ]
            return Answer(200, {"object": "list", "data": models}, {})
        if seen.method == "GET" and seen.path == "/v1/files":
            limit = int(seen.query.get("limit", ["3"])[0])
            after = seen.query.get("after", [None])[0]
            chunk, more = _page(self.files(), after, limit)
            body = {
                "object": "list",
                "data": chunk,
                "has_more": more,
                "first_id": chunk[0]["id"] if chunk else None,
                "last_id": chunk[-1]["id"] if chunk else None,
            }
            return Answer(200, body, {})
        if seen.method == "POST" and seen.path == "/v1/chat/completions":
            request = _json(seen)
            if not request.get("messages"):
                return self.error(400, {})
            model = request.get("model", "gpt-4o")
            if request.get("stream"):
                self.stream_chat(model)
                return None
            return Answer(
                200,
                {
                    "id": "chatcmpl-fake0001",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                },
                {},
            )
        return self.error(404, {})

    def stream_chat(self, model: str) -> None:
        def chunk(delta: dict, finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake0002",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": f"word{n} "}) for n in range(self.stream_chunks)]
        events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
        error = {"error": {"message": "The server had an error", "type": "server_error"}}
        self.stream(events, b"data: " + json.dumps(error).encode() + b"\n\n", {})


class Anthropic(Fake):
    """``/v1/messages`` (JSON or SSE with named events) and ``/v1/models`` (pages by id)."""

    name = "anthropic"
    MODELS = 5

    def authorized(self, seen: Seen) -> bool:
        # anthropic 2.x sends the key as a Bearer token; older clients as x-api-key.
        return self.api_key in (seen.headers.get("x-api-key"), _bearer(seen))

    def common_headers(self) -> dict[str, str]:
        reset = "2025-12-01T12:00:30Z"
        headers = {"request-id": self.request_id(), "anthropic-organization-id": "org-fake"}
        for kind, limit, left in (
            ("requests", 50, 49),
            ("tokens", 100000, 99000),
            ("input-tokens", 80000, 79500),
            ("output-tokens", 20000, 19500),
        ):
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(left)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        return headers

    def error(self, status: int, extra: dict[str, str]) -> Answer:
        kinds = {
            400: ("invalid_request_error", "messages: field required"),
            401: ("authentication_error", "invalid x-api-key"),
            404: ("not_found_error", "Not found"),
            429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
            500: ("api_error", "Internal server error"),
            529: ("overloaded_error", "Overloaded"),
        }
        kind, message = kinds.get(status, ("api_error", "Error"))
        headers: dict[str, str] = {}
        if status == 429:
            headers = {
                "anthropic-ratelimit-requests-remaining": "0",
                "retry-after": "1",
                "retry-after-ms": "20",
            }
        elif status >= 500:
            headers = {"retry-after-ms": "20"}
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": self.request_id(),
        }
        return Answer(status, body, {**headers, **extra})

    def answer(self, seen: Seen) -> Answer | None:
        if "anthropic-version" not in seen.headers:
            return self.error(400, {})
        if seen.method == "GET" and seen.path == "/v1/models":
            models = [
                {
                    "type": "model",
                    "id": f"claude-fake-{n}",
                    "display_name": f"Claude Fake {n}",
                    "created_at": "2025-10-01T00:00:00Z",
                }
                for n in range(self.MODELS)
            ]
            limit = int(seen.query.get("limit", ["2"])[0])
            after = seen.query.get("after_id", [None])[0]
            chunk, more = _page(models, after, limit)
            body = {
                "data": chunk,
                "has_more": more,
                "first_id": chunk[0]["id"] if chunk else None,
                "last_id": chunk[-1]["id"] if chunk else None,
            }
            return Answer(200, body, {})
        if seen.method == "POST" and seen.path == "/v1/messages":
            request = _json(seen)
            if not request.get("messages"):
                return self.error(400, {})
            model = request.get("model", "claude-fake-0")
            if request.get("stream"):
                self.stream_message(model)
                return None
            return Answer(
                200,
                {
                    "id": "msg_01FakeFakeFakeFake0001",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "Hello!"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 3},
                },
                {},
            )
        return self.error(404, {})

    def stream_message(self, model: str) -> None:
        def sse(kind: str, data: dict) -> bytes:
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        message = {
            "id": "msg_01FakeFakeFakeFake0002",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
        events = [
            sse("message_start", {"type": "message_start", "message": message}),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse("ping", {"type": "ping"}),
        ]
        for n in range(self.stream_chunks):
            delta = {"type": "text_delta", "text": f"word{n} "}
            events.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            )
        events += [
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": self.stream_chunks},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
        error = sse(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        self.stream(events, error, {})


class Stripe(Fake):
    """``/v1/customers`` (create with idempotency keys, retrieve, list by ``starting_after``)
    and ``/v1/charges`` (a declined card is a 402 ``card_error``)."""

    name = "stripe"
    VERSION = "2025-11-17.clover"

    def common_headers(self) -> dict[str, str]:
        return {"Request-Id": self.request_id(), "Stripe-Version": self.VERSION}

    def error(self, status: int, extra: dict[str, str]) -> Answer:
        invalid = "invalid_request_error"
        kinds = {
            400: (invalid, None, "Missing required param."),
            401: (invalid, None, "Invalid API Key provided: sk_test_****************1234"),
            404: (invalid, "resource_missing", "No such customer"),
            409: (
                invalid,
                "lock_timeout",
                "This object cannot be accessed right now because another API request or "
                "Stripe process is currently accessing it.",
            ),
            429: (
                invalid,
                "rate_limit",
                "Request rate limit exceeded. You can learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
            ),
            500: (
                "api_error",
                None,
                "Sorry, something went wrong. We've already been notified of the problem.",
            ),
        }
        kind, code, message = kinds.get(status, ("api_error", None, "Error"))
        error: dict[str, Any] = {"type": kind, "message": message}
        if code:
            error["code"] = code
        error["request_log_url"] = "https://dashboard.stripe.com/test/logs/req_fake"
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="Stripe"'
        return Answer(status, {"error": error}, {**headers, **extra})

    def customer(self, cid: str, email: str | None) -> dict:
        return {
            "id": cid,
            "object": "customer",
            "created": CREATED,
            "email": email,
            "livemode": False,
            "metadata": {},
        }

    def answer(self, seen: Seen) -> Answer | None:
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        customers: dict[str, dict] = self.state.setdefault("customers", {})
        if seen.method == "POST":
            key = seen.headers.get("idempotency-key")
            if key:
                # Stripe replays the first answer to a key, and refuses other parameters.
                done = self.state.setdefault("idempotency", {}).get(key)
                if done is not None:
                    params, answer = done
                    if params != (seen.path, form):
                        error = {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the "
                            "same parameters they were first used with.",
                        }
                        return Answer(400, {"error": error}, {})
                    return answer._replace(
                        headers={**answer.headers, "Idempotent-Replayed": "true"}
                    )
            answer = self.post(seen, form, customers)
            if key and answer.status < 500:
                self.state["idempotency"][key] = ((seen.path, form), answer)
            if key:
                answer = answer._replace(headers={**answer.headers, "Idempotency-Key": key})
            return answer
        if seen.path == "/v1/customers":
            limit = int(seen.query.get("limit", ["10"])[0])
            after = seen.query.get("starting_after", [None])[0]
            items = sorted(customers.values(), key=lambda c: c["id"])
            chunk, more = _page(items, after, limit)
            body = {"object": "list", "url": "/v1/customers", "has_more": more, "data": chunk}
            return Answer(200, body, {})
        if seen.path.startswith("/v1/customers/"):
            found = customers.get(seen.path.rsplit("/", 1)[1])
            return Answer(200, found, {}) if found else self.error(404, {})
        return self.error(404, {})

    def post(self, seen: Seen, form: dict, customers: dict) -> Answer:
        if seen.path == "/v1/customers":
            cid = self.next_id("cus_Fake")  # cus_ + 14 digits, as long as Stripe's
            cid = cid[:8] + cid[-10:]
            customers[cid] = self.customer(cid, form.get("email"))
            return Answer(200, customers[cid], {})
        if seen.path == "/v1/charges":
            if form.get("source") == "tok_chargeDeclined":
                answer = self.error(402, {})
                answer.body["error"].update(
                    type="card_error",
                    code="card_declined",
                    decline_code="generic_decline",
                    message="Your card was declined.",
                    charge=self.next_id("ch_"),
                )
                return answer
            charge = {
                "id": self.next_id("ch_3Fake"),
                "object": "charge",
                "amount": int(form.get("amount", "0")),
                "currency": form.get("currency", "usd"),
                "paid": True,
                "status": "succeeded",
                "created": CREATED,
                "livemode": False,
            }
            return Answer(200, charge, {})
        return self.error(404, {})


# -- what the real-SDK tests share ------------------------------------------------------------


@pytest.fixture
def recording(transactional_db, tmp_path):
    """Upstream's own recorder behind the default sink (LocalSink), on a private spool."""
    from monitoring import attempts, recorder

    attempts.clear_policies()  # ids are reused once the test database is emptied
    recorder.configure(spool_dir=tmp_path / "recorder-spool", busy_timeout_ms=200)
    yield recorder
    recorder.flush(timeout=30)
    assert recorder.stats()["lost"] == 0


def rows(slug: str) -> list:
    """The request-log rows of one integration, once the recorder has written them."""
    from monitoring import recorder
    from monitoring.models import RequestLog

    recorder.flush(timeout=30)
    return list(RequestLog.objects.filter(integration__slug=slug).order_by("id"))


def spooled_events(spool: Path) -> list[dict]:
    """Every event in an upstream-client spool directory."""
    return [
        event
        for path in sorted(spool.rglob("*.batch"))
        for event in json.loads(gzip.decompress(path.read_bytes()))["events"]
    ]


def assert_no_secret(secret: str, found: list, caplog: Any = None) -> None:
    """No row, event or log line holds the secret (nor its long tail: providers echo keys
    with the head masked)."""
    from django.forms.models import model_to_dict

    needles = (secret, secret[-16:])
    for item in found:
        text = json.dumps(item if isinstance(item, dict) else model_to_dict(item), default=str)
        for needle in needles:
            assert needle not in text, item
    if caplog is not None:
        for record in caplog.records:
            for needle in needles:
                assert needle not in record.getMessage()
