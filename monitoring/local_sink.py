"""LocalSink: inside Upstream, the SDK's events go to the in-process recorder, not over HTTP.

``monitoring.apps`` makes it the process's default sink, so ``upstream_client`` clients used
by probes, the demo or any Django project with the ``monitoring`` app record like
``monitoring.client`` does. ``submit`` / ``submit_record`` run on the caller's thread: they
turn the event (or the capture's record of a response, without building its event) into an
``Attempt`` and queue it; the integration is named by (slug, environment) and resolved by
the recorder's writer, so no database is touched.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from monitoring import attempts, parsing, recorder
from monitoring.attempts import Attempt
from monitoring.client import meter_attempt
from monitoring.models import Source

__all__ = ["LocalSink"]

logger = logging.getLogger(__name__)

# What the writer parses (the SDK keeps a little more: media type, request ids).
_PARSED = frozenset(("content-length", *parsing.PARSED_HEADERS))
_new_attempt = tuple.__new__  # Attempt's C constructor (slots in Attempt's order)


class LocalSink:
    """A ``upstream_client.sink.Sink`` that records through ``monitoring.recorder``.

    The first event of an integration starts a short-lived thread that loads (or creates)
    its policy (``attempts.policy_for``); until it is loaded, attempts carry (slug,
    environment) and the writer resolves them.
    """

    def __init__(self, source: str = Source.CLIENT) -> None:
        if source not in Source.values:
            raise ValueError(f"source must be one of {', '.join(Source.values)}")
        self.source = str(source)
        self._loading: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()

    def _named(self, name: tuple[str, str | None]) -> tuple[Any, Any]:
        """(policy or None, the ident a row carries) of an integration named by the caller."""
        # attempts' own index of named policies (a dict read, never the database): it is
        # emptied by clear_policies and refreshed by the writer, so never stale here.
        found = attempts._BY_NAME.get(name)
        if found is None:
            self._load(name)
            return None, (*name, "")
        return found, found.ident

    def submit(self, event: dict[str, Any]) -> None:
        try:
            _, ident = self._named((event["integration"], event.get("environment")))
            attempt = to_attempt(event, self.source, ident)
        except Exception as exc:  # a sink never raises into the caller's call
            logger.warning("Upstream: an SDK event was not recorded (%s)", type(exc).__name__)
            return
        recorder.get().record(attempt)

    def submit_record(self, record: Any) -> None:
        """A capture record (``upstream_client._capture.Meter``) of an httpx response: its
        Attempt is built from the record without an event dict; any other record (or a
        failure's) through its event."""
        try:
            capture = record._capture
            found, ident = self._named((capture.integration, capture.environment))
            attempt = meter_attempt(record, found or attempts._DEFAULT_POLICY, ident, self.source)
            if attempt is None:
                attempt = to_attempt(record.event(), self.source, ident)
        except Exception as exc:  # a sink never raises into the caller's call
            logger.warning("Upstream: an SDK event was not recorded (%s)", type(exc).__name__)
            return
        recorder.get().record(attempt)

    def _load(self, name: tuple[str, str | None]) -> None:
        with self._lock:
            if name in self._loading:
                return
            self._loading.add(name)

        def load() -> None:
            from django.db import connection

            try:
                attempts.policy_for(*name)
            except Exception as exc:
                logger.warning("Upstream: integration %r not loaded (%s)", name[0], exc)
            finally:
                connection.close()
                with self._lock:
                    self._loading.discard(name)

        threading.Thread(target=load, name="upstream-local-sink-load", daemon=True).start()


def to_attempt(event: dict[str, Any], source: str = Source.CLIENT, ident: Any = None) -> Attempt:
    """The ``Attempt`` of one SDK event (already redacted on the SDK's side; the writer
    templates and scrubs again with the integration's policy)."""
    parts = urlsplit(event["url"])
    scheme = parts.scheme or "https"
    port = parts.port
    if port == (443 if scheme == "https" else 80):
        port = None
    headers = event.get("response_headers")
    kept = None
    content_type = None
    if headers:
        kept = [
            (name.encode("latin-1", "replace"), str(value).encode("latin-1", "replace"))
            for name, value in headers.items()
            if name in _PARSED
        ]
        content_type = headers.get("content-type")
    status = event.get("status")
    body = event.get("error_body")
    message = None
    if body and status is None:
        message, body = body[:500], None  # a transport error: its message, not a body
    given: dict[str, Any] = {}
    for name in ("first_byte_ms", "duration_ms"):
        value = event.get(name)
        if value is not None:
            given[name] = value
    if event.get("streamed"):
        given["streamed"] = True
    if event.get("stream_error"):
        given["error_code"] = str(event["stream_error"])[:100]
    for name in ("key_fingerprint", "version_header", "token_age_s", "batch_size", "ok_body"):
        value = event.get(name)
        if value is not None:
            given[name] = value
    when = event.get("time")
    created = datetime.fromisoformat(when) if when else datetime.now(UTC)
    return _new_attempt(Attempt, (
        ident or (event["integration"], event.get("environment"), ""), source, created,
        float(event["latency_ms"]), event["method"], scheme, parts.hostname or "", port,
        parts.path or "/", parts.query or None, status, event.get("outcome"),
        event.get("request_bytes"), event.get("response_bytes"), kept,
        event.get("call_id") or "", event.get("attempt") or 1, event.get("backoff_ms") or 0.0,
        message, body, (content_type or "").split(";", 1)[0].strip() or None, given or None,
    ))  # fmt: skip
