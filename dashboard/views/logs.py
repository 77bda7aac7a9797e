"""The request log explorer: validated filters, keyset pages newest first, one row's detail."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
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
    "attempt",
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
    for name in ("method", "path", "error_code"):
        if data.get(name):
            qs = qs.filter(**{name: data[name]})
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


def _attach_integrations(rows: list[RequestLog]) -> None:
    # One query for the names on this page, instead of a join over the whole window.
    ids = {r.integration_id for r in rows}
    names = {i.pk: i for i in Integration.objects.filter(pk__in=ids)}
    for r in rows:
        r.integration_obj = names.get(r.integration_id)


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
    return render_page(
        request, "dashboard/request_log_entry.html", {"row": row, "nav": "logs"}, partial="detail"
    )
