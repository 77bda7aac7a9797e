"""The alert-rule form: parameters checked against the kind, with errors a person can act on."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from monitoring.alerts.rules import KINDS, validate_params
from monitoring.formfields import BoundedJSONField
from monitoring.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = [
            "name", "kind", "integration", "params", "recipients", "repeat_interval_s",
            "recovery_s", "enabled",
        ]  # fmt: skip
        field_classes = {"params": BoundedJSONField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        lines = [f"{kind}: {cls.help()}" for kind, cls in KINDS.items()]
        self.fields["params"].help_text = (
            "A JSON object; anything left out takes its default. " + " | ".join(lines)
        )
        self.fields["params"].required = False

    def clean_recipients(self) -> str:
        value = self.cleaned_data.get("recipients", "")
        bad = []
        for address in AlertRule(recipients=value).recipient_list():
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        if bad:
            raise ValidationError(f"Not an e-mail address: {', '.join(bad)}.")
        return value

    def clean_repeat_interval_s(self) -> int:
        value = self.cleaned_data["repeat_interval_s"]
        if value < 60:
            raise ValidationError("Remind at most once a minute (60 seconds or more).")
        return value

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        params = cleaned.get("params")
        if params is None:
            cleaned["params"] = params = {}
        if kind:
            try:
                validate_params(kind, params)
            except ValidationError as exc:
                self.add_error("params", exc)
        cls = KINDS.get(kind)
        scope_error = cls.scope_error(cleaned.get("integration")) if cls is not None else ""
        if scope_error:
            self.add_error("integration", scope_error)
        return cleaned
