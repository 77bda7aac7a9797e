"""``POST /otlp/v1/traces``: OTLP/HTTP trace export in, attempts of source ``otlp`` out."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db.models import F
from django.http import HttpRequest, HttpResponse

from api import events, otlp
from api.auth import require_key
from api.problems import endpoint, problem
from monitoring import attempts
from monitoring.models import Integration, JobState

__all__ = ["MAX_BYTES", "export", "traces"]

# An SDK's default batch is 512 spans; a few KiB each leaves room. After decompression.
MAX_BYTES = 8 * 1024 * 1024


def _problem(status: int, title: str, detail: str, **headers: object) -> HttpResponse:
    return problem(
        status,
        detail,
        title=title,
        headers={name.replace("_", "-"): str(value) for name, value in headers.items()},
    )


def _read_body(request: HttpRequest, limit: int) -> bytes | HttpResponse:
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            return _problem(400, "Bad Content-Length", f"Content-Length {length[:20]!r}")
        if size > limit:
            return _problem(413, "Body too large", f"the limit is {limit} bytes")
        return request.read(size)
    if "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    # Django sees no Content-Length and hands the view an empty body; a server that decodes
    # chunked framing (gunicorn) says so with wsgi.input_terminated, so read to its end.
    if not meta.get("wsgi.input_terminated"):
        return _problem(
            411,
            "Length required",
            "this server cannot read chunked bodies; send Content-Length, or run Upstream "
            "under gunicorn or behind a proxy that buffers requests",
        )
    data = meta["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        return _problem(413, "Body too large", f"the limit is {limit} bytes")
    return data


def _count_ignored(ignored: dict[str, int]) -> None:
    for kind, n in ignored.items():
        name = f"otlp.ignored.{kind}"[:50]
        JobState.objects.get_or_create(name=name)
        JobState.objects.filter(name=name).update(value=F("value") + n)


def export(
    request: HttpRequest,
    *,
    may_write: Callable[[Integration], bool] | None = None,
    may_create: bool = False,
    store: Callable[[list[dict]], object],
) -> HttpResponse:
    """Take one ExportTraceServiceRequest; the caller has authenticated the sender, passes
    what it may write (``otlp.convert``) and how rows are made durable."""
    if request.method != "POST":
        return _problem(405, "Method not allowed", "POST an OTLP export", Allow="POST")
    media_type = request.content_type
    if media_type not in (otlp.PROTOBUF, otlp.JSON):
        return _problem(
            415, "Unsupported media type", "send application/x-protobuf or application/json"
        )
    limit = settings.UPSTREAM.get("OTLP_MAX_BYTES", MAX_BYTES)
    body = _read_body(request, limit)
    if isinstance(body, HttpResponse):
        return body
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    try:
        if encoding == "gzip":
            body = otlp.inflate(body, limit)
        elif encoding not in ("", "identity"):
            return _problem(415, "Unsupported encoding", f"Content-Encoding {encoding[:20]!r}")
        batch = otlp.convert(
            otlp.decode(body, media_type), may_write=may_write, may_create=may_create
        )
    except otlp.BadRequest as exc:
        return _problem(400, "Bad OTLP body", str(exc))
    if batch.attempts:
        # Durable before the answer, as for /api/v1/events: in the database, or the spool.
        store([attempts.to_row(attempt) for attempt in batch.attempts])
    batch.count_unmapped()
    _count_ignored(batch.ignored)
    return HttpResponse(otlp.answer(batch, media_type), content_type=media_type)


@endpoint("POST")
@require_key("ingest")
def traces(request: HttpRequest) -> HttpResponse:
    """``POST /otlp/v1/traces`` for a key of scope ``ingest``: it writes the integrations it
    lists (any when it lists none) and creates unknown ones only if allowed to."""
    key = request.api_key
    allowed = set(key.integrations.values_list("pk", flat=True))
    return export(
        request,
        may_write=(lambda integration: integration.pk in allowed) if allowed else None,
        may_create=key.allow_create,
        store=lambda rows: events.store(rows, key, ""),
    )
