"""Forms that validate configuration for both the admin and the dashboard (probes)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings

from monitoring import netguard
from monitoring.assertions import Assertions, InvalidAssertion
from monitoring.models import Probe
from monitoring.probes import ALLOWED_METHODS, MAX_TIMEOUT_S, RESERVED_HEADERS

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ProbeForm(forms.ModelForm):
    """A probe's configuration: assertions parsed, URL checked by the SSRF guard, no secrets."""

    class Meta:
        model = Probe
        fields = [
            "integration", "name", "method", "url", "headers", "body", "interval_s",
            "timeout_s", "assertions", "fail_threshold", "recover_threshold", "enabled",
        ]  # fmt: skip
        help_texts = {
            "headers": 'A JSON object, e.g. {"Authorization": "Bearer ${PAUBOX_API_KEY}"}. '
            "Secrets go in environment variables of the worker; only the ${NAME} reference "
            "is stored.",
            "assertions": 'A JSON object, e.g. {"status": "2xx", "latency_failed_ms": 2000, '
            '"json_path": ["$.status == \\"ok\\""], "tls_min_days": 14}.',
        }

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

    def clean_headers(self) -> dict[str, str]:
        headers = self.cleaned_data.get("headers")
        if headers in (None, ""):
            return {}
        if not isinstance(headers, dict):
            raise forms.ValidationError('Give a JSON object of names and values: {"Name": "v"}.')
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise forms.ValidationError(f"{name!r} is not a valid header name.")
            if name.lower() in RESERVED_HEADERS:
                raise forms.ValidationError(f"{name} is set by the probe runner itself.")
            if not isinstance(value, str):
                raise forms.ValidationError(f"{name}: the value must be text.")
            if "\r" in value or "\n" in value:
                raise forms.ValidationError(f"{name}: the value must be one line.")
        return headers

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
        interval, timeout = cleaned.get("interval_s"), cleaned.get("timeout_s")
        if interval and timeout and timeout > interval:
            self.add_error("timeout_s", "The timeout must not be longer than the interval.")
        return cleaned
