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


# --- The dashboard's form: one typed field per parameter of each kind -------------------------

# Posted by the typed form: its parameter fields are read, not the JSON.
TYPED_MARKER = "typed"


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def param_field_name(kind: str, name: str) -> str:
    return f"{kind}-{name}"


def _typed_value(text: str) -> object:
    """A number typed into a field, as JSON would give it; the text itself when it is none
    (the kind's validation then says "must be a number", as for JSON)."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if all(c not in text for c in ".eEnN") and len(text) <= 30:
        return int(text)
    return number


_MAX_PK = 2**63 - 1


class BoundedModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    """Refuses ids no database row can have before asking the database (SQLite raises
    OverflowError past 64 bits, which Django's own check does not catch)."""

    def _check_values(self, value):
        for pk in value if isinstance(value, list | tuple) else [value]:
            text = str(pk)
            if not text.isdigit() or int(text) > _MAX_PK:
                raise ValidationError(
                    self.error_messages["invalid_choice"], code="invalid_choice",
                    params={"value": text[:40]},
                )  # fmt: skip
        return super()._check_values(value)


class TypedRuleForm(AlertRuleForm):
    """The rule form with a field per parameter of every kind (generated from `KINDS`),
    severity, escalation and the channels the rule's own route sends to.

    Only the chosen kind's fields count; a post without the typed marker (a script, an older
    page) may still give the parameters as JSON in ``params``.
    """

    channels = BoundedModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Also send to channels",
        help_text="Kept as this rule's own route; other routes are edited in the admin.",
    )

    class Meta(AlertRuleForm.Meta):
        fields = [*AlertRuleForm.Meta.fields, "severity", "escalation_route", "escalation_minutes"]

    def __init__(self, *args, **kwargs):
        from monitoring.models import Channel, Route

        super().__init__(*args, **kwargs)
        self.fields["params"].widget = forms.HiddenInput()
        self.fields["severity"].required = False
        self.fields["escalation_route"].queryset = Route.objects.order_by("name")
        self.fields["escalation_minutes"].label = "Escalate after (minutes)"
        self.fields["escalation_minutes"].max_value = 7 * 24 * 60
        self.fields["channels"].queryset = Channel.objects.order_by("name")
        current = self.instance.params if isinstance(self.instance.params, dict) else {}
        self.kind_fields: dict[str, list[str]] = {}
        for kind, cls in KINDS.items():
            names = []
            for name, p in cls.params.items():
                field_name = param_field_name(kind, name)
                initial = current.get(name, p.default) if self.instance.kind == kind else p.default
                label = name.replace("_", " ").capitalize()
                if isinstance(p.default, bool):
                    field = forms.BooleanField(required=False, initial=initial, label=label)
                else:
                    attrs = {"step": "1" if isinstance(p.default, int) else "any"}
                    if p.low is not None:
                        attrs["min"] = _plain(p.low)
                        attrs["max"] = _plain(p.high)
                    field = forms.CharField(
                        required=False,
                        max_length=40,
                        initial=initial,
                        label=label,
                        widget=forms.NumberInput(attrs=attrs),
                    )
                field.help_text = f"{p.help[:1].upper()}{p.help[1:]} (default {p.default})."
                self.fields[field_name] = field
                names.append(field_name)
            self.kind_fields[kind] = names
        if self.instance.pk is not None:
            own = self._own_route()
            if own is not None:
                self.fields["channels"].initial = list(own.channels.all())

    def kind_groups(self) -> list[tuple[str, str, list]]:
        """(kind, label, bound fields) per kind, for the template's fieldsets."""
        return [
            (kind, KINDS[kind].label(), [self[name] for name in names])
            for kind, names in self.kind_fields.items()
        ]

    def param_names(self) -> set[str]:
        return {name for names in self.kind_fields.values() for name in names}

    def clean_severity(self) -> str:
        from monitoring.models import Severity

        return self.cleaned_data.get("severity") or Severity.WARNING

    def clean(self):
        if self.data.get(TYPED_MARKER):
            kind = self.data.get("kind", "")
            cls = KINDS.get(kind)
            params = {}
            if cls is not None:
                for name, p in cls.params.items():
                    field_name = param_field_name(kind, name)
                    # A value equal to the default is left out, as JSON would: the rule
                    # then follows the default if it ever changes.
                    if isinstance(p.default, bool):
                        if bool(self.cleaned_data.get(field_name)) != p.default:
                            params[name] = not p.default
                        continue
                    text = self.cleaned_data.get(field_name) or ""
                    if not text.strip():
                        continue  # left empty: the default
                    value = _typed_value(text)
                    try:
                        cls.validate({name: value})
                    except ValidationError as exc:
                        self.add_error(field_name, exc)
                        continue
                    if value != p.default:
                        params[name] = value
            self.cleaned_data["params"] = params
            self.errors.pop("params", None)
        cleaned = super().clean()
        minutes, route = cleaned.get("escalation_minutes"), cleaned.get("escalation_route")
        if (minutes is None) != (route is None):
            self.add_error(
                "escalation_minutes", "Escalation needs both a route and the minutes to wait."
            )
        return cleaned

    def _own_route(self):
        from monitoring.models import Route

        return (
            Route.objects.filter(rule=self.instance, integration=None, severity="")
            .filter(name=self._route_name())
            .first()
        )

    def _route_name(self) -> str:
        return f"Rule {self.instance.pk}"

    def save_route(self, request) -> None:
        """After save(): point the rule's own route at the chosen channels (audited)."""
        from monitoring import audit
        from monitoring.models import Route

        chosen = list(self.cleaned_data.get("channels") or [])
        own = self._own_route()
        if own is None and not chosen:
            return
        if own is None:
            own = Route.objects.create(name=self._route_name(), rule=self.instance)
            own.channels.set(chosen)
            after = {**audit.snapshot(own), "channels": sorted(c.name for c in chosen)}
            audit.record(audit.Actions.CREATE, request=request, target=own, after=after)
            return
        had = sorted(c.name for c in own.channels.all())
        if not chosen:
            audit.record_change(request, own, audit.snapshot(own), deleted=True)
            own.delete()
            return
        own.channels.set(chosen)
        now = sorted(c.name for c in chosen)
        if now != had:
            audit.record(audit.Actions.UPDATE, request=request, target=own,
                         before={"channels": had}, after={"channels": now})  # fmt: skip
