"""Configuration as code in the dashboard: download the YAML, or paste / upload one and see
its diff (dry run) before applying it — the same code as export_config / import_config."""

from __future__ import annotations

from django import forms
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from dashboard.access import role_required
from monitoring import config
from monitoring.roles import Action

MAX_UPLOAD = 2 * 1024 * 1024


class ImportForm(forms.Form):
    text = forms.CharField(
        label="Configuration (YAML or JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}),
    )
    upload = forms.FileField(label="…or a file", required=False)

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if upload is not None:
            if upload.size > MAX_UPLOAD:
                raise forms.ValidationError("The file is larger than 2 MiB.")
            try:
                cleaned["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        if not (cleaned.get("text") or "").strip():
            raise forms.ValidationError("Paste a configuration or choose a file.")
        return cleaned


@require_GET
@role_required(Action.CONFIGURE)
def export_download(request):
    text = config.dump_yaml(config.export())
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="upstream-{stamp}.yaml"'
    return response


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def configuration(request):
    form = ImportForm(request.POST or None, request.FILES or None)
    context = {"form": form, "nav": "configuration", "diff": None, "applied": False}
    status = 200
    if request.method == "POST":
        if not form.is_valid():
            status = 400
        else:
            apply = request.POST.get("action") == "apply"
            try:
                doc = config.load(form.cleaned_data["text"])
                result = (
                    config.apply(doc, actor=request.user.get_username(), user=request.user)
                    if apply
                    else config.plan(doc)
                )
            except config.ConfigError as exc:
                context["errors"] = exc.errors
                status = 400
            else:
                context.update(diff=result.diff(), applied=apply, changes=bool(result.changes))
    return render(request, "dashboard/configuration.html", context, status=status)
