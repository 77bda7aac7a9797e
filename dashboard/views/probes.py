"""Probes: the list with each one's state and last result, one probe's history, "run now"."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard import charts
from dashboard.access import role_required
from dashboard.views import is_partial, render_page
from monitoring import audit
from monitoring.models import Probe
from monitoring.probes.schedule import run_now
from monitoring.roles import Action

HISTORY = 50
CHART_RESULTS = 200


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def probe_list(request):
    probes = list(Probe.objects.select_related("integration").order_by("integration__name", "name"))
    return render_page(request, "dashboard/probes.html", {"probes": probes, "nav": "probes"})


@require_GET
@role_required(Action.VIEW)
@vary_on_headers("HX-Request")
def probe_detail(request, pk: int):
    probe = get_object_or_404(Probe.objects.select_related("integration"), pk=pk)
    # Bounded: the newest results only (the proberesult_probe_time index, read backwards).
    recent = list(probe.results.order_by("-created", "-id")[:CHART_RESULTS])
    context = {
        "probe": probe,
        "results": recent[:HISTORY],
        "results_count": len(recent),
        "flips": list(probe.flips.order_by("-created")[:20]),
        "headers": probe.header_fingerprints(),
        "chart": charts.probe_latency(recent[::-1]),
        "nav": "probes",
    }
    return render_page(request, "dashboard/probe.html", context)


@require_POST
@role_required(Action.OPERATE)
def probe_run(request, pk: int):
    probe = get_object_or_404(Probe.objects.select_related("integration"), pk=pk)
    # Synchronous on purpose: the person pressed the button to see the answer.
    results, busy = run_now([probe])
    if results:
        audit.record("probe.run_now", request=request, target=probe)
    probe.refresh_from_db()
    note = "Already running; try again shortly." if busy else ""
    if is_partial(request):
        context = {"p": probe, "ran": bool(results), "note": note}
        return render(request, "dashboard/_probe_row.html", context)
    if note:
        messages.info(request, note)
    return redirect("probe", pk=probe.pk)
