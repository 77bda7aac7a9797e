"""Webhook endpoints: the list with each one's receiving URL and secrets (as fingerprints),
a form to add one, and switching one off or on. Admins configure; everyone reads."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.access import role_required
from monitoring import audit
from monitoring.models import Integration, SignatureEncoding, WebhookEndpoint, WebhookScheme
from monitoring.roles import Action, can
from monitoring.webhooks import schemes
from monitoring.webhooks import secrets as hook_secrets


class EndpointForm(forms.Form):
    integration = forms.ModelChoiceField(queryset=Integration.objects.order_by("name"))
    name = forms.CharField(max_length=100, required=False)
    scheme = forms.ChoiceField(choices=WebhookScheme.choices)
    secret_env = forms.CharField(
        label="Signing secret variable",
        max_length=100,
        required=False,
        help_text="The environment variable holding the provider's signing secret, e.g. "
        "UPSTREAM_SECRET_STRIPE_WEBHOOK. Only the name is stored; the value is read when a "
        "delivery is verified. Leave empty for the unsigned (secret URL) scheme.",
    )
    header_name = forms.CharField(max_length=100, required=False, help_text="Generic HMAC only.")
    signature_encoding = forms.ChoiceField(
        choices=SignatureEncoding.choices, initial=SignatureEncoding.HEX
    )
    timestamp_header = forms.CharField(max_length=100, required=False)
    replay_window_s = forms.IntegerField(min_value=1, max_value=7 * 86400, initial=300)
    event_types = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="One per line."
    )
    max_silence_s = forms.IntegerField(min_value=60, required=False)

    def clean(self):
        cleaned = super().clean()
        key = cleaned.get("scheme")
        if key not in schemes.SCHEMES:
            return cleaned
        scheme = schemes.get(key)
        problems = scheme.check_settings(
            schemes.Settings(
                cleaned.get("replay_window_s") or 300,
                cleaned.get("header_name") or "",
                cleaned.get("signature_encoding") or SignatureEncoding.HEX,
                cleaned.get("timestamp_header") or "",
            )
        )
        for problem in problems:
            self.add_error(None, f"{scheme.label}: {problem}.")
        env = (cleaned.get("secret_env") or "").strip().removeprefix("${").removesuffix("}")
        if scheme.uses_secrets and not env:
            self.add_error("secret_env", f"{scheme.label} signs deliveries: name the variable.")
        if not scheme.uses_secrets and env:
            self.add_error("secret_env", f"{scheme.label} takes no secret; leave this empty.")
        cleaned["secret_env"] = env
        return cleaned


def _rows(endpoints, show_paths: bool) -> list[dict]:
    return [
        {
            "endpoint": e,
            "url": f"{settings.SITE_URL}{e.path}" if show_paths else "",
            "secrets": [
                (s.reference or "encrypted", hook_secrets.live_fingerprint(s), s.not_after)
                for s in e.secrets.all()
            ],
        }
        for e in endpoints
    ]


@require_GET
@role_required(Action.VIEW)
def webhook_list(request):
    endpoints = WebhookEndpoint.objects.select_related("integration").prefetch_related("secrets")
    # The token is the credential of an unsigned endpoint: only Admins see receiving URLs.
    show = can(request.user, Action.CONFIGURE)
    context = {"rows": _rows(endpoints, show), "nav": "webhooks"}
    return render(request, "dashboard/webhooks.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def webhook_new(request):
    initial = {}
    if request.GET.get("integration", "").isdigit():
        initial["integration"] = int(request.GET["integration"])
    form = EndpointForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                endpoint = WebhookEndpoint.objects.create(
                    integration=data["integration"],
                    name=data["name"],
                    scheme=data["scheme"],
                    header_name=data["header_name"],
                    signature_encoding=data["signature_encoding"],
                    timestamp_header=data["timestamp_header"],
                    replay_window_s=data["replay_window_s"],
                    event_types=data["event_types"],
                    max_silence_s=data["max_silence_s"],
                )
                if data["secret_env"]:
                    hook_secrets.create(endpoint, reference=f"${{{data['secret_env']}}}")
                audit.record_change(request, endpoint, None)
        except ValidationError as exc:
            form.add_error("secret_env", " ".join(exc.messages))
        else:
            context = {"endpoint": endpoint, "url": f"{settings.SITE_URL}{endpoint.path}"}
            return render(request, "dashboard/webhook_created.html", context | {"nav": "webhooks"})
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "nav": "webhooks"}
    return render(request, "dashboard/webhook_form.html", context, status=status)


@require_POST
@role_required(Action.CONFIGURE)
def webhook_toggle(request, pk: int):
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    before = audit.snapshot(endpoint, ["active"])
    endpoint.active = not endpoint.active
    endpoint.save(update_fields=["active"])
    audit.record_change(request, endpoint, before, fields=["active"])
    return redirect("webhooks")
