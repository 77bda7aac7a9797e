"""OTLP/HTTP trace export: decode a request body (protobuf or JSON) into Attempts.

Only CLIENT spans with HTTP semantic conventions (the stable attribute names and the older
ones) become attempts, with source ``otlp``; other spans are ignored and counted. The
integration comes from an ``upstream.integration`` attribute (span over resource), else
from the integrations' host patterns (``monitoring.hostmap``); spans for hosts nobody
claims are counted in ``UnmappedHost``. This module knows no HTTP framework: the view
hands it bytes and headers and sends back what ``answer`` encodes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from monitoring import attempts, hostmap
from monitoring.models import Environment, Integration, Outcome, Source, UnmappedHost

__all__ = [
    "JSON",
    "PROTOBUF",
    "BadRequest",
    "Batch",
    "answer",
    "convert",
    "decode",
    "fingerprint",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
_KIND_NAMES = {
    value: name.removeprefix("SPAN_KIND_").lower() for name, value in Span.SpanKind.items()
}
_ERROR = 2  # Status.STATUS_CODE_ERROR

# error.type values (exception class names, mostly) → the transport outcome they mean.
_ERROR_TYPES = (
    ("timeout", Outcome.TIMEOUT),
    ("ssl", Outcome.TLS_ERROR),
    ("tls", Outcome.TLS_ERROR),
    ("certificate", Outcome.TLS_ERROR),
    ("connect", Outcome.CONNECT_ERROR),
    ("protocol", Outcome.PROTOCOL_ERROR),
    ("read", Outcome.READ_ERROR),
)
_HEADER_PREFIX = "http.response.header."


class BadRequest(ValueError):
    """The body is not an OTLP trace export this endpoint can read (→ 400)."""


def _hex_ids_to_base64(value: Any) -> None:
    # OTLP JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64.
    if isinstance(value, dict):
        for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            raw = value.get(key)
            if isinstance(raw, str):
                try:
                    value[key] = base64.b64encode(bytes.fromhex(raw)).decode()
                except ValueError:
                    raise BadRequest(f"{key} is not hex: {raw[:40]!r}") from None
        for item in value.values():
            _hex_ids_to_base64(item)
    elif isinstance(value, list):
        for item in value:
            _hex_ids_to_base64(item)


def decode(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    """The export request in ``body`` (already inflated), by media type; BadRequest if not."""
    message = ExportTraceServiceRequest()
    if media_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise BadRequest(f"body is not an ExportTraceServiceRequest: {exc}") from None
        return message
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object with resourceSpans")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(f"body is not OTLP JSON: {exc}") from None
    return message


def fingerprint(message: ExportTraceServiceRequest) -> str:
    """A digest of the export's span identities (trace id + span id, in any order): an
    exporter's retry of the same export has the same one. A span without valid ids (OTLP
    requires them; hand-made JSON may lack them) counts by its whole content instead."""
    ids = sorted(
        _identity(span) or span.SerializeToString(deterministic=True)
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    )
    digest = hashlib.sha256()
    for one in ids:
        digest.update(len(one).to_bytes(4, "big") + one)
    return digest.hexdigest()


def _identity(span: Span) -> bytes:
    # An all-zero or missing id is invalid in OTLP and identifies nothing: b"".
    if span.trace_id.strip(b"\0") and span.span_id.strip(b"\0"):
        return span.trace_id + span.span_id
    return b""


def _value(any_value: Any) -> Any:
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if which in ("kvlist_value", "bytes_value"):
        return None  # no HTTP convention we read uses them
    return getattr(any_value, which)


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value not in (None, ""):
            return value
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _environment(attrs: dict[str, Any]) -> str | None:
    name = _first(attrs, "upstream.environment", "deployment.environment.name")
    name = name or attrs.get("deployment.environment")
    return name if name in Environment.values else None


def _transport_outcome(error_type: Any) -> str:
    lowered = str(error_type or "").lower()
    for needle, outcome in _ERROR_TYPES:
        if needle in lowered:
            return outcome
    return Outcome.OTHER_ERROR


@dataclass
class Batch:
    """What one export request became."""

    attempts: list[attempts.Attempt] = field(default_factory=list)
    #: Each attempt's span identity (trace id + span id), in the same order; b"" if invalid.
    span_ids: list[bytes] = field(default_factory=list)
    #: Spans refused (bad HTTP attributes, an integration the key may not write …).
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    #: Non-CLIENT or non-HTTP spans, by kind: ignored, as the endpoint promises.
    ignored: Counter = field(default_factory=Counter)
    #: Host → (spans, service.name) for CLIENT HTTP spans no integration claims.
    unmapped: dict[str, list] = field(default_factory=dict)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5 and message not in self.errors:
            self.errors.append(message)

    def count_unmapped(self) -> None:
        """Store the unmapped-host counts (one row per host)."""
        for host, (spans, service) in self.unmapped.items():
            UnmappedHost.count(host, spans, service)


def convert(
    message: ExportTraceServiceRequest,
    *,
    may_write: Callable[[Integration], bool] | None = None,
    may_create: bool = False,
) -> Batch:
    """The attempts in an export request, and what was rejected, ignored or unmapped.

    ``may_write`` says whether the sender may write an integration (an API key's list);
    ``may_create`` whether an ``upstream.integration`` slug that names none creates it.
    """
    batch = Batch()
    by_slug: dict[tuple[str, str | None], Integration | str] = {}
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.kind != _CLIENT:
                    batch.ignored[_KIND_NAMES.get(span.kind, "unspecified")] += 1
                    continue
                attrs = {**resource, **_attributes(span.attributes)}
                if _first(attrs, "http.request.method", "http.method") is None:
                    batch.ignored["client_not_http"] += 1
                    continue
                _convert_span(span, attrs, service, batch, by_slug, may_write, may_create)
    return batch


def _integration_of(
    attrs: dict[str, Any],
    host: str,
    by_slug: dict,
    may_write: Callable[[Integration], bool] | None,
    may_create: bool,
) -> Integration | int | str | None:
    """The span's integration (object or id), None if unmapped, or a rejection message."""
    environment = _environment(attrs)
    slug = attrs.get("upstream.integration")
    if not slug:
        found_id = hostmap.resolve(host, environment)
        if found_id is None or may_write is None:
            return found_id
        integration = by_slug.get(("#", found_id))
        if integration is None:
            integration = by_slug[("#", found_id)] = Integration.objects.get(pk=found_id)
        return integration if may_write(integration) else f"may not write {integration.slug!r}"
    key = (str(slug), environment)
    known = by_slug.get(key)
    if known is None:
        matches = list(Integration.objects.filter(slug=key[0], **_env_filter(environment))[:2])
        if len(matches) == 1:
            known = matches[0]
        elif matches:
            known = (
                f"integration {key[0]!r} exists in several environments; set upstream.environment"
            )
        elif may_create:
            try:
                known = attempts.resolve_integration(key[0], environment)
            except ValueError as exc:
                known = str(exc)
        else:
            known = f"unknown integration {key[0]!r}"
        by_slug[key] = known
    if isinstance(known, Integration) and may_write is not None and not may_write(known):
        return f"may not write {known.slug!r}"
    return known


def _env_filter(environment: str | None) -> dict[str, str]:
    return {"environment": environment} if environment else {}


def _convert_span(
    span: Span,
    attrs: dict[str, Any],
    service: str,
    batch: Batch,
    by_slug: dict,
    may_write: Callable[[Integration], bool] | None,
    may_create: bool,
) -> None:
    method = str(_first(attrs, "http.request.method", "http.method"))
    url = _first(attrs, "url.full", "http.url")
    host = _first(attrs, "server.address", "net.peer.name", "http.host")
    if url is None and host is None:
        batch.reject("a CLIENT HTTP span needs url.full or server.address")
        return
    fields: dict[str, Any] = {}
    if url is not None:
        fields["url"] = str(url)
    if host is not None:
        fields["host"] = str(host).lower()
    else:
        fields["host"] = (urlsplit(str(url)).hostname or "").lower()
    if not fields["host"]:
        batch.reject("a CLIENT HTTP span's URL has no host")
        return
    template = attrs.get("url.template")
    if template:
        fields["path"] = str(template)
    elif url is None:
        fields["path"] = str(_first(attrs, "url.path", "http.target") or "/")
    integration = _integration_of(attrs, fields["host"], by_slug, may_write, may_create)
    if integration is None:
        entry = batch.unmapped.setdefault(fields["host"], [0, service])
        entry[0] += 1
        entry[1] = service
        return
    if isinstance(integration, str):
        batch.reject(integration)
        return
    status = _int(_first(attrs, "http.response.status_code", "http.status_code"))
    if status is not None and not 100 <= status <= 599:
        batch.reject(f"HTTP status {status} is out of range")
        return
    outcome = None
    message = None
    if status is None:
        error_type = attrs.get("error.type")
        if error_type is None and span.status.code != _ERROR:
            batch.reject("a CLIENT HTTP span needs a status code or error.type")
            return
        outcome = _transport_outcome(error_type)
        message = span.status.message or (str(error_type) if error_type else None)
    resend = _int(_first(attrs, "http.request.resend_count")) or 0
    headers = {
        name[len(_HEADER_PREFIX) :]: ", ".join(map(str, value))
        if isinstance(value, list)
        else str(value)
        for name, value in attrs.items()
        if name.startswith(_HEADER_PREFIX) and value is not None
    }
    # Issue 14: a bulk send's item count, under OpenTelemetry's messaging convention.
    batch_size = _int(attrs.get("messaging.batch.message_count"))
    if batch_size is not None and batch_size >= 0:
        fields["batch_size"] = batch_size
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    try:
        attempt = attempts.from_fields(
            integration=integration,
            source=Source.OTLP.value,
            created=None if not start else _datetime(start),
            latency_ms=max(0.0, (end - start) / 1e6) if end and start else 0.0,
            method=method.upper()[:10],
            status=status,
            outcome=outcome,
            error_message=message,
            request_bytes=_int(
                _first(attrs, "http.request.body.size", "http.request_content_length")
            ),
            response_bytes=_int(
                _first(attrs, "http.response.body.size", "http.response_content_length")
            ),
            response_headers=headers or None,
            call_id=span.trace_id.hex()[:32],
            attempt=resend + 1,
            **fields,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        batch.reject(f"span not usable: {exc}")
        return
    batch.attempts.append(attempt)
    batch.span_ids.append(_identity(span))


def _datetime(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)


def answer(batch: Batch, media_type: str) -> bytes:
    """The ExportTraceServiceResponse, in the request's encoding, with a partial success
    when spans were rejected (and only then, as the spec asks)."""
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = batch.rejected
        response.partial_success.error_message = "; ".join(batch.errors)[:1000]
    if media_type == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()
