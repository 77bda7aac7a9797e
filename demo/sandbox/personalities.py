"""Sandbox personalities: OpenPanel's OpenAdmin API and Paubox's Email API, as they behave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from typing import Any

Reply = tuple[int, Any, dict[str, str]]

OPENPANEL_USER = "admin"
OPENPANEL_PASSWORD = "sandbox-openpanel-password"  # noqa: S105 (the fake's own demo login)
# The demo app's own login (its traffic), apart from the probes' admin one: its sign-in
# storms use up its own allowance, not the probe's.
OPENPANEL_APP_USER = "billing-app"
OPENPANEL_APP_PASSWORD = "sandbox-openpanel-app-password"  # noqa: S105 (the fake's demo login)
OPENPANEL_LOGINS = {OPENPANEL_USER: OPENPANEL_PASSWORD, OPENPANEL_APP_USER: OPENPANEL_APP_PASSWORD}
OPENPANEL_TOKEN_S = 15 * 60
OPENPANEL_SIGNINS_PER_MIN = 5
PAUBOX_USER = "sandbox"
PAUBOX_KEY = "paubox_sandbox_key_0f3a"
PAUBOX_BATCH_ADVISED = 50


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class OpenPanel:
    """``/api/``: JWT sign-in (15 minutes, no refresh, 5 a minute per IP and user, then 429
    with Retry-After), errors ``{"error"}``."""

    prefix = "/openpanel"

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._signins: dict[tuple[str, str], list[float]] = {}
        self.disabled = False
        self.signin_count = 0

    def _token(self, now: float, user: str = OPENPANEL_USER) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": user, "iat": int(now), "exp": int(now) + OPENPANEL_TOKEN_S}
        body = _b64(json.dumps(claims).encode())
        signature = hmac.new(self._key, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(signature)}"

    def _user(self, auth: str) -> str | None:
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            header, body, signature = token.split(".")
            expected = hmac.new(self._key, f"{header}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(_b64(expected), signature):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) <= time.time():
            return None
        return str(claims.get("sub"))

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes,
                client_ip: str, query: dict[str, str] | None = None) -> Reply:  # fmt: skip
        if self.disabled:
            return 404, {"error": "API access is disabled! Enable it in OpenAdmin > Settings."}, {}
        if path in ("/api", "/api/"):
            return (
                self._signin(body, client_ip)
                if method == "POST"
                else (200, {"message": "API is working!"}, {})
            )
        user = self._user(headers.get("authorization", ""))
        if user is None:
            return 401, {"error": "Missing or invalid token"}, {}
        if path == "/api/whoami" and method == "GET":
            return 200, {"logged_in_as": user}, {}
        if path == "/api/users" and method == "GET":
            return 200, [], {}  # bearer callers see an empty list, as on the real panel
        if path.startswith("/api/users/") and method == "GET":
            return 404, {"error": f"User {path.rsplit('/', 1)[1][:40]} not found"}, {}
        if path == "/api/plans" and method == "POST":
            # Some endpoints answer 200 with an error body.
            return 200, {"error": "Plan name already exists"}, {}
        return 404, {"error": "Not found"}, {}

    def _signin(self, body: bytes, client_ip: str) -> Reply:
        now = time.time()
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        name = data.get("username") if isinstance(data, dict) else None
        bucket = (client_ip, name if isinstance(name, str) else "")
        with self._lock:
            recent = [t for t in self._signins.get(bucket, []) if now - t < 60]
            if len(recent) >= OPENPANEL_SIGNINS_PER_MIN:
                self._signins[bucket] = recent
                # When the oldest attempt of the minute leaves the window.
                wait = max(1, math.ceil(60 - (now - recent[0])))
                error = {"error": "Too many login attempts. Please try again later."}
                return 429, error, {"Retry-After": str(wait)}
            self._signins[bucket] = [*recent, now]
            self.signin_count += 1
        if data is None:
            return 400, {"error": "Invalid JSON body"}, {}
        if not isinstance(data, dict) or not data.get("username") or not data.get("password"):
            return 400, {"error": "username and password are required"}, {}
        password = OPENPANEL_LOGINS.get(str(data["username"]))
        if password is None or not hmac.compare_digest(str(data["password"]), password):
            return 401, {"error": "Invalid username or password"}, {}
        return 200, {"access_token": self._token(now, str(data["username"]))}, {}


class Paubox:
    """``/v1/<username>/``: ``Token token=`` (or Bearer) auth and Paubox's three error shapes."""

    prefix = "/paubox"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, dict[str, Any]] = {}
        self._templates = [{"id": 1, "name": "welcome", "api_customer_id": 1}]

    @staticmethod
    def _authorized(auth: str) -> bool:
        lowered = auth.lower()
        if lowered.startswith("token token="):
            key = auth[len("token token=") :].strip()
        elif lowered.startswith("bearer "):
            key = auth[7:].strip()
        else:
            return False
        return hmac.compare_digest(key, PAUBOX_KEY)

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes,
                client_ip: str, query: dict[str, str] | None = None) -> Reply:  # fmt: skip
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "v1":
            return 404, {"error": "Not found"}, {}
        if parts[1] != PAUBOX_USER:
            return 404, {"error": f"Unknown API user {parts[1][:40]}"}, {}
        if not self._authorized(headers.get("authorization", "")):
            return 401, {"message": "Invalid or missing API key"}, {}
        route = "/".join(parts[2:])
        if route == "dynamic_templates" and method == "GET":
            return 200, self._templates, {}
        if route == "messages" and method == "POST":
            return self._send(body, bulk=False)
        if route == "bulk_messages" and method == "POST":
            return self._send(body, bulk=True)
        if route == "message_receipt" and method == "GET":
            tracking = (query or {}).get("sourceTrackingId", "")
            with self._lock:
                found = self._messages.get(tracking)
            if found is None:
                detail = f"No message with id {tracking[:40]}"
                error = {"code": 404, "title": "Message was not found", "details": detail}
                return 404, {"errors": [error]}, {}
            return 200, {"sourceTrackingId": tracking, "data": found}, {}
        return 404, {"error": "Not found"}, {}

    def _send(self, body: bytes, *, bulk: bool) -> Reply:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {"errors": [{"code": 400, "title": "Invalid JSON",
                                     "details": "The request body is not JSON"}]}, {}  # fmt: skip
        messages = (data.get("data") or {}).get("messages") if isinstance(data, dict) else None
        if not bulk and isinstance(data, dict) and isinstance(data.get("data"), dict):
            messages = [data["data"].get("message")]
        problems = []
        for index, message in enumerate(messages or [None]):
            recipients = (message or {}).get("recipients") if isinstance(message, dict) else None
            if not recipients:
                detail = f"message {index}: recipients can't be blank"
                problems.append(
                    {"code": 400, "title": "Error validating message", "details": detail}
                )
        if problems:
            return 400, {"errors": problems}, {}
        ids = []
        with self._lock:
            for _message in messages or []:
                tracking = str(uuid.uuid4())
                self._messages[tracking] = {"message": {"id": tracking, "status": "delivered"}}
                ids.append(tracking)
        if bulk:
            extra = {"X-Paubox-Batch-Size": str(len(ids))}
            return 200, {"messages": [{"sourceTrackingId": i} for i in ids]}, extra
        return 200, {"sourceTrackingId": ids[0], "data": "Service OK"}, {}


PERSONALITIES = (OpenPanel, Paubox)
