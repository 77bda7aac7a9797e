"""Integration editor: create (blank or from a preset), edit with a live template preview,
pause, delete behind a confirmation. Admins only; every change audited."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.access import role_required
from dashboard.forms import BadInput, clean_or_raise
from dashboard.forms_config import (
    ConfirmDeleteForm,
    IntegrationForm,
    PresetChoiceForm,
    TemplatePreviewForm,
    preset_initial,
)
from dashboard.views import bad_input, render_page
from monitoring import audit, parsing, presets
from monitoring.models import Integration, MetricBucket, RequestLog
from monitoring.presets import setup
from monitoring.roles import Action

# The preview replays this many of the integration's newest rows (one index-ordered read).
PREVIEW_ROWS = 500
PREVIEW_PATHS = 40


def _merged(typed: str, wanted: str, sep: str) -> str:
    """What the Admin typed, then what the preset wants that is not among it."""
    have = [x.strip() for x in re.split(r"[,\n]", typed) if x.strip()]
    more = [x.strip() for x in re.split(r"[,\n]", wanted) if x.strip() and x.strip() not in have]
    return sep.join(have + more)


def create_integration(form: IntegrationForm, preset: str, request) -> Integration:
    """Save a new integration from a valid form and audit it.

    From a preset, through the same plan and apply as ``manage.py add_integration`` (so its
    probes and rules come too), with what the Admin typed kept over the preset's values.
    Raises PresetError when the preset cannot apply (say, its base URL is not filled in).
    """
    data = form.cleaned_data
    if not preset:
        with transaction.atomic():
            integration = form.save()
            audit.record_change(request, integration, None)
        return integration
    result = setup.plan(
        presets.get(preset),
        environment=data["environment"],
        slug=data["slug"],
        name=data["name"],
        base_url=data["base_url"] or None,
        owner_email=data["owner_email"] or None,
        api_version=data["expected_api_version"] or None,
    )
    fields = result.integration_fields
    for key, sep in (("path_templates", "\n"), ("redact_names", ", "), ("host_patterns", "\n")):
        fields[key] = _merged(data[key], fields.get(key, ""), sep)
    # The rest is exactly what the form says (a cleared API version stays cleared).
    for key in ("name", "owner_email", "expected_api_version", "require_https", "active"):
        fields[key] = data[key]
    return setup.apply(result, request=request)


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
@vary_on_headers("HX-Request")
def integration_new(request):
    chooser = PresetChoiceForm(request.POST if request.method == "POST" else request.GET)
    try:
        preset = clean_or_raise(chooser).get("preset") or ""
    except BadInput as exc:
        return bad_input(request, str(exc))
    if request.method == "POST":
        form = IntegrationForm(request.POST)
        if form.is_valid():
            try:
                integration = create_integration(form, preset, request)
            except (setup.PresetError, ValidationError) as exc:
                form.add_error(None, "; ".join(getattr(exc, "messages", [str(exc)])))
            else:
                return redirect("integration", pk=integration.pk)
        status = 400
    else:
        form = IntegrationForm(initial=preset_initial(preset))
        status = 200
    context = {
        "form": form,
        "chooser": chooser,
        "preset": presets.ALL.get(preset),
        "nav": "integration_new",
    }
    return render_page(
        request, "dashboard/integration_form.html", context, partial="form", status=status
    )


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def integration_edit(request, pk: int):
    integration = get_object_or_404(Integration, pk=pk)
    before = audit.snapshot(integration)
    form = IntegrationForm(request.POST or None, instance=integration)
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                saved = form.save()
                audit.record_change(request, saved, before)
            return redirect("integration", pk=saved.pk)
        status = 400
        # The form wrote the refused values onto the instance: the page names the saved one.
        integration = Integration.objects.get(pk=pk)
    else:
        status = 200
    context = {
        "form": form,
        "integration": integration,
        "preview": _preview(integration, integration.explicit_templates(), ""),
        "nav": "overview",
    }
    return render_page(
        request, "dashboard/integration_form.html", context, partial="form", status=status
    )


def _recent_paths(integration: Integration) -> list[tuple[str, str]]:
    """(method, stored path) of the newest rows, distinct, newest first."""
    rows = (
        RequestLog.objects.filter(integration=integration)
        .order_by("-created", "-id")
        .values_list("method", "path")[:PREVIEW_ROWS]
    )
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        seen.setdefault(row, None)
        if len(seen) >= PREVIEW_PATHS:
            break
    return list(seen)


def _preview(integration: Integration, templates: list[str], sample: str) -> dict:
    """How the templates would store each recent path (and the sample), and what changes."""
    lines = []
    if sample:
        lines.append(
            {"method": "", "path": sample, "now": parsing.template_path(sample, ()), "sample": True}
        )
    for method, path in _recent_paths(integration):
        lines.append({"method": method, "path": path, "now": path, "sample": False})
    for line in lines:
        line["new"] = parsing.template_path(line["path"], templates)
        line["changed"] = line["new"] != line["now"]
    endpoints_now = {(x["method"], x["now"]) for x in lines if not x["sample"]}
    endpoints_new = {(x["method"], x["new"]) for x in lines if not x["sample"]}
    used = {x["new"] for x in lines} & set(templates)
    return {
        "lines": lines,
        "templates": templates,
        "unused": [t for t in templates if t not in used],
        "endpoints_now": len(endpoints_now),
        "endpoints_new": len(endpoints_new),
    }


@require_GET
@role_required(Action.CONFIGURE)
@vary_on_headers("HX-Request")
def integration_preview(request, pk: int):
    """The live preview (HTMX, as the templates are typed; or a plain GET without JS)."""
    integration = get_object_or_404(Integration, pk=pk)
    form = TemplatePreviewForm(request.GET)
    try:
        data = clean_or_raise(form)
    except BadInput as exc:
        return bad_input(request, str(exc))
    context = {
        "integration": integration,
        "preview": _preview(integration, data["path_templates"], data["sample"]),
        "nav": "overview",
    }
    return render_page(request, "dashboard/integration_preview.html", context, partial="preview")


@require_POST
@role_required(Action.CONFIGURE)
def integration_pause(request, pk: int):
    """Pause or resume: ``active`` = "0" pauses, "1" resumes (idempotent either way)."""
    integration = get_object_or_404(Integration, pk=pk)
    wanted = request.POST.get("active", "")
    if wanted not in ("0", "1"):
        return bad_input(request, "Say whether to pause (active=0) or resume (active=1).")
    before = audit.snapshot(integration, ["active"])
    integration.active = wanted == "1"
    integration.save(update_fields=["active"])
    audit.record_change(request, integration, before, fields=["active"])
    return redirect("integration", pk=integration.pk)


DELETE_CHUNK = 2_000


def _drop_rows(integration: Integration) -> None:
    """Delete the integration's raw rows and buckets in short chunks first: one cascading
    DELETE of millions would hold the writers up (SQLite has one) for as long as it ran."""
    for model in (RequestLog, MetricBucket):
        while True:
            ids = list(
                model.objects.filter(integration=integration).values_list("id", flat=True)[
                    :DELETE_CHUNK
                ]
            )
            if not ids:
                break
            with transaction.atomic():
                model.objects.filter(id__in=ids).delete()


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def integration_delete(request, pk: int):
    integration = get_object_or_404(Integration, pk=pk)
    form = ConfirmDeleteForm(request.POST or None, expected=integration.slug)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            before = audit.snapshot(integration)
            _drop_rows(integration)
            with transaction.atomic():
                audit.record_change(request, integration, before, deleted=True)
                integration.delete()
            return redirect("overview")
        status = 400
    context = {"form": form, "integration": integration, "nav": "overview"}
    return render_page(
        request, "dashboard/integration_delete.html", context, partial="form", status=status
    )
