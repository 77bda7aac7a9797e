"""POST /api/v1/events: validate each event, build attempts, store them durably at once."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from api.auth import require_key
from api.body import read_body, require_type
from api.models import BATCH_ID_RETAIN_DAYS, ApiKey, IngestBatch
from api.problems import Problem, endpoint, json_response
from monitoring import attempts, recorder, storage
from monitoring.models import Environment, Integration, Outcome, RecorderLoss, Source

logger = logging.getLogger(__name__)

# A locked database must not hold the sender for the project's long busy timeout: after
# this the batch goes to the spool instead.
LOCK_WAIT_MS = 2000
# How long a spooled batch's id is remembered in the cache: as long as a stored one's
# (its rows are replayed long before a sender gives up resending).
SPOOLED_BATCH_TTL_S = BATCH_ID_RETAIN_DAYS * 86_400
FUTURE_SLACK = timedelta(minutes=5)
_HEX = re.compile(r"[0-9a-fA-F]{8,16}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_OUTCOMES = frozenset(Outcome.values)
_INGEST = Source.INGEST.value  # an enum member's .value costs a call per event
_ENVIRONMENTS = frozenset(Environment.values)
_STORE_ERRORS = (OperationalError, InterfaceError)


class EventError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(event: dict, name: str, cap: int, *, required: bool = False) -> str | None:
    value = event.get(name)
    if value.__class__ is str and len(value) <= cap and not required:
        return value  # the usual case, decided at once (a field of every event)
    if value is None:
        if required:
            raise EventError(name, "is required")
        return None
    if not isinstance(value, str):
        raise EventError(name, "must be a string")
    if required and not value.strip():
        raise EventError(name, "must not be empty")
    if len(value) > cap:
        raise EventError(name, f"must be at most {cap} characters")
    return value


def _number(event: dict, name: str, *, integer: bool = False, low=0, high=None) -> Any:
    value = event.get(name)
    if value is None:
        return None
    kind = value.__class__
    # The usual case at once: an int (or a float where one may be) within bounds. NaN and
    # infinity fail the comparison, bool is its own class: both take the checks below.
    if (
        (kind is int or (kind is float and not integer))
        and high is not None
        and low <= value <= high
    ):
        return value
    if integer and kind is float and value.is_integer():
        value = int(value)  # JSON Schema's integer: 1914.0 is one
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise EventError(name, "must be an integer" if integer else "must be a number")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise EventError(name, f"must be between {low} and {high}" if high else f"must be ≥ {low}")
    return value


def _time(event: dict, now: datetime) -> datetime:
    raw = _text(event, "time", 64)
    if raw is None:
        return now
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise EventError("time", "must be an RFC 3339 date-time") from None
    if when.tzinfo is None:
        raise EventError("time", "must carry a UTC offset (e.g. Z)")
    if when > now + FUTURE_SLACK:
        raise EventError("time", "is in the future")
    return when


def parse_event(event: Any, now: datetime) -> dict:
    """The ``from_fields`` keywords of one event (all but the integration); EventError
    names the first bad field."""
    if not isinstance(event, dict):
        raise EventError("", "an event must be an object")
    fields: dict[str, Any] = {"source": _INGEST, "created": _time(event, now)}
    method = _text(event, "method", 10, required=True)
    if not method.isascii() or not method.isalpha():
        raise EventError("method", "must be an HTTP method such as GET")
    fields["method"] = method.upper()
    url = _text(event, "url", 4096)
    if url is not None:
        if not url.lower().startswith(("http://", "https://")):
            raise EventError("url", "must be an absolute http(s) URL")
        fields["url"] = url  # from_fields drops userinfo and splits the rest
    else:
        host = _text(event, "host", 255)
        path = _text(event, "path", 4096)
        if not host or path is None:
            raise EventError("url", "give url, or host and path")
        if "@" in host:
            host = host.rsplit("@", 1)[1]  # userinfo never enters a row
        if not path.startswith("/"):
            raise EventError("path", "must start with /")
        path, _, query = path.partition("?")
        scheme = event.get("scheme", "https")
        if scheme not in ("http", "https"):
            raise EventError("scheme", "must be http or https")
        fields.update(host=host.lower(), path=path, query=query or None, scheme=scheme)
    status = _number(event, "status", integer=True, low=100, high=599)
    outcome = event.get("outcome")
    if outcome is not None and outcome not in _OUTCOMES:
        raise EventError("outcome", f"must be one of {', '.join(sorted(_OUTCOMES))}")
    if status is None and outcome is None:
        raise EventError("outcome", "is required when status is null (a transport error)")
    fields["status"], fields["outcome"] = status, outcome
    latency = _number(event, "latency_ms", high=86_400_000)
    if latency is None:
        raise EventError("latency_ms", "is required")
    fields["latency_ms"] = float(latency)
    for name in ("request_bytes", "response_bytes"):
        fields[name] = _number(event, name, integer=True, high=2**31 - 1)
    headers = event.get("response_headers")
    if headers is not None:
        if not isinstance(headers, dict) or len(headers) > 200:
            raise EventError("response_headers", "must be an object of at most 200 headers")
        kept = {}
        for name, value in headers.items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise EventError("response_headers", f"header {name[:40]!r} must be a string")
            kept[str(name)[:100]] = str(value)[:2000]
        fields["response_headers"] = kept
        content_type = next((v for k, v in kept.items() if k.lower() == "content-type"), None)
        if content_type:
            fields["content_type"] = content_type
    body = _text(event, "error_body", 1024 * 1024)
    if body:
        fields["error_body"] = body
    fields["call_id"] = _text(event, "call_id", 32) or ""
    fields["attempt"] = _number(event, "attempt", integer=True, low=1, high=1000) or 1
    fields["backoff_ms"] = float(_number(event, "backoff_ms", high=86_400_000) or 0.0)
    # Issue 13: a body's timing as the SDK measured it, and why a stream broke.
    for name in ("first_byte_ms", "duration_ms"):
        value = _number(event, name, high=86_400_000)
        if value is not None:
            fields[name] = float(value)
    streamed = event.get("streamed")
    if streamed is not None and not isinstance(streamed, bool):
        raise EventError("streamed", "must be true or false")
    if streamed:
        fields["streamed"] = True
    stream_error = _text(event, "stream_error", 100)
    if stream_error:
        fields["error_code"] = stream_error
    # Issue 18: the caller's credential fingerprint and version header name (never values).
    fingerprint = _text(event, "key_fingerprint", 16)
    if fingerprint:
        if not _HEX.fullmatch(fingerprint):
            raise EventError("key_fingerprint", "must be 8 to 16 hex characters")
        fields["key_fingerprint"] = fingerprint.lower()
    version_header = _text(event, "version_header", 64)
    if version_header:
        if not _HEADER_NAME.fullmatch(version_header):
            raise EventError("version_header", "must be a header name")
        fields["version_header"] = version_header
    token_age = _number(event, "token_age_s", high=10 * 365 * 86_400)
    if token_age is not None:
        fields["token_age_s"] = float(token_age)
    # Issue 14: a bulk request's item count (the writer flags one over the preset's advice),
    # and a small 2xx body's scrubbed sample (the writer reads it for an API that answers
    # errors with 200 and keeps it only when it is one).
    batch_size = _number(event, "batch_size", integer=True, high=2**31 - 1)
    if batch_size is not None:
        fields["batch_size"] = batch_size
    ok_body = _text(event, "ok_body", 16 * 1024)
    if ok_body:
        fields["ok_body"] = ok_body
    return fields


class _Integrations:
    """Resolves (slug, environment) for one request, with the key's permissions."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.allowed = set(key.integrations.values_list("pk", flat=True))
        self.found: dict[tuple[str, str | None], int | EventError] = {}
        # The same answers by the event's raw (integration, environment) values.
        self.seen: dict[tuple, int | EventError] = {}

    def get(self, event: dict) -> int:
        """The id of the event's integration; EventError if it is bad or not the key's."""
        raw = (event.get("integration"), event.get("environment"))
        try:
            found = self.seen.get(raw)  # the same pair as the event before, nearly always
        except TypeError:  # an unhashable value: the checks below say what is wrong
            found = None
        if found is None:
            slug = _text(event, "integration", 100, required=True).strip()
            environment = raw[1]
            if environment is not None and (
                not isinstance(environment, str) or environment not in _ENVIRONMENTS
            ):
                choices = ", ".join(sorted(_ENVIRONMENTS))
                raise EventError("environment", f"must be one of {choices}")
            name = (slug, environment)
            if name not in self.found:
                resolved = self._resolve(slug, environment)
                self.found[name] = resolved if isinstance(resolved, EventError) else resolved.pk
            found = self.seen[raw] = self.found[name]
        if found.__class__ is EventError:
            raise found
        return found

    def _resolve(self, slug: str, environment: str | None) -> Integration | EventError:
        matches = Integration.objects.filter(slug=slug)
        if environment:
            matches = matches.filter(environment=environment)
        matches = list(matches[:2])
        if len(matches) > 1:
            return EventError("environment", f"integration {slug!r} has several environments")
        if matches:
            integration = matches[0]
            if self.allowed and integration.pk not in self.allowed:
                return EventError("integration", f"this API key may not write {slug!r}")
            return integration
        if not self.key.allow_create:
            return EventError("integration", f"unknown integration {slug!r}")
        try:
            return attempts.resolve_integration(slug, environment)
        except ValueError as exc:
            return EventError("integration", str(exc))


def _payload(request: HttpRequest) -> tuple[str, list, int]:
    require_type(request, "application/json")
    data = read_body(request)
    try:
        payload = json.loads(data)
    except UnicodeDecodeError:
        raise Problem(400, "The body is not UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise Problem(
            400,
            f"Malformed JSON at line {exc.lineno}, column {exc.colno} (byte {exc.pos}): {exc.msg}.",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from None
    if not isinstance(payload, dict):
        raise Problem(400, 'The body must be an object: {"batch_id": …, "events": […]}.')
    batch_id = payload.get("batch_id", "")
    if not isinstance(batch_id, str) or len(batch_id) > 100:
        raise Problem(
            400,
            "batch_id must be a string of at most 100 characters.",
            errors=[{"index": None, "field": "batch_id", "message": "must be a short string"}],
        )
    events = payload.get("events")
    if not isinstance(events, list):
        raise Problem(
            400,
            "events must be an array.",
            errors=[{"index": None, "field": "events", "message": "must be an array"}],
        )
    cap = settings.UPSTREAM["API_MAX_EVENTS"]
    if len(events) > cap:
        raise Problem(413, f"At most {cap:,} events per request; this one has {len(events):,}.")
    # Events the sender had to drop (its queue or spool was full) since its last batch.
    dropped = payload.get("dropped", 0)
    if dropped.__class__ is float and dropped.is_integer():
        dropped = int(dropped)  # JSON Schema's integer: 1914.0 is one
    if isinstance(dropped, bool) or not isinstance(dropped, int) or not 0 <= dropped < 2**31:
        raise Problem(
            400,
            "dropped must be a non-negative integer.",
            errors=[{"index": None, "field": "dropped", "message": "must be an integer ≥ 0"}],
        )
    return batch_id.strip(), events, dropped


def _dropped_loss(key: ApiKey, dropped: int) -> RecorderLoss:
    """A sender's losses made visible: a RecorderLoss row (listed in the admin) naming the
    key."""
    reason = f"API key {key.prefix}… ({key.name}) dropped {dropped:,} events before sending"
    return RecorderLoss(rows=dropped, reason=reason[:500])


def _record_dropped(key: ApiKey, dropped: int) -> None:
    """The drop count of a batch that went to the spool, written on its own when it can be
    (a stored batch's is written in its transaction, by ``store``)."""
    try:
        _dropped_loss(key, dropped).save()
    except _STORE_ERRORS:
        logger.warning("could not record %d events dropped by key %s", dropped, key.prefix)


def _spooled_key(key: ApiKey, batch_id: str) -> str:
    return f"api:spooled:{key.pk}:{batch_id}"


def seen(key: ApiKey, batch_id: str) -> int | None:
    """Events accepted earlier under this batch id, or None if it is new."""
    done = IngestBatch.objects.filter(key=key, batch_id=batch_id).values_list("accepted", flat=True)
    for accepted in done:
        return accepted
    return caches["default"].get(_spooled_key(key, batch_id))


def _limit_lock_wait(cursor) -> None:
    if connection.vendor == "sqlite":
        # Before the transaction: under transaction_mode IMMEDIATE its BEGIN is where
        # SQLite waits for the write lock.
        cursor.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")


def _limit_lock_wait_in_transaction(cursor) -> None:
    if connection.vendor == "postgresql":
        cursor.execute("SET LOCAL lock_timeout = %s", [f"{LOCK_WAIT_MS}ms"])


def _restore_lock_wait() -> None:
    if connection.vendor == "sqlite":
        timeout_ms = int(settings.DATABASES["default"].get("OPTIONS", {}).get("timeout", 20) * 1000)
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")


def store(rows: list[dict], key: ApiKey, batch_id: str, dropped: int = 0) -> str:
    """Make rows durable: "stored" (rows, rollup, batch id and the sender's drop count in one
    transaction: a worker killed after the commit, whose batch is then resent and answered
    as a duplicate, has lost nothing), "duplicate" (another request stored this batch id
    first), or "spooled" (the database was locked or away: the recorder's spool holds them
    and replays them; the id waits in the cache).

    Raises Problem 503 if neither the database nor the spool would take them.
    """
    try:
        try:
            with connection.cursor() as cursor:
                _limit_lock_wait(cursor)
            with transaction.atomic():
                with connection.cursor() as cursor:
                    _limit_lock_wait_in_transaction(cursor)
                if batch_id:
                    IngestBatch.objects.create(key=key, batch_id=batch_id, accepted=len(rows))
                storage.insert_rows(rows, rollup=True)
                if dropped:
                    _dropped_loss(key, dropped).save()
        finally:
            _restore_lock_wait()
    except IntegrityError:
        if batch_id and IngestBatch.objects.filter(key=key, batch_id=batch_id).exists():
            return "duplicate"
        raise
    except _STORE_ERRORS:
        if not recorder.spill_now(rows):
            raise Problem(
                503,
                "Neither the database nor the spool could store the batch.",
                headers={"Retry-After": "5"},
            ) from None
        if batch_id:
            caches["default"].set(_spooled_key(key, batch_id), len(rows), SPOOLED_BATCH_TTL_S)
        return "spooled"
    return "stored"


@endpoint("POST")
@require_key("ingest")
def ingest(request: HttpRequest) -> HttpResponse:
    key = request.api_key
    batch_id, events, dropped = _payload(request)
    if batch_id:
        earlier = seen(key, batch_id)
        if earlier is not None:
            return _answer(earlier, 0, True, [])
    now = timezone.now()
    integrations = _Integrations(key)
    rows, errors = [], []
    for index, event in enumerate(events):
        try:
            fields = parse_event(event, now)
            fields["integration"] = integrations.get(event)
            rows.append(attempts.to_row(attempts.from_fields(**fields)))
        except EventError as exc:
            errors.append({"index": index, "field": exc.field, "message": exc.message})
    # A batch carrying only a drop count is stored too: its batch id makes the count once.
    outcome = store(rows, key, batch_id, dropped) if rows or dropped else "stored"
    if outcome == "duplicate":
        return _answer(seen(key, batch_id) or 0, 0, True, [])
    if dropped and outcome == "spooled":
        _record_dropped(key, dropped)
    return _answer(len(rows), len(errors), False, errors)


def _answer(accepted: int, rejected: int, duplicate: bool, errors: list) -> HttpResponse:
    body = {"accepted": accepted, "rejected": rejected, "duplicate": duplicate, "errors": errors}
    return json_response(body, 202)
