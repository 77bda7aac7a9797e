"""``POST /otlp/v1/traces``: OTLP/HTTP trace export in, attempts of source ``otlp`` out."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.db.models import F
from django.http import HttpRequest, HttpResponse

from api import events, otlp
from api.auth import require_key
from api.body import read_body
from api.problems import Problem, endpoint, problem
from monitoring import attempts
from monitoring.models import Integration, JobState

__all__ = ["DEDUPE_WINDOW_S", "MAX_BYTES", "export", "traces"]

# An SDK's default batch is 512 spans; a few KiB each leaves room. After decompression.
MAX_BYTES = 8 * 1024 * 1024
# An exporter gives up on an export within minutes (the Python SDK after six tries, about a
# minute; a collector's queue after five by default): an hour covers every retry.
DEDUPE_WINDOW_S = 3600


def _problem(status: int, title: str, detail: str, **headers: object) -> HttpResponse:
    return problem(
        status,
        detail,
        title=title,
        headers={name.replace("_", "-"): str(value) for name, value in headers.items()},
    )


def _count_ignored(ignored: dict[str, int]) -> None:
    for kind, n in ignored.items():
        name = f"otlp.ignored.{kind}"[:50]
        JobState.objects.get_or_create(name=name)
        JobState.objects.filter(name=name).update(value=F("value") + n)


def _drop_seen(batch: otlp.Batch, sender: str) -> list[str]:
    """Drop the attempts whose spans this sender's earlier exports stored within the window
    (an exporter, or a collector between, that re-batches on retry); the cache keys of the
    spans that remain, to mark once they are stored."""
    keys = [f"otlp:span:{sender}:{span_id.hex()}" if span_id else "" for span_id in batch.span_ids]
    seen = caches["default"].get_many([key for key in keys if key])
    if seen:
        kept = [i for i, key in enumerate(keys) if key not in seen]
        batch.attempts = [batch.attempts[i] for i in kept]
        batch.span_ids = [batch.span_ids[i] for i in kept]
        keys = [keys[i] for i in kept]
    return [key for key in keys if key]


def export(
    request: HttpRequest,
    *,
    may_write: Callable[[Integration], bool] | None = None,
    may_create: bool = False,
    store: Callable[[list[dict], str], str],
    sender: str = "-",
    seen: Callable[[str], bool] = lambda batch_id: False,
) -> HttpResponse:
    """Take one ExportTraceServiceRequest; the caller has authenticated the sender, passes
    what it may write (``otlp.convert``), how rows are made durable (``events.store``'s
    answer) and whether a batch id was stored before.

    An exporter that retries an export (its answer was lost, or came too late) sends the
    same spans again; they are stored once. The export's span fingerprint is its batch id,
    stored in the same transaction as its rows (exact, across processes, and while spooled);
    span ids stored in the last ``DEDUPE_WINDOW_S`` (per ``sender``, in the cache) catch
    the same spans in a differently cut batch.
    """
    if request.method != "POST":
        return _problem(405, "Method not allowed", "POST an OTLP export", Allow="POST")
    media_type = request.content_type
    if media_type not in (otlp.PROTOBUF, otlp.JSON):
        return _problem(
            415, "Unsupported media type", "send application/x-protobuf or application/json"
        )
    limit = settings.UPSTREAM.get("OTLP_MAX_BYTES", MAX_BYTES)
    try:
        body = read_body(request, limit)
    except Problem as exc:
        return exc.response()
    try:
        message = otlp.decode(body, media_type)
    except otlp.BadRequest as exc:
        return _problem(400, "Bad OTLP body", str(exc))
    batch_id = f"otlp:{otlp.fingerprint(message)}"
    if seen(batch_id):
        return HttpResponse(otlp.answer(otlp.Batch(), media_type), content_type=media_type)
    batch = otlp.convert(message, may_write=may_write, may_create=may_create)
    fresh = _drop_seen(batch, sender)
    if batch.attempts:
        # Durable before the answer, as for /api/v1/events: in the database, or the spool.
        rows = [attempts.to_row(attempt) for attempt in batch.attempts]
        if store(rows, batch_id) == "duplicate":
            # A retry that raced its original in: the original counts everything.
            return HttpResponse(otlp.answer(otlp.Batch(), media_type), content_type=media_type)
        caches["default"].set_many(dict.fromkeys(fresh, 1), DEDUPE_WINDOW_S)
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
        store=lambda rows, batch_id: events.store(rows, key, batch_id),
        sender=str(key.pk),
        seen=lambda batch_id: events.seen(key, batch_id) is not None,
    )
