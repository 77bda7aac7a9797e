"""The request log explorer: validated filters, keyset pages newest first, one row's detail."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from urllib.parse import urlencode

from django import forms
from django.db.models import Q, QuerySet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard.access import role_required
from dashboard.forms import DEFAULT_RANGE, BadInput, LogFilterForm, clean_or_raise, encode_cursor
from dashboard.views import bad_input, is_partial, render_page
from monitoring.models import Integration, Outcome, RequestLog
from monitoring.roles import Action

PAGE_SIZE = 50

# What a row in the list needs; the detail view loads the rest.
LIST_FIELDS = [
    "id",
    "created",
    "integration_id",
    "source",
    "method",
    "path",
    "status",
    "outcome",
    "latency_ms",
    "error_code",
    "call_id",
    "attempt",
    "batch_size",
    "flags",
]


def filtered(data: dict) -> QuerySet[RequestLog]:
    """Rows matching the filters inside the time window, newest first (no COUNT, ever)."""
    window = data["window"]
    qs = RequestLog.objects.filter(created__gte=window.start, created__lt=window.end)
    if data.get("integration"):
        qs = qs.filter(integration=data["integration"])
    if data.get("source"):
        qs = qs.filter(source=data["source"])
    outcome = data.get("outcome")
    if outcome == "failed":
        # Same shape as the partial index reqlog_failures_time's condition.
        qs = qs.filter(~Q(outcome=Outcome.OK))
    elif outcome:
        qs = qs.filter(outcome=outcome)
    if data.get("status") is not None:
        qs = qs.filter(status=data["status"])
    for name in ("method", "path", "error_code", "call_id"):
        if data.get(name):
            qs = qs.filter(**{name: data[name]})
    if data.get("q"):
        q = data["q"]
        qs = qs.filter(
            Q(path__icontains=q)
            | Q(error_code__icontains=q)
            | Q(error_message__icontains=q)
            | Q(flags__icontains=q)  # batch_too_large: the scorecard's batching evidence
        )
    return qs.order_by("-created", "-id")


def page_after(qs: QuerySet[RequestLog], position) -> tuple[list[RequestLog], str | None]:
    """One page strictly after `position` (created, id) in (created DESC, id DESC) order."""
    if position is not None:
        created, pk = position
        # The created <= bound lets the (…, created, id) indexes seek; the OR settles ties.
        qs = qs.filter(created__lte=created).filter(Q(created__lt=created) | Q(id__lt=pk))
    rows = list(qs.only(*LIST_FIELDS)[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    cursor = encode_cursor(rows[-1].created, rows[-1].pk) if more and rows else None
    return rows, cursor


# Retries of one call sit close in time: the "all attempts" link searches this either side.
CALL_SPAN = dt.timedelta(hours=1)


def call_link(row: RequestLog) -> str:
    """The request log filtered to every attempt of this row's call ("" without a call id)."""
    if not row.call_id:
        return ""
    utc = row.created.astimezone(dt.UTC)
    query = urlencode(
        {
            "call_id": row.call_id,
            "integration": row.integration_id,
            "since": f"{utc - CALL_SPAN:%Y-%m-%dT%H:%M}",
            "until": f"{utc + CALL_SPAN + dt.timedelta(minutes=1):%Y-%m-%dT%H:%M}",
        }
    )
    return f"{reverse('request_log')}?{query}"


def _attach_integrations(rows: list[RequestLog]) -> None:
    # One query for the names on this page, instead of a join over the whole window.
    ids = {r.integration_id for r in rows}
    names = {i.pk: i for i in Integration.objects.filter(pk__in=ids)}
    for r in rows:
        r.integration_obj = names.get(r.integration_id)
        r.call_link = call_link(r)


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def request_log(request):
    query = request.GET.copy()
    # The window is never open-ended: no choice means the default range, shown as chosen.
    if not query.get("range"):
        query["range"] = DEFAULT_RANGE
    form = LogFilterForm(query)
    try:
        # URLs stay UTC whatever zone the page shows times in: a shared link means one window.
        with timezone.override(dt.UTC):
            data = clean_or_raise(form)
    except BadInput as exc:
        if is_partial(request):
            return bad_input(request, str(exc))
        # The full page still renders its filter form, with the errors beside the fields.
        context = {"form": form, "rows": [], "cursor": None, "error": str(exc), "nav": "logs"}
        return render_page(request, "dashboard/request_log.html", context, status=400)
    rows, cursor = page_after(filtered(data), data.get("after"))
    _attach_integrations(rows)
    context = {
        "form": form,
        "rows": rows,
        "cursor": cursor,
        "window": data["window"],
        "base_query": form.query_without_position(),
        "continuing": data.get("after") is not None,
        "export_max": EXPORT_MAX,
        "nav": "logs",
    }
    # "Load more" asks for just the next rows; the filter form asks for the whole result block.
    partial = "rows" if request.headers.get("HX-Target", "").startswith("more") else "results"
    return render_page(request, "dashboard/request_log.html", context, partial=partial)


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def request_log_entry(request, pk: int):
    row = get_object_or_404(RequestLog.objects.select_related("integration"), pk=pk)
    context = {"row": row, "call_link": call_link(row), "nav": "logs"}
    return render_page(request, "dashboard/request_log_entry.html", context, partial="detail")


# --- Export ----------------------------------------------------------------------------------

EXPORT_MAX = 50_000
EXPORT_CHUNK = 2_000
# Column name → RequestLog lookup; the page's filters choose the rows, these their shape.
EXPORT_COLUMNS = {
    "time": "created",
    "integration": "integration__slug",
    "environment": "integration__environment",
    "source": "source",
    "method": "method",
    "host": "host",
    "path": "path",
    "status": "status",
    "outcome": "outcome",
    "latency_ms": "latency_ms",
    "error_code": "error_code",
    "error_message": "error_message",
    "call_id": "call_id",
    "attempt": "attempt",
    "retry_after_s": "retry_after_s",
    "api_version": "api_version",
}


class _Line:
    """csv.writer's file: hands back each written line instead of keeping it."""

    def write(self, text: str) -> str:
        return text


def _export_rows(data: dict):
    qs = filtered(data).values_list(*EXPORT_COLUMNS.values())[:EXPORT_MAX]
    for row in qs.iterator(chunk_size=EXPORT_CHUNK):
        # Times in UTC, ISO 8601, whatever zone the page showed.
        yield (row[0].astimezone(dt.UTC).isoformat(), *row[1:])


def _csv(data: dict) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(list(EXPORT_COLUMNS))
    for row in _export_rows(data):
        # A leading = + - @ makes spreadsheets run the cell as a formula (CSV injection).
        yield writer.writerow(
            ["'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v for v in row]
        )


def _json(data: dict) -> Iterator[str]:
    names = list(EXPORT_COLUMNS)
    yield "["
    for n, row in enumerate(_export_rows(data)):
        yield ("," if n else "") + "\n" + json.dumps(dict(zip(names, row, strict=True)))
    yield "\n]\n"


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("json", "JSON")], required=False)


@require_GET
@role_required(Action.VIEW)
def request_log_export(request):
    """The filtered log as CSV or JSON, streamed, newest first, at most EXPORT_MAX rows."""
    query = request.GET.copy()
    if not query.get("range"):
        query["range"] = DEFAULT_RANGE
    query.pop("after", None)  # an export is the whole result, not one page of it
    try:
        kind = clean_or_raise(ExportForm(query)).get("format") or "csv"
        with timezone.override(dt.UTC):
            data = clean_or_raise(LogFilterForm(query))
    except BadInput as exc:
        return bad_input(request, str(exc))
    stamp = f"{timezone.now():%Y%m%d-%H%M%S}"
    if kind == "json":
        response = StreamingHttpResponse(_json(data), content_type="application/json")
    else:
        response = StreamingHttpResponse(_csv(data), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.{kind}"'
    response["X-Export-Limit"] = str(EXPORT_MAX)
    return response
