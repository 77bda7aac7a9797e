"""The channel editor's form: one typed field per setting of each channel kind.

The kinds' settings come from their classes in ``monitoring.alerts.channels`` (``required``,
``optional``, ``secret``), so a new kind gets its fields here without an edit; the settings
are then checked by the kind itself, the same check the admin and ``import_config`` run.
"""

from __future__ import annotations

from typing import Any

from django import forms

from monitoring.alerts.channels import KINDS, validate_settings
from monitoring.models import Channel, ChannelKind

HELP = {
    "addresses": "E-mail addresses, one per line or comma separated.",
    "url": "The receiver's URL.",
    "template": "Optional Django template for the body (the alert as context).",
    "content_type": "The body's media type with a template (default application/json).",
}


def field_name(kind: str, key: str) -> str:
    return f"s_{kind}_{key}"


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ChannelKind.choices)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, instance: Channel | None = None, **kwargs: Any) -> None:
        self.instance = instance or Channel()
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, "kind": instance.kind,
                                 "enabled": instance.enabled}  # fmt: skip
        super().__init__(*args, **kwargs)
        stored = self.instance.settings if self.instance.pk else {}
        self.groups: list[tuple[str, str, list[str]]] = []
        for kind, cls in KINDS.items():
            names = []
            for key in (*cls.required, *cls.optional):
                name = field_name(kind, key)
                secret = key in cls.secret
                help_text = HELP.get(key, "")
                if secret:
                    help_text = (
                        f"A credential: write ${{UPSTREAM_SECRET_{kind.upper()}_{key.upper()}}} "
                        "and set that variable where the worker runs; only the reference is "
                        "stored."
                    )
                widget = (
                    forms.Textarea(attrs={"rows": 3}) if key in ("addresses", "template") else None
                )
                initial = stored.get(key) if self.instance.kind == kind else None
                if isinstance(initial, list):
                    initial = "\n".join(initial)
                self.fields[name] = forms.CharField(
                    label=key.replace("_", " ").capitalize(),
                    required=False,
                    help_text=help_text,
                    initial=initial,
                    widget=widget,
                    max_length=4000,
                )
                names.append(name)
            self.groups.append((kind, ChannelKind(kind).label, names))

    def kind_groups(self) -> list[tuple[str, str, list]]:
        return [(kind, label, [self[n] for n in names]) for kind, label, names in self.groups]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        taken = Channel.objects.filter(name=name).exclude(pk=self.instance.pk).exists()
        if taken:
            raise forms.ValidationError("Another channel has this name.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind not in KINDS:
            return cleaned
        cls = KINDS[kind]
        raw = {}
        for key in (*cls.required, *cls.optional):
            value = (cleaned.get(field_name(kind, key)) or "").strip()
            if value:
                raw[key] = value
        try:
            self.settings = validate_settings(kind, raw)
        except ValueError as exc:
            message = str(exc)
            key = message.split(":", 1)[0].split(" ")[-1] if ":" in message else ""
            target = field_name(kind, key) if key in (*cls.required, *cls.optional) else None
            missing = [k for k in cls.required if k not in raw]
            if target is None and missing:
                target = field_name(kind, missing[0])
            self.add_error(target, message)
        return cleaned

    def save(self) -> Channel:
        channel = self.instance
        channel.name = self.cleaned_data["name"]
        channel.kind = self.cleaned_data["kind"]
        channel.enabled = self.cleaned_data["enabled"]
        channel.settings = self.settings
        channel.save()
        return channel
