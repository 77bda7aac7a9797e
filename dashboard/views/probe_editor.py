"""The probe editor: create and edit probes with structured assertions and steps, and a
"Test run" that runs the probe once through the real runner before anything is saved."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from dashboard.access import role_required
from dashboard.probe_form import REFERENCES_HELP, ProbeEditorForm
from dashboard.views import is_partial
from monitoring import audit
from monitoring.models import Integration, Probe
from monitoring.probes.run import ProbeSpec
from monitoring.probes.schedule import try_once
from monitoring.roles import Action


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
@vary_on_headers("HX-Request")
def probe_edit(request, pk: int | None = None):
    probe = get_object_or_404(Probe.objects.select_related("integration"), pk=pk) if pk else None
    initial = {}
    if probe is None and request.GET.get("integration", "").isdigit():
        integration = Integration.objects.filter(pk=request.GET["integration"]).first()
        if integration is not None:
            initial = {"integration": integration.pk, "url": integration.base_url}
    if request.method == "GET":
        form = ProbeEditorForm(instance=probe, initial=initial or None) if not probe else (
            ProbeEditorForm(instance=probe)
        )  # fmt: skip
        return _page(request, form, probe)
    form = ProbeEditorForm(request.POST, instance=probe)
    valid = form.is_valid()
    if request.POST.get("action") == "test":
        result = None
        if valid:
            unsaved = form.probe_form.save(commit=False)
            spec = ProbeSpec.from_probe(unsaved)
            result = try_once(spec)
        context = {"form": form, "result": result}
        status = 200 if valid else 400
        if is_partial(request):
            return render(request, "dashboard/_probe_test.html", context, status=status)
        return _page(request, form, probe, result=result, status=status)
    if not valid:
        return _page(request, form, probe, status=400)
    before = audit.snapshot(probe) if probe is not None else None
    saved = form.probe_form.save()
    audit.record_change(request, saved, before)
    return redirect("probe", pk=saved.pk)


def _page(request, form, probe, *, result=None, status: int = 200):
    context = {
        "form": form,
        "probe": probe,
        "result": result,
        "references_help": REFERENCES_HELP,
        "nav": "probes",
    }
    return render(request, "dashboard/probe_form.html", context, status=status)
