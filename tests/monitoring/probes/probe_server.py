"""A loopback HTTP(S) server whose paths behave the ways probe tests need."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    target: ProbeTarget

    def get_request(self):
        sock, addr = super().get_request()
        if self.target.tls is not None:
            # Handshake in the handler thread, so a client that rejects us can't stall accept().
            sock = self.target.tls.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # clients hanging up and failed handshakes are what these tests provoke


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        target = self.server.target
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with target.lock:
            target.requests.append((self.command, self.path, dict(self.headers.items()), body))
        path = parts.path
        if path == "/json":
            payload = {"status": "ok", "count": 3, "items": [{"id": 7, "state": "live"}]}
            self._reply(
                200,
                json.dumps(payload).encode(),
                {"Content-Type": "application/json", "X-Version": "2.1.0"},
            )
        elif path == "/text":
            self._reply(200, b"hello upstream world")
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b"as asked")
        elif path == "/flaky":
            self._reply(target.flaky_status, b"flaky")
        elif path == "/sleep":
            time.sleep(int(query.get("ms", "1000")) / 1000)
            self._reply(200, b"slept")
        elif path == "/redirect":
            self._reply(int(query.get("code", "302")), b"", {"Location": query["to"]})
        elif path == "/loop":
            self._reply(302, b"", {"Location": "/loop"})
        elif path == "/headers":
            self._reply(200, json.dumps(dict(self.headers.items())).encode())
        elif path == "/reset":
            # SO_LINGER 0: close() sends a TCP reset instead of a polite FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
        else:
            self._reply(404, b"no such path")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle


class ProbeTarget:
    """Serves on 127.0.0.1, port 0; ``tls`` is a server-side SSL context for https."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.flaky_status = 200
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.target = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ProbeTarget:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.hostport}"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _, _ in self.requests]
