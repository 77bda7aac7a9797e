"""Forms of the configuration screens: integrations, maintenance windows, API keys, profile."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.text import slugify

from monitoring import presets
from monitoring.alerts.forms import BoundedModelMultipleChoiceField
from monitoring.models import (
    Environment,
    Integration,
    MaintenanceWindow,
    NotificationPreference,
    Severity,
)

# Presets whose base URL is a pattern: the user replaces the <host> / <username> parts.
_PLACEHOLDER = re.compile(r"<[a-z_]+>")
MAX_TEMPLATES = 200
MAX_REDACT_NAMES = 100


def preset_choices() -> list[tuple[str, str]]:
    """The registry's presets, for a select (blank first: no preset)."""
    return [("", "Blank — no preset"), *presets.choices()]


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def clean_path_templates(value: str) -> str:
    """One template per line, each starting with /, braces balanced; the text normalised."""
    lines = _lines(value)
    if len(lines) > MAX_TEMPLATES:
        raise ValidationError(f"At most {MAX_TEMPLATES} templates, got {len(lines)}.")
    bad = []
    for line in lines:
        depth, ok = 0, line.startswith("/") and len(line) <= 255 and " " not in line
        for char in line:
            depth += {"{": 1, "}": -1}.get(char, 0)
            ok = ok and 0 <= depth <= 1
        if not ok or depth:
            bad.append(line[:60])
    if bad:
        raise ValidationError(
            "Not a path template (start with /, no spaces, {name} for a variable part): "
            + ", ".join(bad[:5])
        )
    return "\n".join(lines)


class IntegrationForm(forms.ModelForm):
    """Everything an Admin sets on an integration; the slug follows the name unless given."""

    class Meta:
        model = Integration
        fields = [
            "name", "slug", "environment", "base_url", "owner_email", "expected_api_version",
            "require_https", "host_patterns", "path_templates", "redact_names", "active",
        ]  # fmt: skip
        labels = {
            "base_url": "Base URL",
            "owner_email": "Owner e-mail",
            "expected_api_version": "Expected API version",
            "require_https": "HTTPS only",
            "path_templates": "Path templates",
            "redact_names": "Extra redaction names",
            "active": "Active (untick to pause: off the overview, not checked by alert rules)",
        }
        help_texts = {
            "slug": "Leave empty to derive it from the name. SDKs and the ingest API name the "
            "integration by this.",
            "owner_email": "Told about this integration's alerts when a rule names nobody.",
        }
        widgets = {
            "host_patterns": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
            "path_templates": forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
            "redact_names": forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["slug"].required = False
        self.fields["environment"].choices = Environment.choices

    def clean_base_url(self) -> str:
        value = self.cleaned_data.get("base_url", "")
        if _PLACEHOLDER.search(value):
            raise ValidationError("Replace the <…> parts of the preset's URL with your own.")
        return value

    def clean_path_templates(self) -> str:
        return clean_path_templates(self.cleaned_data.get("path_templates", ""))

    def clean_redact_names(self) -> str:
        names = [w.strip() for w in re.split(r"[,\n]", self.cleaned_data["redact_names"])]
        names = [n for n in names if n]
        if len(names) > MAX_REDACT_NAMES:
            raise ValidationError(f"At most {MAX_REDACT_NAMES} names, got {len(names)}.")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", n)]
        if bad:
            raise ValidationError(
                "Names are letters, digits, _ . and -: " + ", ".join(b[:40] for b in bad[:5])
            )
        return ", ".join(names)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("slug") and cleaned.get("name"):
            cleaned["slug"] = slugify(cleaned["name"])[:100]
            if not cleaned["slug"]:
                self.add_error("slug", "Give a slug: the name has no letters or digits to use.")
        slug, env = cleaned.get("slug"), cleaned.get("environment")
        if slug and env:
            taken = Integration.objects.filter(slug=slug, environment=env)
            if self.instance.pk is not None:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                # On the field, so the model's own (slug, environment) check is skipped.
                self.add_error(
                    "slug",
                    f"Another {env} integration already has the slug {slug}: "
                    "choose another name or slug.",
                )
        return cleaned


class PresetChoiceForm(forms.Form):
    """The ?preset= of the new-integration page."""

    preset = forms.ChoiceField(choices=preset_choices, required=False, label="Start from")


def preset_initial(name: str) -> dict:
    """What a preset fills in on the new-integration form (its templates for its own URL
    pattern; on create they follow the base URL actually given)."""
    if not name:
        return {}
    preset = presets.get(name)
    return {
        "name": preset.title,
        "slug": preset.name,
        "base_url": preset.base_url,
        "expected_api_version": preset.api_version,
        "path_templates": "\n".join(preset.path_templates(preset.base_url)),
        "redact_names": ", ".join(preset.redact_names),
        "host_patterns": "\n".join(preset.hosts),
    }


class TemplatePreviewForm(forms.Form):
    """What the live preview reads: the templates being typed and an optional sample path."""

    path_templates = forms.CharField(required=False, max_length=60_000)
    sample = forms.CharField(required=False, max_length=500)

    def clean_path_templates(self) -> list[str]:
        return _lines(clean_path_templates(self.cleaned_data["path_templates"]))

    def clean_sample(self) -> str:
        value = self.cleaned_data["sample"].strip()
        if value and not value.startswith("/"):
            raise ValidationError("A sample path starts with /.")
        return value


class ConfirmDeleteForm(forms.Form):
    """Deleting an integration takes its rows with it: the Admin types its slug to confirm."""

    confirm = forms.CharField(max_length=100, label="Type the slug to confirm")

    def __init__(self, *args, expected: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != self.expected:
            raise ValidationError(f"Type {self.expected} to confirm.")
        return value


# --- Maintenance windows ---------------------------------------------------------------------

_LOCAL = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
WEEKDAYS = [(0, "Monday"), (1, "Tuesday"), (2, "Wednesday"), (3, "Thursday"), (4, "Friday"),
            (5, "Saturday"), (6, "Sunday")]  # fmt: skip


class MaintenanceForm(forms.ModelForm):
    """A one-off window (start and end, in the viewer's time zone) or a weekly one (UTC)."""

    class Meta:
        model = MaintenanceWindow
        fields = ["name", "integration", "starts_at", "ends_at", "weekday", "start_time",
                  "duration_minutes"]  # fmt: skip
        labels = {
            "integration": "Integration (empty: all, and Upstream itself)",
            "starts_at": "Starts",
            "ends_at": "Ends",
            "weekday": "Every (weekly window)",
            "start_time": "At (UTC)",
            "duration_minutes": "For (minutes)",
        }
        widgets = {
            "starts_at": _LOCAL,
            "ends_at": _LOCAL,
            "start_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["weekday"] = forms.TypedChoiceField(
            choices=[("", "—"), *WEEKDAYS], coerce=int, empty_value=None, required=False,
            label=self.Meta.labels["weekday"],
        )  # fmt: skip
        self.fields["duration_minutes"].max_value = 7 * 24 * 60
        self.fields["duration_minutes"].validators.append(_at_most_a_week)
        for name in ("starts_at", "ends_at"):
            self.fields[name].label += f" ({timezone.get_current_timezone_name()})"

    def clean(self):
        cleaned = super().clean()
        ends = cleaned.get("ends_at")
        if ends is not None and ends <= timezone.now() and not self.errors:
            self.add_error("ends_at", "The end is already in the past.")
        return cleaned


def _at_most_a_week(value: int | None) -> None:
    if value is not None and not 1 <= value <= 7 * 24 * 60:
        raise ValidationError("Between 1 minute and a week (10080 minutes).")


# --- API keys --------------------------------------------------------------------------------


class ApiKeyForm(forms.Form):
    """What the create_api_key command asks for, as a form."""

    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    integrations = BoundedModelMultipleChoiceField(
        queryset=Integration.objects.order_by("name", "environment"),
        required=False,
        help_text="Integrations the key may write; none chosen means every one.",
    )
    allow_create = forms.BooleanField(
        required=False, label="Events for an unknown integration create it"
    )

    def __init__(self, *args, **kwargs):
        from api.models import Scope

        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = Scope.choices

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Give the key a name saying who uses it.")
        return name


# --- Profile ---------------------------------------------------------------------------------


@cache
def zone_choices() -> list[tuple[str, str]]:
    zones = sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")
    return [("", "UTC (default)"), *((z, z.replace("_", " ")) for z in zones)]


def valid_zone(name: str) -> bool:
    return name in {z for z, _ in zone_choices()[1:]}


class ProfileForm(forms.ModelForm):
    """The person's e-mail, what they want to hear about, and the zone pages show times in."""

    email = forms.EmailField(
        required=False, label="E-mail", help_text="Where your alert e-mails go."
    )
    severities = forms.MultipleChoiceField(
        choices=Severity.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every severity.",
    )

    class Meta:
        model = NotificationPreference
        fields = ["by_email", "integrations", "severities", "time_zone"] + [
            # The weekly scorecard e-mail, where that part is installed.
            f.name
            for f in NotificationPreference._meta.get_fields()
            if f.name == "scorecard_digest"
        ]
        field_classes = {"integrations": BoundedModelMultipleChoiceField}
        labels = {
            "by_email": "E-mail me about alerts",
            "time_zone": "Time zone",
            "scorecard_digest": "E-mail me the weekly scorecard",
        }
        help_texts = {"integrations": "None chosen means every integration."}

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["email"].initial = user.email
        self.fields["time_zone"] = forms.ChoiceField(
            choices=zone_choices(), required=False, label="Time zone",
            help_text="Pages show times in this zone; links, exports and the API stay in UTC.",
        )  # fmt: skip
        self.fields["integrations"].queryset = Integration.objects.order_by("name", "environment")
        # The field order on the page: who you are first.
        self.order_fields(["email", "by_email", "integrations", "severities"])

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("by_email") and not cleaned.get("email") and not self.errors:
            self.add_error("email", "Give an e-mail address to be e-mailed about alerts.")
        return cleaned

    def save(self, commit: bool = True):
        pref = super().save(commit=False)
        pref.user = self.user
        pref.severities = list(self.cleaned_data.get("severities") or [])
        if commit:
            pref.save()
            self.save_m2m()
            self.user.email = self.cleaned_data.get("email", "")
            self.user.save(update_fields=["email"])
        return pref
