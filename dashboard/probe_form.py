"""The probe editor's form: structured assertions and steps, validated by the probe's own form.

People fill in plain fields (a status set, a latency limit, JSON-path rows with an operator and
a value, step rows with extracted variables); ``ProbeEditorForm`` turns them into the probe's
``headers``, ``assertions`` and ``steps`` and runs ``monitoring.probes.forms.ProbeForm`` over
the result, so the editor, the admin and ``import_config`` accept and refuse the same things
with the same messages.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from monitoring.models import Integration, Probe, ProbeKind
from monitoring.probes.assertions import MAX_JSON_PATHS
from monitoring.probes.forms import ProbeForm
from monitoring.probes.run import ALLOWED_METHODS, MAX_STEPS

JSON_PATH_ROWS = 3
STEP_ROWS = 4
OPERATORS = (
    ("exists", "exists"),
    ("not exists", "does not exist"),
    ("==", "equals"),
    ("!=", "differs from"),
    (">", ">"),
    (">=", "≥"),
    ("<", "<"),
    ("<=", "≤"),
    ("~=", "matches regex"),
)
_METHODS = [(m, m) for m in ALLOWED_METHODS]
REFERENCES_HELP = (
    "Secrets never go here as values: write ${UPSTREAM_SECRET_NAME} and set that variable in the "
    "worker's environment (or list another name in UPSTREAM_SECRET_ENV_ALLOW). Only the "
    "reference is stored; the value is read when the probe runs."
)


def _text(label: str, *, required: bool = False, **kwargs: Any) -> forms.CharField:
    return forms.CharField(label=label, required=required, **kwargs)


def _lines(label: str, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=help_text,
    )


def parse_pairs(text: str, sep: str, what: str) -> dict[str, str]:
    """ "Name: value" (or "var = $.path") lines as a dict; ValidationError names the line."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, found, value = line.partition(sep)
        if not found or not name.strip():
            raise forms.ValidationError(f"Line {number}: write {what}.")
        out[name.strip()] = value.strip()
    return out


def _literal(text: str) -> str:
    """A JSON-path operand as JSON: numbers, true/false/null and quoted text stay; other
    text is quoted, so people can type ok for "ok"."""
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text)
    return text


class ProbeEditorForm(forms.Form):
    integration = forms.ModelChoiceField(queryset=Integration.objects.order_by("name"))
    name = _text("Name", required=True, max_length=100)
    kind = forms.ChoiceField(choices=ProbeKind.choices, initial=ProbeKind.HTTP)
    method = forms.ChoiceField(choices=_METHODS, initial="GET")
    url = forms.URLField(label="URL", max_length=1000, assume_scheme="https")
    headers = _lines("Headers", "One per line, Name: value. " + REFERENCES_HELP)
    body = forms.CharField(label="Body", required=False, widget=forms.Textarea(attrs={"rows": 3}))
    interval_s = forms.IntegerField(label="Every (seconds)", min_value=30, initial=60)
    timeout_s = forms.FloatField(label="Timeout (seconds)", min_value=0.1, initial=10)
    fail_threshold = forms.IntegerField(label="Down after failures", min_value=1, initial=2)
    recover_threshold = forms.IntegerField(label="Up after successes", min_value=1, initial=2)
    enabled = forms.BooleanField(required=False, initial=True)
    # Assertions
    status = _text("Status", initial="2xx", help_text="e.g. 2xx, or 200,204, or 200-299")
    latency_degraded_ms = forms.FloatField(label="Degraded above (ms)", required=False)
    latency_failed_ms = forms.FloatField(label="Failed above (ms)", required=False)
    body_contains = _text("Body contains", max_length=200)
    body_regex = _text("Body matches regex", max_length=200)
    header_name = _text("Header present", max_length=100)
    header_regex = _text("… and matches regex", max_length=200)
    tls_min_days = forms.FloatField(label="Certificate valid for at least (days)", required=False)
    https_only = forms.BooleanField(label="Refuse plain http", required=False)

    def __init__(self, *args: Any, instance: Probe | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = initial_from(instance)
        super().__init__(*args, **kwargs)
        # Rows enough for what the probe has (and one more), or what was posted.
        given = self.data or {}
        kept = instance.assertions.get("json_path", []) if instance is not None else []
        self.jp_rows = min(
            MAX_JSON_PATHS,
            max(
                JSON_PATH_ROWS,
                len(kept) + 1,
                sum(1 for k in given if k.endswith("_op") and k.startswith("jp")),
            ),
        )
        steps = instance.steps if instance is not None else []
        self.step_count = min(
            MAX_STEPS,
            max(
                STEP_ROWS,
                len(steps or []) + 1,
                sum(1 for k in given if k.startswith("step") and k.endswith("_path")),
            ),
        )
        for n in range(self.jp_rows):
            self.fields[f"jp{n}_path"] = _text(f"JSON path {n + 1}", max_length=200)
            self.fields[f"jp{n}_op"] = forms.ChoiceField(
                label="operator", choices=OPERATORS, required=False, initial="exists"
            )
            self.fields[f"jp{n}_value"] = _text("value", max_length=200)
        for n in range(self.step_count):
            self.fields[f"step{n}_name"] = _text(f"Step {n + 1} name", max_length=60)
            self.fields[f"step{n}_method"] = forms.ChoiceField(
                label="method", choices=_METHODS, required=False, initial="GET"
            )
            self.fields[f"step{n}_path"] = _text("path or URL", max_length=1000)
            self.fields[f"step{n}_headers"] = _lines("headers", "Name: value per line")
            self.fields[f"step{n}_body"] = forms.CharField(
                label="JSON body", required=False, widget=forms.Textarea(attrs={"rows": 2})
            )
            self.fields[f"step{n}_extract"] = _lines("extract", "var = $.json.path per line")
            self.fields[f"step{n}_status"] = _text("expected status", max_length=50)
        self.probe_form: ProbeForm | None = None

    # -- building the probe's JSON -----------------------------------------------------------

    REQUEST_FIELDS = (
        "integration", "name", "kind", "method", "url", "body", "interval_s", "timeout_s",
        "fail_threshold", "recover_threshold",
    )  # fmt: skip
    ASSERTION_FIELDS = (
        "status", "latency_degraded_ms", "latency_failed_ms", "body_contains", "body_regex",
        "header_name", "header_regex", "tls_min_days",
    )  # fmt: skip

    def request_fields(self) -> list:
        return [self[name] for name in self.REQUEST_FIELDS]

    def assertion_fields(self) -> list:
        return [self[name] for name in self.ASSERTION_FIELDS]

    def json_path_rows(self) -> list[tuple]:
        return [
            (self[f"jp{n}_path"], self[f"jp{n}_op"], self[f"jp{n}_value"])
            for n in range(self.jp_rows)
        ]

    def step_rows(self) -> list[list]:
        names = ("name", "method", "path", "headers", "body", "extract", "status")
        return [[self[f"step{n}_{k}"] for k in names] for n in range(self.step_count)]

    def _assertions(self, data: dict) -> dict[str, Any]:
        out: dict[str, Any] = {"status": (data.get("status") or "2xx").strip()}
        for name in ("latency_degraded_ms", "latency_failed_ms", "tls_min_days"):
            if data.get(name) is not None:
                out[name] = data[name]
        for name in ("body_contains", "body_regex"):
            if data.get(name):
                out[name] = data[name]
        if data.get("header_name"):
            out["header"] = {"name": data["header_name"]}
            if data.get("header_regex"):
                out["header"]["regex"] = data["header_regex"]
        elif data.get("header_regex"):
            self.add_error("header_name", "Name the header the regex is for.")
        if data.get("https_only"):
            out["https_only"] = True
        paths = []
        for n in range(self.jp_rows):
            path = (data.get(f"jp{n}_path") or "").strip()
            op = data.get(f"jp{n}_op") or "exists"
            value = (data.get(f"jp{n}_value") or "").strip()
            if not path:
                if value:
                    self.add_error(f"jp{n}_path", "Give the path the value is for, e.g. $.status.")
                continue
            if not path.startswith("$"):
                path = "$." + path.lstrip(".")
            if op in ("exists", "not exists"):
                paths.append(f"{path} {op}" if op != "exists" else path)
            elif not value:
                self.add_error(f"jp{n}_value", "This operator needs a value.")
            else:
                paths.append(f"{path} {op} {_literal(value)}")
        if paths:
            out["json_path"] = paths
        return out

    def _steps(self, data: dict) -> list[dict[str, Any]]:
        steps = []
        for n in range(self.step_count):
            path = (data.get(f"step{n}_path") or "").strip()
            name = (data.get(f"step{n}_name") or "").strip()
            if not path:
                if name:
                    self.add_error(f"step{n}_path", "Give the step's path or URL.")
                continue
            step: dict[str, Any] = {"method": data.get(f"step{n}_method") or "GET"}
            if name:
                step["name"] = name
            step["url" if path.lower().startswith(("http://", "https://")) else "path"] = path
            try:
                headers = parse_pairs(data.get(f"step{n}_headers") or "", ":", "Name: value")
                if headers:
                    step["headers"] = headers
                extract = parse_pairs(data.get(f"step{n}_extract") or "", "=", "var = $.path")
                if extract:
                    step["extract"] = extract
            except forms.ValidationError as exc:
                self.add_error(f"step{n}_headers", exc)
                continue
            body = (data.get(f"step{n}_body") or "").strip()
            if body:
                try:
                    step["body"] = json.loads(body)
                except ValueError as exc:
                    self.add_error(f"step{n}_body", f"Not JSON: {exc.msg} (line {exc.lineno}).")
                    continue
            status = (data.get(f"step{n}_status") or "").strip()
            if status:
                step["assertions"] = {"status": status}
            steps.append(step)
        return steps

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            headers = parse_pairs(data.get("headers") or "", ":", "Name: value")
        except forms.ValidationError as exc:
            self.add_error("headers", exc)
            headers = {}
        payload = {
            "integration": data["integration"].pk if data.get("integration") else "",
            "name": data.get("name") or "",
            "kind": data.get("kind") or ProbeKind.HTTP,
            "method": data.get("method") or "GET",
            "url": data.get("url") or "",
            "headers": json.dumps(headers),
            "body": data.get("body") or "",
            "steps": json.dumps(self._steps(data)),
            "interval_s": data.get("interval_s") or "",
            "timeout_s": data.get("timeout_s") or "",
            "assertions": json.dumps(self._assertions(data)),
            "fail_threshold": data.get("fail_threshold") or "",
            "recover_threshold": data.get("recover_threshold") or "",
        }
        if data.get("enabled"):
            payload["enabled"] = "on"
        if self.errors:
            return data
        # The probe's own form decides; its messages land on the editor's fields.
        instance = Probe.objects.get(pk=self.instance.pk) if self.instance is not None else Probe()
        form = ProbeForm(data=payload, instance=instance)
        if not form.is_valid():
            for name, messages in form.errors.items():
                target = _ERROR_FIELD.get(name, name)
                for message in messages:
                    self.add_error(target if target in self.fields else None, message)
        self.probe_form = form
        return data


# Where the probe form's errors show in the editor.
_ERROR_FIELD = {"assertions": "status", "steps": "step0_path", "__all__": None}


def initial_from(probe: Probe) -> dict[str, Any]:
    """The editor's fields for an existing probe."""
    a = dict(probe.assertions or {})
    initial: dict[str, Any] = {
        "integration": probe.integration_id,
        "name": probe.name,
        "kind": probe.kind,
        "method": probe.method,
        "url": probe.url,
        "headers": "\n".join(f"{k}: {v}" for k, v in (probe.headers or {}).items()),
        "body": probe.body,
        "interval_s": probe.interval_s,
        "timeout_s": probe.timeout_s,
        "fail_threshold": probe.fail_threshold,
        "recover_threshold": probe.recover_threshold,
        "enabled": probe.enabled,
        "status": a.get("status", "2xx"),
        "latency_degraded_ms": a.get("latency_degraded_ms"),
        "latency_failed_ms": a.get("latency_failed_ms"),
        "body_contains": a.get("body_contains") or "",
        "body_regex": a.get("body_regex") or "",
        "tls_min_days": a.get("tls_min_days"),
        "https_only": bool(a.get("https_only")),
    }
    header = a.get("header") or {}
    initial["header_name"] = header.get("name", "")
    initial["header_regex"] = header.get("regex") or ""
    from monitoring.probes.assertions import parse_json_path

    for n, expr in enumerate(a.get("json_path") or []):
        parsed = parse_json_path(expr)
        initial[f"jp{n}_path"] = parsed.path
        initial[f"jp{n}_op"] = parsed.op
        if parsed.op not in ("exists", "not exists"):
            operand = parsed.operand
            initial[f"jp{n}_value"] = operand if isinstance(operand, str) else json.dumps(operand)
    for n, step in enumerate(probe.steps or []):
        initial[f"step{n}_name"] = step.get("name", "")
        initial[f"step{n}_method"] = step.get("method", "GET")
        initial[f"step{n}_path"] = step.get("url") or step.get("path", "")
        initial[f"step{n}_headers"] = "\n".join(
            f"{k}: {v}" for k, v in (step.get("headers") or {}).items()
        )
        body = step.get("body")
        initial[f"step{n}_body"] = json.dumps(body, indent=2) if body not in (None, "") else ""
        initial[f"step{n}_extract"] = "\n".join(
            f"{k} = {v}" for k, v in (step.get("extract") or {}).items()
        )
        status = (step.get("assertions") or {}).get("status")
        initial[f"step{n}_status"] = status if status and status != "2xx" else ""
    return initial
