"""The probe form: validates a probe's configuration for both the admin and the dashboard."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings

from monitoring import envref
from monitoring.formfields import BoundedJSONField
from monitoring.models import Probe, ProbeKind
from monitoring.probes import netguard
from monitoring.probes.assertions import Assertions, InvalidAssertion, parse_json_path
from monitoring.probes.run import (
    _VAR,
    ALLOWED_METHODS,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    RESERVED_HEADERS,
)
from monitoring.redaction import is_secret_name

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_STEP_KEYS = frozenset(
    {"name", "method", "url", "path", "headers", "body", "extract", "assertions", "lifetime_s"}
)
MAX_LIFETIME_S = 24 * 3600


def _clean_headers(headers: Any, *, where: str = "") -> dict[str, str]:
    if headers in (None, ""):
        return {}
    if not isinstance(headers, dict):
        raise forms.ValidationError(
            f'{where}Give a JSON object of names and values: {{"Name": "v"}}.'
        )
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise forms.ValidationError(f"{where}{name!r} is not a valid header name.")
        if name.lower() in RESERVED_HEADERS:
            raise forms.ValidationError(f"{where}{name} is set by the probe runner itself.")
        if not isinstance(value, str):
            raise forms.ValidationError(f"{where}{name}: the value must be text.")
        if "\r" in value or "\n" in value:
            raise forms.ValidationError(f"{where}{name}: the value must be one line.")
        try:
            envref.check(value)
        except envref.ForbiddenReference as exc:
            raise forms.ValidationError(f"{where}{name}: {exc}") from None
    return headers


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def clean_steps(steps: Any) -> list[dict[str, Any]]:
    """A probe's steps, checked: known keys, methods, headers, bodies, extractions, and every
    ``{{var}}`` extracted by an earlier step. ValidationError names the step."""
    if steps in (None, "", []):
        return []
    if not isinstance(steps, list):
        raise forms.ValidationError("Give a JSON list of steps: [{...}, {...}].")
    if len(steps) > MAX_STEPS:
        raise forms.ValidationError(f"At most {MAX_STEPS} steps.")
    known: set[str] = set()
    cleaned = []
    for index, step in enumerate(steps):
        where = f"Step {index + 1}: "
        if not isinstance(step, dict):
            raise forms.ValidationError(f"{where}give a JSON object.")
        unknown = sorted(set(step) - _STEP_KEYS)
        if unknown:
            raise forms.ValidationError(
                f"{where}unknown keys {', '.join(unknown)} (use {', '.join(sorted(_STEP_KEYS))})."
            )
        name = step.get("name", "")
        if not isinstance(name, str) or len(name) > 60:
            raise forms.ValidationError(f"{where}the name must be text of at most 60 characters.")
        where = f"Step {index + 1} ({name}): " if name else where
        method = str(step.get("method") or "GET").upper()
        if method not in ALLOWED_METHODS:
            raise forms.ValidationError(f"{where}use one of {', '.join(ALLOWED_METHODS)}.")
        if "url" in step and "path" in step:
            raise forms.ValidationError(f"{where}give a url or a path, not both.")
        target = step.get("url", step.get("path", ""))
        if not isinstance(target, str) or len(target) > 1000:
            raise forms.ValidationError(f"{where}the url or path must be text (≤1000 characters).")
        if envref.names_in(target):
            raise forms.ValidationError(
                f"{where}no ${{ENV}} in URLs: secrets go in headers or body."
            )
        if target.lower().startswith(("http://", "https://")) and not _VAR.search(target):
            try:
                netguard.check_url(target, allow_hosts=settings.UPSTREAM["PROBE_ALLOW_HOSTS"])
            except (netguard.BlockedDestination, netguard.UnresolvableHost) as exc:
                raise forms.ValidationError(
                    f"{where}probes may not call this URL: {exc}."
                ) from None
        elif target and not target.startswith("/"):
            raise forms.ValidationError(f"{where}a path starts with / (or give a full URL).")
        headers = _clean_headers(step.get("headers"), where=where)
        for header, value in headers.items():
            if is_secret_name(header) and not (envref.names_in(value) or _VAR.search(value)):
                raise forms.ValidationError(
                    f"{where}{header}: put secrets in an environment variable (${{VAR_NAME}}) "
                    "or take them from an earlier step ({{name}})."
                )
        body = step.get("body", "")
        for text in _strings(body):
            try:
                envref.check(text)
            except envref.ForbiddenReference as exc:
                raise forms.ValidationError(f"{where}body: {exc}") from None
        extract = step.get("extract") or {}
        if not isinstance(extract, dict):
            raise forms.ValidationError(f'{where}extract is an object: {{"var": "$.path"}}.')
        for var, expr in extract.items():
            if not _VAR_NAME.fullmatch(var):
                raise forms.ValidationError(f"{where}{var!r} is not a variable name.")
            try:
                parse_json_path(expr)
            except ValueError as exc:
                raise forms.ValidationError(f"{where}extract {var}: {exc}") from None
        used = {
            m for text in [target, *headers.values(), *_strings(body)] for m in _VAR.findall(text)
        }
        undefined = sorted(used - known)
        if undefined:
            raise forms.ValidationError(
                f"{where}{', '.join('{{' + u + '}}' for u in undefined)} "
                "is not extracted by an earlier step."
            )
        try:
            assertions = Assertions.from_dict(step.get("assertions") or None).to_dict()
        except InvalidAssertion as exc:
            raise forms.ValidationError(f"{where}{exc}") from None
        lifetime = step.get("lifetime_s")
        if lifetime is not None and (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not 0 < lifetime <= MAX_LIFETIME_S
        ):
            raise forms.ValidationError(f"{where}lifetime_s is seconds, up to {MAX_LIFETIME_S}.")
        known.update(extract)
        out = {"method": method, **{k: v for k, v in step.items() if k != "method"}}
        out["assertions"] = assertions
        cleaned.append(out)
    return cleaned


class ProbeForm(forms.ModelForm):
    """A probe's configuration: assertions parsed, URL checked by the SSRF guard, no secrets.

    Header references must pass :func:`monitoring.envref.check`; JSON is bounded in size and
    depth.
    """

    class Meta:
        model = Probe
        fields = [
            "integration", "name", "kind", "method", "url", "headers", "body", "steps",
            "interval_s", "timeout_s", "assertions", "fail_threshold", "recover_threshold",
            "enabled",
        ]  # fmt: skip
        field_classes = {
            "headers": BoundedJSONField,
            "assertions": BoundedJSONField,
            "steps": BoundedJSONField,
        }
        help_texts = {
            "headers": 'A JSON object, e.g. {"Authorization": "Bearer '
            '${UPSTREAM_SECRET_PAUBOX_API_KEY}"}. Secrets go in environment variables of the '
            "worker, named UPSTREAM_SECRET_… or listed in UPSTREAM_SECRET_ENV_ALLOW; only the "
            "${NAME} reference is stored.",
            "assertions": 'A JSON object, e.g. {"status": "2xx", "latency_failed_ms": 2000, '
            '"json_path": ["$.status == \\"ok\\""], "tls_min_days": 14}.',
            "steps": "Optional, a JSON list run in order instead of the request above, e.g. "
            '[{"name": "sign in", "method": "POST", "path": "/api/", "body": {"username": '
            '"${UPSTREAM_SECRET_OP_USER}", "password": "${UPSTREAM_SECRET_OP_PASSWORD}"}, '
            '"extract": {"access_token": "$.access_token"}}, {"name": "whoami", "path": '
            '"/api/whoami", "headers": {"Authorization": "Bearer {{access_token}}"}}]. '
            "Extracted values are kept in the worker's memory only and reused until a JWT's "
            "exp (or lifetime_s) runs out.",
            "url": "For a status-page probe, the page's address (e.g. https://status.example.com).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Older clients of this form (and its tests) post no kind: a plain HTTP probe.
        self.fields["kind"].required = False

    def clean_method(self) -> str:
        method = (self.cleaned_data.get("method") or "").strip().upper()
        if method not in ALLOWED_METHODS:
            raise forms.ValidationError(f"Use one of {', '.join(ALLOWED_METHODS)}.")
        return method

    def clean_url(self) -> str:
        url = self.cleaned_data.get("url", "")
        try:
            netguard.check_url(url, allow_hosts=settings.UPSTREAM["PROBE_ALLOW_HOSTS"])
        except netguard.BlockedDestination as exc:
            raise forms.ValidationError(
                f"Probes may not call this address: {exc}. Loopback and private hosts need "
                "an entry in UPSTREAM_PROBE_ALLOW_HOSTS."
            ) from None
        except netguard.UnresolvableHost as exc:
            raise forms.ValidationError(f"{exc}; check the host name.") from None
        return url

    def clean_timeout_s(self) -> float:
        timeout = self.cleaned_data.get("timeout_s")
        if timeout is not None and timeout > MAX_TIMEOUT_S:
            raise forms.ValidationError(f"At most {MAX_TIMEOUT_S:g} seconds.")
        return timeout

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or ProbeKind.HTTP

    def clean_headers(self) -> dict[str, str]:
        return _clean_headers(self.cleaned_data.get("headers"))

    def clean_steps(self) -> list[dict[str, Any]]:
        return clean_steps(self.cleaned_data.get("steps"))

    def clean_assertions(self) -> dict[str, Any]:
        data = self.cleaned_data.get("assertions")
        try:
            return Assertions.from_dict(data or None).to_dict()
        except InvalidAssertion as exc:
            raise forms.ValidationError(f"{exc}") from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        url, assertions = cleaned.get("url"), cleaned.get("assertions") or {}
        if url and assertions.get("https_only") and not url.lower().startswith("https://"):
            self.add_error("url", "The assertions require https; this URL is plain http.")
        if cleaned.get("kind") == ProbeKind.STATUSPAGE and cleaned.get("steps"):
            self.add_error("steps", "A status-page probe reads the page itself: no steps.")
        interval, timeout = cleaned.get("interval_s"), cleaned.get("timeout_s")
        if interval and timeout and timeout > interval:
            self.add_error("timeout_s", "The timeout must not be longer than the interval.")
        return cleaned
