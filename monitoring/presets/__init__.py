"""Provider presets: what Upstream knows about each third-party API, as plain data (no Django).

One ``Preset`` record per provider in ``ALL`` (the catalog lives in ``catalog.py``); adding a
provider is adding one record there. ``monitoring.presets.setup`` turns a preset into an
integration, its probes and rules; the request-log writer reads a preset's error shapes and
diagnoses through the integration's policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ALL",
    "DEFAULT",
    "DIAGNOSES",
    "Diagnosis",
    "ErrorShape",
    "Preset",
    "choices",
    "get",
]


def dig(obj: object, path: str) -> object:
    """The value at a dotted path (``errors.0.details``); None where it is missing."""
    for key in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(key)
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return None
    return obj


def _text(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    return ""


@dataclass(frozen=True)
class ErrorShape:
    """One error body layout: where its code is, and the parts its message is made of.

    Message parts found are joined with ": " — Paubox's ``title`` and ``details`` both say
    something, and dropping ``details`` loses which field was wrong.
    """

    code: tuple[str, ...] = ()  # dotted paths, the first present wins
    message: tuple[str, ...] = ()  # dotted paths, every present one is kept
    # (dotted path, value) pairs the payload must hold, compared by type and value: Slack's
    # ``ok`` must be ``False`` (not 0, not missing) before its 200 counts as an error.
    where: tuple[tuple[str, object], ...] = ()

    def read(self, payload: object) -> tuple[str, str] | None:
        """(code, message) if this shape fits the payload, else None."""
        for path, expected in self.where:
            found = dig(payload, path)
            if found.__class__ is not expected.__class__ or found != expected:
                return None
        code = next((t for t in (_text(dig(payload, p)) for p in self.code) if t), "")
        parts: list[str] = []
        for path in self.message:
            text = _text(dig(payload, path))
            if text and text not in parts:
                parts.append(text)
        if not code and not parts:
            return None
        return code, ": ".join(parts)


@dataclass(frozen=True)
class Diagnosis:
    """A failure the provider's answer lets us name, with its own error code and advice."""

    code: str  # stored as the row's error_code; the verdict's key
    label: str
    advice: str
    statuses: tuple[int, ...] = ()  # empty: any status
    pattern: str = ""  # regex on the parsed message (case-insensitive); "" = by status alone
    verdict: bool = True  # whether it can name the overview's verdict (advisories do not)

    def matches(self, status: int | None, message: str) -> bool:
        if not self.statuses and not self.pattern:
            return False  # named by other means (request_flags, the token's age)
        if self.statuses and status not in self.statuses:
            return False
        return not self.pattern or re.search(self.pattern, message, re.IGNORECASE) is not None


TOKEN_EXPIRED = Diagnosis(
    "token_expired",
    "Token expired",
    "The provider rejects an expired token: sign in again (fetch a new token) before calling.",
    statuses=(401, 403),
    pattern=r"\b(?:token|jwt|session)\b[^.]{0,40}\bexpired\b|\bexpired\b[^.]{0,40}\btoken\b",
)
CREDENTIALS_REJECTED = Diagnosis(
    "credentials_rejected",
    "Credentials rejected",
    "The provider rejects our credentials although the token is fresh: check the key or "
    "password in use.",
    statuses=(401,),
)
API_DISABLED = Diagnosis(
    "api_disabled",
    "API access is disabled",
    "The provider answers that its API is switched off: enable API access in its settings "
    "(OpenPanel: OpenAdmin > Settings).",
    pattern=r"API access is disabled",
)
BATCH_TOO_LARGE = Diagnosis(
    "batch_too_large",
    "Batch over the advised size",
    "A bulk request carried more messages than the provider advises per batch: split it.",
    verdict=False,
)
# Every diagnosis by code: the verdict and the request log read labels and advice here.
DIAGNOSES: dict[str, Diagnosis] = {
    d.code: d for d in (TOKEN_EXPIRED, CREDENTIALS_REJECTED, API_DISABLED, BATCH_TOO_LARGE)
}


def _is_bulk_path(path: str, words: Sequence[str]) -> bool:
    last = path.partition("?")[0].rstrip("/").rpartition("/")[2].lower()
    return any(word in last for word in words)


@dataclass(frozen=True)
class Preset:
    """One provider's knowledge. Probes are plain dicts in the probe runner's own step format.

    A probe: ``{"name", "method"?, "path", "assertions"?, "headers"?}`` (a single request) or
    ``{"name", "steps": [step, ...]}`` where a step is the runner's (``name``, ``method``,
    ``path``, ``headers``, ``body``, ``extract``, ``assertions``, ``lifetime_s``). Paths are
    relative to the integration's base URL; ``${UPSTREAM_SECRET_…}`` names a secret the probe
    runner reads from its environment, ``{{var}}`` a value an earlier step extracted.
    """

    name: str
    title: str
    base_url: str  # pattern; ``<host>`` / ``<username>`` mark the parts a user fills in
    hosts: tuple[str, ...] = ()  # host patterns the provider's API answers on
    auth_header: str = "Authorization"
    auth_schemes: tuple[str, ...] = ("Bearer",)  # token formats sent in auth_header
    token_formats: tuple[str, ...] = ()  # what a credential looks like (prefixes), for docs
    redact_names: tuple[str, ...] = ()  # extra header/query/body names to redact
    error_shapes: tuple[ErrorShape, ...] = ()  # tried in order before the generic heuristics
    diagnoses: tuple[Diagnosis, ...] = ()  # tried in order on a failure's parsed message
    rate_limit_headers: tuple[str, ...] = ()  # empty = none published (no headroom rule)
    version_header: str = ""
    api_version: str = ""  # the version a new integration expects, "" = not versioned by header
    templates: tuple[str, ...] = ()  # documented endpoints, relative to the base URL's path
    pagination: str = ""
    probes: tuple[dict[str, Any], ...] = ()
    status_page: str = ""
    statuspage_json: bool = False  # the page serves Atlassian Statuspage's /api/v2/ JSON
    webhook_scheme: str = ""  # a scheme of monitoring.webhooks.schemes, "" = none verified
    webhook_note: str = ""
    token_lifetime_s: int | None = None  # past this age a 401 means "token expired"
    # The error bodies this API answers with a 2xx status (OpenPanel's ``{"error": …}``,
    # Slack's ``{"ok": false, …}``); empty = it never does. Each must be specific enough
    # that none of the provider's success bodies fits it.
    success_errors: tuple[ErrorShape, ...] = ()
    limits: dict[str, Any] = field(default_factory=dict)
    rules: tuple[str, ...] = ()  # RuleKind values that make sense for this provider
    docs: str = ""

    def placeholders(self) -> list[str]:
        """The ``<part>`` names of the base URL a user must fill in."""
        return re.findall(r"<([a-z_]+)>", self.base_url)

    def read_error(self, payload: object) -> tuple[str, str] | None:
        """(code, message) from the first of this provider's error shapes that fits."""
        for shape in self.error_shapes:
            found = shape.read(payload)
            if found is not None:
                return found
        return None

    @property
    def errors_on_success(self) -> bool:
        """Whether this API answers some errors with a 2xx status (so 2xx bodies are read)."""
        return bool(self.success_errors)

    def read_success_error(self, payload: object) -> tuple[str, str] | None:
        """(code, message) when a 2xx body is one of this API's errors, else None."""
        for shape in self.success_errors:
            found = shape.read(payload)
            if found is not None:
                return found
        return None

    def diagnose(
        self, status: int | None, code: str, message: str, token_age_s: float | None = None
    ) -> str:
        """The error code to store: a diagnosis's own code where one applies, else ``code``.

        A 401 with a token older than the provider's token lifetime is an expired token; with
        a token known to be fresh it is rejected credentials (OpenPanel answers the same
        "Missing or invalid token" to both, so only the age tells them apart).
        """
        for diagnosis in self.diagnoses:
            if diagnosis.matches(status, message):
                return diagnosis.code
        if status == 401 and self.token_lifetime_s and token_age_s is not None:
            if token_age_s >= self.token_lifetime_s:
                return TOKEN_EXPIRED.code
            return CREDENTIALS_REJECTED.code
        return code

    def request_flags(self, method: str, path: str, batch_size: int | None) -> list[str]:
        """Diagnosis codes a request earns before any answer: a bulk batch over the
        provider's advice. ``batch_size`` is the caller's count of the batch's items
        (``upstream_client.bodies.batch_items``); the body itself never reaches the writer."""
        batch_max = self.limits.get("bulk_batch_max")
        if (
            batch_max
            and batch_size is not None
            and batch_size > batch_max
            and method.upper() == "POST"
            and _is_bulk_path(path, self.limits.get("bulk_paths", ("bulk",)))
        ):
            return [BATCH_TOO_LARGE.code]
        return []

    def template_prefix(self, base_url: str) -> str:
        """The path templates' prefix for an integration at ``base_url``.

        The base URL's path, with the segments that stand where the pattern has a ``<part>``
        templated (``/v1/acme`` for ``/v1/<username>`` → ``/v1/{username}``); segments in
        front of the pattern's (a sandbox's ``/paubox``) are kept.
        """
        pattern = [s for s in urlsplit(self.base_url.replace("<host>", "h")).path.split("/") if s]
        given = [s for s in urlsplit(base_url).path.split("/") if s]
        out = list(given)
        # Where the pattern sits in the given path: the rightmost place its literal segments
        # match (a newer base URL may stop short of the pattern's ``<part>``).
        for offset in range(len(given) - 1, -1, -1):
            pairs = list(zip(pattern, given[offset:], strict=False))
            if not pairs or pairs[0][0].startswith("<"):
                continue
            if all(p.startswith("<") or p == g for p, g in pairs):
                for index, (p, _) in enumerate(pairs):
                    part = re.fullmatch(r"<([a-z_]+)>", p)
                    if part:
                        out[offset + index] = "{" + part[1] + "}"
                break
        return "/" + "/".join(out) if out else ""

    def path_templates(self, base_url: str) -> list[str]:
        """The documented templates as full request paths for an integration at ``base_url``."""
        prefix = self.template_prefix(base_url)
        return [prefix + "/" + t.lstrip("/") for t in self.templates]


def _build() -> dict[str, Preset]:
    from monitoring.presets.catalog import CATALOG

    return {preset.name: preset for preset in CATALOG}


ALL: dict[str, Preset] = _build()
DEFAULT = "generic"


def get(name: str) -> Preset:
    """The preset called ``name``; KeyError names the known ones."""
    try:
        return ALL[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(ALL))}") from None


def choices() -> list[tuple[str, str]]:
    """(name, title) pairs for form fields, the default first."""
    ordered = sorted(ALL.values(), key=lambda p: (p.name != DEFAULT, p.title.lower()))
    return [(p.name, p.title) for p in ordered]


def problems(rule_kinds: Sequence[str], webhook_schemes: Sequence[str] | None) -> list[str]:
    """What in the registry names a rule kind or webhook scheme Upstream does not have."""
    found = []
    for preset in ALL.values():
        for kind in preset.rules:
            if kind not in rule_kinds:
                found.append(f"preset {preset.name!r} names rule kind {kind!r}")
        if "rate_limit" in preset.rules and not preset.rate_limit_headers:
            found.append(f"preset {preset.name!r} offers a headroom rule without headers")
        scheme = preset.webhook_scheme
        if scheme and webhook_schemes is not None and scheme not in webhook_schemes:
            found.append(f"preset {preset.name!r} names webhook scheme {scheme!r}")
        for probe in preset.probes:
            if not probe.get("name") or not (probe.get("path") is not None or probe.get("steps")):
                found.append(f"preset {preset.name!r} has a probe without a name or request")
    return found
