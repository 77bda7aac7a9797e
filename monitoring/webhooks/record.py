"""Turning a delivery into an attempt (a RequestLog row with source "webhook"), and the
endpoint's denormalised state (last delivery, learned cadence) and opt-in samples.

The row contract (shared with the rules and charts that read these rows): ``path`` is
"/" + the event type ("/unknown" when there is none or the delivery was not verified, so
forged traffic cannot mint endpoints), ``status`` what Upstream answered, ``error_code``
the verification result, ``latency_ms`` the delivery lag (provider timestamp to receipt)
or 0, ``response_bytes`` the body size, ``call_id`` the delivery or event id. Never a
secret, a signature or a body.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from monitoring import attempts, recorder
from monitoring.models import Source, WebhookEndpoint, WebhookSample

__all__ = [
    "UNKNOWN",
    "Delivery",
    "call_id_of",
    "event_of",
    "keep_sample",
    "record",
    "touch",
]

UNKNOWN = "unknown"
EVENT_TYPE_CAP = 100
CALL_ID_CAP = 32
# The endpoint row is written at most this often by the receiver (last delivery, cadence).
TOUCH_EVERY_S = 60
# A sample per event type is refreshed at most this often.
SAMPLE_EVERY_S = 3600
SAMPLE_CAP = 2048
# The JSON body is read for its id and type only up to this size.
PARSE_CAP = 1024 * 1024


class Delivery(NamedTuple):
    """One delivery as the receiver saw it, ready to become an attempt."""

    integration_id: int
    host: str
    scheme: str
    received: float
    status: int
    error_code: str
    event_type: str
    delivery_id: str
    timestamp: int | None
    size: int


def host_of(base_url: str) -> str:
    """The host rows of an integration's deliveries carry: its base URL's, else "webhook"."""
    try:
        return (urlsplit(base_url).hostname or "webhook") if base_url else "webhook"
    except ValueError:
        return "webhook"


def event_of(body: bytes) -> tuple[str, str]:
    """(id, type) from a JSON object body: "id" and "type" (or "event" / "event_type")."""
    if len(body) > PARSE_CAP or body.lstrip()[:1] != b"{":
        return "", ""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    found_id = data.get("id")
    found_type = next(
        (data[k] for k in ("type", "event", "event_type") if isinstance(data.get(k), str)), ""
    )
    return (found_id if isinstance(found_id, str | int) else "", found_type)


def call_id_of(delivery_id: str) -> str:
    """The id as stored: as sent when it fits the column (a UUID without its dashes, so
    GitHub's delivery GUIDs stay recognisable), else a hash of it."""
    if len(delivery_id) <= CALL_ID_CAP:
        return delivery_id
    compact = delivery_id.replace("-", "")
    if len(compact) <= CALL_ID_CAP:
        return compact
    return hashlib.sha256(delivery_id.encode("utf-8", "surrogateescape")).hexdigest()[:CALL_ID_CAP]


def _path(event_type: str) -> str:
    return _path_of(event_type[:EVENT_TYPE_CAP])


@lru_cache(maxsize=1024)
def _path_of(event_type: str) -> str:  # a provider sends few distinct types: cached
    cleaned = "".join(c for c in event_type if c.isprintable() and c not in "/?#")
    return "/" + (cleaned.strip() or UNKNOWN)


def record(delivery: Delivery) -> None:
    """Queue the delivery's attempt with the recorder (the request never writes the row)."""
    lag_ms = 0.0
    if delivery.timestamp is not None:
        lag_ms = max(0.0, (delivery.received - delivery.timestamp) * 1000.0)
    recorder.record(
        attempts.from_fields(
            integration_id=delivery.integration_id,
            source=Source.WEBHOOK.value,
            created=delivery.received,
            method="POST",
            scheme=delivery.scheme,
            host=delivery.host,
            path=_path(delivery.event_type),
            status=delivery.status,
            latency_ms=lag_ms,
            response_bytes=delivery.size,
            error_code=delivery.error_code,
            call_id=call_id_of(str(delivery.delivery_id)),
        )
    )


# --- the endpoint's own state ----------------------------------------------------------------

_counts: dict[int, int] = {}
_counts_lock = threading.Lock()


def touch(endpoint: WebhookEndpoint, now_s: float) -> None:
    """Note a verified delivery: ``last_delivery_at`` and the learned ``cadence_s``.

    Written at most once a ``TOUCH_EVERY_S`` per endpoint (a conditional UPDATE, so several
    processes do not each write). The cadence is a moving average of the gap between
    deliveries: the time since the stored ``last_delivery_at`` divided by the deliveries
    this process saw meanwhile (so with several processes it reads high, never low: the
    "webhooks stopped" rule errs towards patience).
    """
    with _counts_lock:
        seen = _counts[endpoint.pk] = _counts.get(endpoint.pk, 0) + 1
    last = endpoint.last_delivery_at
    if last is not None and now_s - last.timestamp() < TOUCH_EVERY_S:
        return  # nearly every delivery: no datetime made
    now = datetime.fromtimestamp(now_s, tz=UTC)
    cadence = endpoint.cadence_s
    if last is not None:
        gap = max(0.0, (now - last).total_seconds()) / seen
        cadence = gap if cadence is None else 0.8 * cadence + 0.2 * gap
    due = Q(last_delivery_at__isnull=True) | Q(
        last_delivery_at__lt=now - timedelta(seconds=TOUCH_EVERY_S)
    )
    try:
        WebhookEndpoint.objects.filter(due, pk=endpoint.pk).update(
            last_delivery_at=now, cadence_s=cadence
        )
    except DatabaseError:
        return  # a busy database costs one update, never the delivery
    with _counts_lock:
        _counts[endpoint.pk] = 0
    endpoint.last_delivery_at, endpoint.cadence_s = now, cadence


_sampled: dict[tuple[int, str], float] = {}


def keep_sample(endpoint: WebhookEndpoint, event_type: str, body: bytes, content_type: str) -> None:
    """The endpoint opted in: keep this body (scrubbed and capped) as its type's sample,
    at most once an hour per type and process."""
    key = (endpoint.pk, event_type[:EVENT_TYPE_CAP] or UNKNOWN)
    now = time.monotonic()
    if now - _sampled.get(key, -SAMPLE_EVERY_S) < SAMPLE_EVERY_S:
        return
    _sampled[key] = now
    text, _ = attempts.policy(endpoint.integration_id).scrub_body(
        body[: SAMPLE_CAP * 4], content_type or "application/json"
    )
    try:
        WebhookSample.objects.update_or_create(
            endpoint=endpoint,
            event_type=key[1],
            defaults={"body": text[:SAMPLE_CAP], "created": timezone.now()},
        )
    except DatabaseError:
        _sampled.pop(key, None)
