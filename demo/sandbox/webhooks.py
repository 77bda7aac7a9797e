"""The sandbox provider's webhooks: signed deliveries to Upstream's /hooks/<token>/ over HTTP.

A `Target` is one receiving URL with its scheme and secret. `Sender` posts events to each
target at its own rhythm until stopped, as a provider would: Standard Webhooks signatures
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``), or
nothing at all for a secret-URL endpoint (``none``, Paubox's way). Like a real provider it
stamps an event when it is queued, so deliveries arrive with a little lag (now and then a
lot), retries now and then (a duplicate id), and during `wrong_secret` it signs with a
secret Upstream does not hold: the "secret drift after a rotation" the rules and the
verdict must tell from a forged delivery, which the sender also sends once in a while.

The sender needs no Django: ``python -m demo.sandbox.webhooks`` sets Django up only to read
the demo's endpoints (demo.webhooks.targets) before sending.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger(__name__)

# Seconds after the sender starts (the demo's timeline, see demo.scenario): from 11 to 15
# minutes in, the Standard Webhooks deliveries are signed with a secret Upstream lacks.
WRONG_SECRET_WINDOW = (660.0, 240.0)
# A forged delivery (no valid signature) roughly this often per signed target, in seconds.
FORGED_EVERY_S = 600.0
# Share of deliveries sent twice (a provider's retry after a lost answer).
DUPLICATE_SHARE = 0.03
# Share of deliveries that sat in the provider's queue for a while before being sent: rare
# enough that the p95 lag stays low, except when a few come close together.
SLOW_SHARE = 0.02


@dataclass(frozen=True)
class Target:
    """One receiving URL: where to post, how to sign, what to send and how often."""

    name: str
    url: str
    scheme: str  # "standard" or "none"
    secret: str = ""  # whsec_… for "standard"
    events: tuple[str, ...] = ("event.created",)
    every_s: float = 20.0
    #: (start, seconds) after the sender starts during which a wrong secret signs.
    wrong_secret: tuple[float, float] | None = None


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature: HMAC-SHA256 over ``id.timestamp.body`` keyed
    with the base64 bytes after ``whsec_``, base64-encoded."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def wrong_secret_for(secret: str) -> str:
    """A well-formed secret that is not `secret`: what the provider holds after a rotation
    Upstream was not told about."""
    key = hashlib.sha256(b"rotated:" + secret.encode()).digest()
    return "whsec_" + base64.b64encode(key).decode("ascii")


def in_window(window: tuple[float, float] | None, elapsed_s: float) -> bool:
    if window is None:
        return False
    start, length = window
    return start <= elapsed_s < start + length


@dataclass
class Delivery:
    """One request the sender made, and what Upstream answered (None: no answer)."""

    target: str
    msg_id: str
    event: str
    signed_with: str  # "secret", "wrong", "forged", "none"
    status: int | None


@dataclass
class Sender:
    """Posts events to every target until `stop` is set; `sent` keeps the last answers."""

    targets: list[Target]
    seed: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    sent: list[Delivery] = field(default_factory=list)
    keep: int = 1000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def body(self, target: Target, msg_id: str, event: str, stamped: int) -> bytes:
        return json.dumps(
            {
                "id": msg_id,
                "type": event,
                "timestamp": stamped,
                "data": {"object": f"{event.split('.')[0]}_{self.rng.getrandbits(40):010x}"},
            },
            separators=(",", ":"),
        ).encode()

    def deliver(self, client: httpx.Client, target: Target, *, forged: bool = False) -> Delivery:
        """Send one event to `target` and return what happened (never raises on HTTP errors)."""
        event = self.rng.choice(target.events)
        msg_id = "msg_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]
        # Queued a moment (rarely, minutes) before it goes out: that is the delivery lag.
        queued = self.rng.uniform(30, 100) if self.rng.random() < SLOW_SHARE else 0.0
        queued += self.rng.lognormvariate(-0.5, 0.8)
        stamped = int(time.time() - queued)
        body = self.body(target, msg_id, event, stamped)
        headers = {"content-type": "application/json", "user-agent": "Sandbox-Webhooks/1.0"}
        signed_with = "none"
        if target.scheme == "standard":
            elapsed = time.monotonic() - self.started
            secret, signed_with = target.secret, "secret"
            if forged:
                secret, signed_with = wrong_secret_for("forged:" + msg_id), "forged"
            elif in_window(target.wrong_secret, elapsed):
                secret, signed_with = wrong_secret_for(target.secret), "wrong"
            headers |= {
                "webhook-id": msg_id,
                "webhook-timestamp": str(stamped),
                "webhook-signature": standard_signature(secret, msg_id, stamped, body),
            }
        delivery = Delivery(
            target.name, msg_id, event, signed_with, self._post(client, target, body, headers)
        )
        if delivery.status is not None and self.rng.random() < DUPLICATE_SHARE:
            self._post(client, target, body, headers)  # the provider retries: a duplicate
        with self._lock:
            self.sent.append(delivery)
            del self.sent[: -self.keep]
        return delivery

    @staticmethod
    def _post(client: httpx.Client, target: Target, body: bytes, headers: dict) -> int | None:
        try:
            return client.post(target.url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            logger.debug("webhook to %s: %s", target.name, exc)
            return None

    def run(self) -> None:
        """Deliver to every target at its rhythm (exponential gaps) until stopped."""
        due = {t.name: time.monotonic() + self.rng.uniform(0, t.every_s) for t in self.targets}
        forged_due = {t.name: time.monotonic() + FORGED_EVERY_S for t in self.targets}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                now = time.monotonic()
                for target in self.targets:
                    if target.scheme == "standard" and now >= forged_due[target.name]:
                        self.deliver(client, target, forged=True)
                        forged_due[target.name] = now + self.rng.expovariate(1 / FORGED_EVERY_S)
                    if now >= due[target.name]:
                        self.deliver(client, target)
                        due[target.name] = now + self.rng.expovariate(1 / target.every_s)
                wait = min(due.values()) - time.monotonic()
                self.stop.wait(max(0.05, min(wait, 1.0)))


def main(argv: list[str] | None = None) -> int:
    """Read the demo's webhook endpoints, then send to them until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m demo.sandbox.webhooks", description=__doc__)
    parser.add_argument(
        "--upstream-url", default=os.environ.get("UPSTREAM_DEMO_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    args = parser.parse_args(argv)

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()
    from demo import webhooks as demo_webhooks

    targets = demo_webhooks.targets(args.upstream_url)
    if not targets:
        print("no demo webhook endpoints: run `python manage.py demo` first", file=sys.stderr)
        return 1
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sender = Sender(targets, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sender.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sender.stop.set())
    if args.duration:
        timer = threading.Timer(args.duration, sender.stop.set)
        timer.daemon = True
        timer.start()
    names = ", ".join(f"{t.name} ({t.scheme})" for t in targets)
    print(f"sandbox webhooks to {args.upstream_url}: {names}", flush=True)
    sender.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
